"""Moving a pair's ``champion`` alias, remembered: every move (the gate's, a live promotion, a rollback) sets the
MLflow alias and records who moved it, when (market and wall time), why and on which scores in PostgreSQL
(:mod:`mur.db.alias_history`). Serve follows the alias by itself (its RegistryWatcher polls it every
``MUR_REGISTRY_POLL_S``), so a rollback is served within one refresh. docs/promotion.md, "History and rollback".
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from mur.clock import market_clock
from mur.db.alias_history import MAX_MOVES, AliasMove, list_moves, record_move
from mur.db.pool import Database
from mur.errors import ForbiddenError, InvalidInputError, NotFoundError, RegistryUnavailableError, first_line
from mur.pairs import normalize_pair
from mur.registry.names import BACKFILL, CHAMPION, NOT_FOUND_CODES, model_name, shadow_alias, shadow_versions
from mur.settings import Settings

log = logging.getLogger(__name__)

SCORE_TAGS = ("skill", "mae", "interval_skill", "coverage", "dm_p_worse")
"""The gate's version tags a move records as its scores (with ``gate_rule`` and ``gate_scores``)."""


def version_scores(tags: dict[str, str]) -> dict[str, Any]:
    """A version's gate scores from its tags (numbers as numbers; missing ones left out)."""
    scores: dict[str, Any] = {k: float(tags[k]) for k in SCORE_TAGS if tags.get(k)}
    if tags.get("gate_scores"):  # per horizon (the range-first gate)
        scores["horizons"] = json.loads(tags["gate_scores"])
    return scores | ({"gate_rule": tags["gate_rule"]} if tags.get("gate_rule") else {})


def _version(client: Any, name: str, *, alias: str | None = None, number: int | None = None) -> Any | None:
    """A registered version by alias or number; None when there is none (a registry that does not answer is
    :class:`RegistryUnavailableError`, never "none")."""
    from mlflow.exceptions import MlflowException

    try:
        if alias is not None:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, str(number))
    except MlflowException as exc:
        if getattr(exc, "error_code", "") in NOT_FOUND_CODES:
            return None
        raise RegistryUnavailableError(f"model registry error: {first_line(exc, 300)}") from exc


def move_champion(
    settings: Settings,
    client: Any,
    *,
    pair: str,
    version: int,
    action: str,
    actor: str,
    reason: str,
    scores: dict[str, Any] | None = None,
    market_time: datetime | None = None,
) -> AliasMove:
    """Point ``pair``'s champion alias at ``version`` and record the move (``market_time``: default market
    now, :mod:`mur.clock`); the record's ``previous_version`` is the champion before (None: none)."""
    from mlflow.exceptions import MlflowException

    pair = normalize_pair(pair)
    name = model_name(pair, settings.registry.registry_prefix)
    current = _version(client, name, alias=CHAMPION)
    try:
        client.set_registered_model_alias(name, CHAMPION, str(int(version)))
    except MlflowException as exc:  # a reader's account (the dashboard's): 403
        if exc.error_code != "PERMISSION_DENIED":
            raise
        raise ForbiddenError(
            f"MLflow account {settings.registry.mlflow_username} may not move {name}'s champion: the trainer's "
            f"may (mur models rollback {pair} --reason …; docs/services.md, MLflow accounts)"
        ) from None
    with Database(settings, maxconn=1) as db:
        return record_move(
            db,
            pair=pair,
            version=int(version),
            previous_version=None if current is None else int(current.version),
            action=action,
            actor=actor,
            reason=reason,
            scores=scores or {},
            market_time=market_time or market_clock(settings).now(),
        )


def keep_shadows(
    client: Any, name: str, *, keep: int, add: int | None = None, drop: int | None = None
) -> list[int]:
    """Mark version ``add`` as a shadow and unmark ``drop``, then keep the newest ``keep`` shadows of model
    ``name`` (the alias :func:`~mur.registry.names.shadow_alias`); returns them, newest first."""
    if add is not None and keep > 0:
        client.set_registered_model_alias(name, shadow_alias(add), str(add))
    shadows = shadow_versions(getattr(client.get_registered_model(name), "aliases", None) or {})
    for version in shadows[keep:] + ([drop] if drop in shadows[:keep] else []):
        client.delete_registered_model_alias(name, shadow_alias(version))
    return [v for v in shadows[:keep] if v != drop]


