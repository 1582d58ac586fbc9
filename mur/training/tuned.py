"""The pair's active tuned model configuration (``mur tune``, :mod:`mur.db.model_configs`) applied to the
settings a training runs with: scheduled training, ``mur train --register`` / ``--tuned``, and the DAG's
look-up of the key a job will compute (:func:`mur.orchestration.tasks.expected_idempotency_key`).

Explicit overrides (the trigger form, CLI options) still win over it; without an active version the
settings train as before. A database that cannot be read is reported and training goes on with the
settings (the model then carries no ``model_config_version``): a PostgreSQL outage must not stop hourly
training, and the promotion gate judges whatever was trained.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mur.errors import DatabaseError, DataValidationError
from mur.settings import Settings

log = logging.getLogger(__name__)
PARAM = "model_config_version"
"""The training param (hashed into the idempotency key, logged on the MLflow run) naming the version."""


def tuned_settings(
    settings: Settings, pair: str, *, emit: Callable[[str], None] | None = None
) -> tuple[Settings, dict[str, Any]]:
    """``settings`` with the pair's active configuration, and the params that name it (``{}`` for none)."""
    from mur.db import Database
    from mur.db.model_configs import active_config
    from mur.training.tuning import apply_config

    say = emit or log.info
    try:
        with Database(settings, maxconn=1) as db:
            record = active_config(db, pair)  # None: none stored
    except DatabaseError as exc:  # the database cannot tell
        say(f"[mur] {pair}: tuned configuration not read ({exc}); training with the settings' configuration")
        return settings, {}
    if record is None:
        return settings, {}
    try:
        tuned = apply_config(settings, record.config)
    except DataValidationError as exc:  # stored under other settings (e.g. a longer seq_len than context)
        say(
            f"[mur] {pair}: tuned configuration v{record.version} not applicable ({exc}); using the settings'"
        )
        return settings, {}
    say(f"[mur] {pair}: tuned configuration v{record.version}: {record.config}")
    return tuned, {PARAM: record.version}
