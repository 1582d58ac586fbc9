"""Versioned model configurations per pair in PostgreSQL (``sql/0010_model_configs.sql``).

``mur tune`` stores the configuration its search chose (:func:`save_config`) with its evidence; at most one
version per pair is active, and scheduled training applies it (:mod:`mur.training.tuned`). Why PostgreSQL
and not MLflow: see ``docs/tuning.md`` (one active row per pair enforced by the database, an atomic switch,
and no entry in the model registry that the registry watcher and gate would have to skip).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from mur.db.pool import Database, advisory_xact_lock, fetch_one
from mur.errors import DataValidationError
from mur.pairs import normalize_pair

LOCK_SPACE = 0x6D63  # "mc": the model_configs key space of the two-key advisory locks


@dataclass(frozen=True)
class ModelConfigRecord:
    """One stored version: ``config`` holds Settings field names and values (``{"arch": "gru", ...}``)."""

    pair: str
    version: int
    config: dict[str, Any]
    active: bool
    search_id: str | None = None
    mlflow_run_id: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None

    @property
    def label(self) -> str:
        """``btc_usdt v3``: how logs and params name it."""
        return f"{self.pair} v{self.version}"


def save_config(
    db: Database,
    pair: str,
    config: dict[str, Any],
    *,
    activate: bool,
    search_id: str | None = None,
    mlflow_run_id: str | None = None,
    evidence: dict[str, Any] | None = None,
) -> ModelConfigRecord:
    """Store ``config`` as the pair's next version (active, replacing the active one, when ``activate``)."""
    pair = normalize_pair(pair)
    if not config:
        raise DataValidationError("a model configuration needs at least one value")
    with db.cursor(class_row(ModelConfigRecord)) as cur:
        advisory_xact_lock(cur, LOCK_SPACE, pair)  # one change of the pair's configurations at a time
        if activate:
            cur.execute(
                "UPDATE model_configs SET active = false WHERE pair = %(pair)s AND active", {"pair": pair}
            )
        cur.execute(
            """INSERT INTO model_configs (pair, version, config, active, search_id, mlflow_run_id, evidence)
            SELECT %(pair)s, COALESCE(MAX(version), 0) + 1, %(config)s, %(active)s, %(search_id)s,
                   %(run_id)s, %(evidence)s
            FROM model_configs WHERE pair = %(pair)s
            RETURNING pair, version, config, active, search_id, mlflow_run_id, evidence, created_at""",
            {
                "pair": pair,
                "config": Jsonb(config),
                "active": activate,
                "search_id": search_id,
                "run_id": mlflow_run_id,
                "evidence": Jsonb(evidence or {}),
            },
        )
        return fetch_one(cur)


def active_config(db: Database, pair: str) -> ModelConfigRecord | None:
    """The pair's active configuration, or None (training uses the settings)."""
    return next((record for record in config_history(db, pair) if record.active), None)


def config_history(db: Database, pair: str) -> list[ModelConfigRecord]:
    """Every stored version of the pair, newest first."""
    with db.cursor(class_row(ModelConfigRecord)) as cur:
        return cur.execute(
            "SELECT pair, version, config, active, search_id, mlflow_run_id, evidence, created_at "
            "FROM model_configs WHERE pair = %(pair)s ORDER BY version DESC",
            {"pair": normalize_pair(pair)},
        ).fetchall()


def set_active(db: Database, pair: str, version: int | None) -> ModelConfigRecord | None:
    """Make ``version`` the pair's active configuration (a rollback), or none (``None``: the settings again).

    An unknown version raises :class:`~mur.errors.DataValidationError` and changes nothing."""
    pair = normalize_pair(pair)
    with db.cursor(class_row(ModelConfigRecord)) as cur:
        advisory_xact_lock(cur, LOCK_SPACE, pair)  # one change of the pair's configurations at a time
        cur.execute(
            "UPDATE model_configs SET active = false WHERE pair = %(pair)s AND active", {"pair": pair}
        )
        if version is None:
            return None
        record = cur.execute(
            "UPDATE model_configs SET active = true WHERE pair = %(pair)s AND version = %(version)s "
            "RETURNING pair, version, config, active, search_id, mlflow_run_id, evidence, created_at",
            {"pair": pair, "version": version},
        ).fetchone()
        if record is None:
            raise DataValidationError(f"{pair} has no model configuration version {version}")
        return record