def record_gate_move(
    settings: Settings,
    *,
    pair: str,
    version: int,
    previous_version: int | None,
    reason: str,
    scores: dict[str, Any],
) -> None:
    """Record the gate's promotion after it set the alias. Never raises: a training whose history row could not
    be written (PostgreSQL down) still registered and promoted its version; the miss is logged."""
    if previous_version is not None and int(previous_version) == int(version):
        return
    try:
        with Database(settings, maxconn=1, pool_timeout_s=10.0) as db:
            record_move(
                db,
                pair=pair,
                version=version,
                previous_version=previous_version,
                action="gate",
                actor="gate",
                reason=reason,
                scores=scores,
                market_time=market_clock(settings).now(),
            )
    except Exception as exc:  # the history is a record of the move, never a condition of it
        log.warning("%s v%s: the gate's alias move was not recorded: %s", pair, version, first_line(exc))


def previous_champion(
    settings: Settings, client: Any, moves: list[AliasMove], pair: str, current: int
) -> int:
    """The version that was champion before ``current``: from the alias history (``moves``, newest first),
    else (a move from before the history) the newest older version the gate promoted (its tags), never a
    backfill."""
    moved = next((m for m in moves if m.version == current), None)
    if moved is not None and moved.previous_version is not None:
        return moved.previous_version
    name = model_name(pair, settings.registry.registry_prefix)
    older = [
        int(v.version)
        for v in client.search_model_versions(f"name = '{name}'")
        if int(v.version) < current
        and (v.tags or {}).get("gate_alias") == CHAMPION
        and (v.tags or {}).get("kind") != BACKFILL
    ]
    if not older:
        raise NotFoundError(f"{pair} has no champion before v{current} to roll back to; name one with --to")
    return max(older)


def rollback(
    settings: Settings, pair: str, *, to: int | None = None, actor: str, reason: str, client: Any = None
) -> AliasMove:
    """Move ``pair``'s champion back to ``to`` (default: :func:`previous_champion`), recorded as a rollback.

    Refused in one line: no reason, no champion, an unknown version, the current champion, a backfill."""
    from mur.registry.client import configure

    pair = normalize_pair(pair)
    if not reason.strip():
        raise InvalidInputError("a rollback needs a reason: say why it goes back")
    client = client or configure(settings, fail_fast_s=10.0)
    name = model_name(pair, settings.registry.registry_prefix)
    current = _version(client, name, alias=CHAMPION)
    if current is None:
        raise NotFoundError(f"{pair} has no champion: nothing to roll back")
    with Database(settings, maxconn=1) as db:  # read first: PostgreSQL down refuses before the alias moves
        moves = list_moves(db, pair, limit=MAX_MOVES)
    target = to if to is not None else previous_champion(settings, client, moves, pair, int(current.version))
    found = _version(client, name, number=target)
    if found is None:
        raise NotFoundError(f"{pair} has no registered version {target}")
    if int(found.version) == int(current.version):
        raise InvalidInputError(f"{pair} v{target} is the champion already")
    tags = dict(found.tags or {})
    if tags.get("kind") == BACKFILL:
        raise InvalidInputError(
            f"{pair} v{target} is a backfill (trained on data older than a champion's): it never serves"
        )
    move = move_champion(
        settings,
        client,
        pair=pair,
        version=target,
        action="rollback",
        actor=actor,
        reason=reason.strip(),
        scores=version_scores(tags),
    )
    for leaving in (int(current.version), target):  # a rolled-back version is not re-promoted on live scores
        keep_shadows(client, name, keep=settings.registry.shadow_max_per_pair, drop=leaving)
    return move
