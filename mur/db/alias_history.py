"""The history of every champion alias move (``sql/0011_alias_history.sql``): the gate's promotions, live
promotions, rollbacks. Written by :mod:`mur.registry.aliases` when it moves the MLflow alias; read by
``mur models history``, ``GET /v1/models/{pair}/history`` and the admin page."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from mur.contracts import MAX_MOVES, json_ready
from mur.db.pool import Database, columns, fetch_one
from mur.errors import InvalidInputError
from mur.pairs import normalize_pair

ACTIONS = ("gate", "live", "rollback", "manual")
"""What moved the alias: the promotion gate, a live promotion (a shadow beat the champion), a rollback, a
manual move."""


@dataclass(frozen=True)
class AliasMove:
    """One move of ``pair``'s ``alias`` from ``previous_version`` (None: it had none) to ``version``."""

    id: int
    pair: str
    alias: str
    version: int
    previous_version: int | None
    action: str
    actor: str
    reason: str
    market_time: datetime
    wall_time: datetime
    scores: dict[str, Any] = field(default_factory=dict)

    @property
    def scores_text(self) -> str:
        """``skill 0.0125, horizons [6]`` (``-`` without scores; empty ones left out): how the CLI and the admin
        page show them."""

        def text(v: Any) -> str:  # a list or table of scores (per horizon): its size, the rest in --json
            if isinstance(v, float):
                return f"{v:.4g}"
            return f"[{len(v)}]" if isinstance(v, list | dict) else str(v)

        return ", ".join(f"{k} {text(v)}" for k, v in self.scores.items() if v not in (None, [], {})) or "-"

    @property
    def change(self) -> str:
        """``v2 -> v3`` (``- -> v1``: the pair had no champion)."""
        return f"{'-' if self.previous_version is None else f'v{self.previous_version}'} -> v{self.version}"

    def as_json(self) -> dict[str, Any]:
        """JSON-ready (times ISO-8601 UTC): what the CLI's ``--json`` and the API answer."""
        from mur.timeutil import iso

        return asdict(self) | {"market_time": iso(self.market_time), "wall_time": iso(self.wall_time)}


def record_move(
    db: Database,
    *,
    pair: str,
    version: int,
    previous_version: int | None,
    action: str,
    actor: str,
    reason: str,
    scores: dict[str, Any],
    market_time: datetime,
) -> AliasMove:
    """Store one alias move (``action``: one of :data:`ACTIONS`; ``market_time``: market now, :mod:`mur.clock`)."""
    if action not in ACTIONS:
        raise InvalidInputError(f"unknown alias move {action!r} (one of {', '.join(ACTIONS)})")
    with db.cursor(class_row(AliasMove)) as cur:
        cur.execute(
            sql.SQL("""INSERT INTO alias_moves (pair, version, previous_version, action, actor, reason, scores,
                                                market_time)
            VALUES (%(pair)s, %(version)s, %(previous)s, %(action)s, %(actor)s, %(reason)s, %(scores)s,
                    %(market_time)s)
            RETURNING {}""").format(columns(AliasMove)),
            {
                "pair": normalize_pair(pair),
                "version": int(version),
                "previous": None if previous_version is None else int(previous_version),
                "action": action,
                "actor": actor,
                "reason": reason,
                "scores": Jsonb(json_ready(scores)),
                "market_time": market_time,
            },
        )
        return fetch_one(cur)


def list_moves(db: Database, pair: str, *, limit: int = 50) -> list[AliasMove]:
    """``pair``'s latest ``limit`` moves of its champion alias, newest first."""
    with db.cursor(class_row(AliasMove)) as cur:
        return cur.execute(
            sql.SQL("""SELECT {} FROM alias_moves WHERE pair = %(pair)s AND alias = 'champion'
            ORDER BY wall_time DESC, id DESC LIMIT %(limit)s""").format(columns(AliasMove)),
            {"pair": normalize_pair(pair), "limit": min(max(int(limit), 0), MAX_MOVES)},
        ).fetchall()
