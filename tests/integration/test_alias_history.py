"""Champion history and rollback (sql/0011, mur/db/alias_history.py, mur/registry/aliases.py) on a throwaway
PostgreSQL database and a throwaway MLflow registry (SQLite, no server): moves are recorded and listed newest
first; a rollback goes back to the previous champion (from the history, else the gate's tags), moves the
MLflow alias and is refused in one line for no champion, an unknown version, the champion itself, a backfill;
the gate's record never raises with PostgreSQL down. Plus: what was served at a past market time (as_of)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from mur.db import Database, record_forecast_body
from mur.db.alias_history import list_moves, record_move
from mur.db.served import served_forecast
from mur.errors import InvalidInputError, NotFoundError
from mur.registry.aliases import move_champion, record_gate_move, rollback
from mur.registry.names import CHAMPION, model_name
from mur.settings import Settings

pytestmark = pytest.mark.pg
T0 = datetime(2025, 1, 6, 9, 20, tzinfo=UTC)
H = timedelta(hours=1)


def _pair() -> str:
    return f"t{uuid.uuid4().hex[:8]}_usdt"


def _versions(client: Any, prefix: str, pair: str, kinds: list[str]) -> str:
    name = model_name(pair, prefix)
    client.create_registered_model(name)
    for kind in kinds:
        client.create_model_version(
            name, source="/nowhere", tags={"kind": kind, "gate_alias": CHAMPION, "skill": "0.012500"}
        )
    return name


def test_moves_are_recorded_and_listed_newest_first(database: Database) -> None:
    pair = _pair()
    assert list_moves(database, pair) == []
    record_move(database, pair=pair, version=1, previous_version=None, action="gate", actor="gate",
                reason="first", scores={"skill": 0.01, "skill_se": float("inf"), "horizons": [{"h": np.float64("nan")}]},
                market_time=T0)  # fmt: skip
    record_move(database, pair=pair.upper(), version=2, previous_version=1, action="live", actor="monitoring",
                reason="live", scores={}, market_time=T0 + H)  # fmt: skip
    moves = list_moves(database, pair)
    assert [(m.version, m.previous_version, m.action) for m in moves] == [(2, 1, "live"), (1, None, "gate")]
    assert moves[1].scores == {"skill": 0.01, "skill_se": None, "horizons": [{"h": None}]}  # JSON has no inf
    assert set(moves[1].scores_text.split(", ")) == {"skill 0.01", "horizons [1]"}  # not "skill_se None"
    assert moves[0].scores_text == "-"
    assert replace(moves[1], scores={"horizons": [], "gate_rule": "first"}).scores_text == "gate_rule first"
    assert moves[1].as_json()["market_time"] == "2025-01-06T09:20:00Z"
    assert [m.version for m in list_moves(database, pair, limit=1)] == [2]
    with pytest.raises(InvalidInputError, match="unknown alias move"):
        record_move(database, pair=pair, version=3, previous_version=2, action="oops", actor="x", reason="",
                    scores={}, market_time=T0)  # fmt: skip


def test_rollback_goes_back_to_the_previous_champion(registry: tuple[Settings, Any]) -> None:
    settings, client = registry
    pair = _pair()
    name = _versions(
        client, settings.registry.registry_prefix, pair, ["scheduled", "scheduled", "scheduled", "backfill"]
    )
    with pytest.raises(NotFoundError, match="has no champion"):
        rollback(settings, pair, actor="me", reason="bad", client=client)
    for v in (1, 3, 2):  # the gate promoted 1, then 3; an admin moved it to 2
        move_champion(settings, client, pair=pair, version=v, action="gate", actor="gate", reason=f"v{v}")
    assert int(client.get_model_version_by_alias(name, CHAMPION).version) == 2
    move = rollback(settings, pair, actor="me", reason="ranges too narrow", client=client)
    assert (move.previous_version, move.version, move.action, move.actor) == (2, 3, "rollback", "me")
    assert move.scores == {"skill": 0.0125} and move.reason == "ranges too narrow"
    assert int(client.get_model_version_by_alias(name, CHAMPION).version) == 3
    move = rollback(settings, pair, to=1, actor="me", reason="v1 was fine", client=client)
    assert (move.previous_version, move.version) == (3, 1)
    with Database(settings, maxconn=1) as db:
        assert [m.version for m in list_moves(db, pair)] == [1, 3, 2, 3, 1]
    refused = {
        9: (NotFoundError, "no registered version 9"),
        1: (InvalidInputError, "is the champion already"),
        4: (InvalidInputError, "backfill"),
    }
    for to, (error, text) in refused.items():
        with pytest.raises(error, match=text):
            rollback(settings, pair, to=to, actor="me", reason="x", client=client)
    with pytest.raises(InvalidInputError, match="needs a reason"):
        rollback(settings, pair, actor="me", reason="  ", client=client)


def test_rollback_without_history_reads_the_gate_tags(registry: tuple[Settings, Any]) -> None:
    settings, client = registry
    pair = _pair()
    name = _versions(client, settings.registry.registry_prefix, pair, ["scheduled", "backfill", "scheduled"])
    client.set_registered_model_alias(name, CHAMPION, "3")  # moved before the history existed
    move = rollback(settings, pair, actor="me", reason="r", client=client)
    assert (move.previous_version, move.version) == (3, 1)  # v2 is a backfill: never served


def test_the_gate_record_never_fails_the_training(pg_settings: Settings, caplog: Any) -> None:
    pair = _pair()
    record_gate_move(
        pg_settings, pair=pair, version=2, previous_version=1, reason="fresher", scores={"a": 1.0}
    )
    with Database(pg_settings, maxconn=1) as db:
        (move,) = list_moves(db, pair)
    assert (move.action, move.actor, move.version, move.scores) == ("gate", "gate", 2, {"a": 1.0})
    down = Settings(env="test", pg_database=pg_settings.db.pg_database, pg_port=1)  # nothing listens there
    record_gate_move(down, pair=pair, version=3, previous_version=2, reason="r", scores={})
    assert "was not recorded" in caplog.text


def _serve(db: Database, pair: str, version: int, candle: datetime, made_at: datetime, base: float) -> None:
    """One served answer (1 h and 4 h) from the candle opened at ``candle``, as the API records it."""
    bands = [
        {"hours": h, "target_time": (candle + h * H).isoformat(), "median": base + h}
        | {"lower": base, "upper": base + 2 * h, "level": 0.9}
        for h in (1, 4)
    ]
    body = {"pair": pair, "model_version": version, "last_close": base, "horizons": bands}
    record_forecast_body(db, body | {"target_time": bands[0]["target_time"]}, made_at=made_at)


def test_as_of_answers_what_was_served_then(database: Database) -> None:
    pair, c8, c9 = _pair(), datetime(2025, 1, 6, 8, tzinfo=UTC), datetime(2025, 1, 6, 9, tzinfo=UTC)
    _serve(database, pair, 1, c8, c8 + H + timedelta(minutes=3), 100.0)  # served 09:03 from the 08:00 candle
    _serve(database, pair, 1, c9, c9 + H + timedelta(minutes=1), 200.0)  # 10:01, v1
    _serve(database, pair, 2, c9, c9 + H + timedelta(minutes=40), 300.0)  # 10:40, v2 (promoted at 10:30)
    rows = served_forecast(database, pair=pair, at=datetime(2025, 1, 6, 9, 30, tzinfo=UTC))
    assert [(r.model_version, r.horizon_hours, r.predicted) for r in rows] == [
        ("1", 1, 101.0),
        ("1", 4, 104.0),
    ]
    at_ten = served_forecast(database, pair=pair, at=datetime(2025, 1, 6, 10, tzinfo=UTC))
    assert {r.model_version for r in at_ten} == {"1"}  # first served after 10:00: v1 at 10:01
    late = served_forecast(database, pair=pair, at=datetime(2025, 1, 6, 10, 50, tzinfo=UTC))
    assert {(r.model_version, r.predicted) for r in late} == {("2", 301.0), ("2", 304.0)}
    assert served_forecast(database, pair=pair, at=datetime(2025, 1, 6, 12, tzinfo=UTC)) == []
