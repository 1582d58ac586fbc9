"""Online calibration state in PostgreSQL (mur/db/calibration.py, sql/0008): the trackers step once per
resolved scored forecast, in resolution order, round-trip through the database and survive a restart (a
new pool)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from mur.db import Database, record_forecast
from mur.db import calibration as cal
from mur.evaluation.online_conformal import OnlineParams, OnlineState, generation_for
from mur.settings import Settings

pytestmark = pytest.mark.pg

T0 = datetime(2024, 8, 1, tzinfo=UTC)
GEN = generation_for((0.05, 0.5, 0.95))
P = OnlineParams(eta=0.1)


def _forecast(db: Database, pair: str, hour: int, horizon: int, actual: float | None, **kw: object) -> int:
    f = record_forecast(
        db,
        pair=pair,
        model_version=str(kw.pop("version", "1")),
        made_at=T0 + timedelta(hours=hour),
        target_time=T0 + timedelta(hours=hour + horizon - 1),
        predicted=100.0,
        last_close=100.0,
        horizon_hours=horizon,
        lower=90.0,
        upper=110.0,
        level=0.9,
    )
    if actual is not None:
        with db.cursor() as cur:
            cur.execute("UPDATE forecasts SET actual = %s WHERE id = %s", (actual, f.id))
    return f.id


def _served_with(database: Database, forecast_id: int, scale: float, generation: str) -> None:
    """Mark a forecast as served with an online scale (what record_forecast_body stores with it)."""
    with database.cursor() as cur:
        cur.execute(
            "UPDATE forecasts SET calibration_scale = %s, calibration_generation = %s WHERE id = %s",
            (scale, generation, forecast_id),
        )


def test_state_round_trips_and_survives_a_restart(pg_database_factory: Callable[..., Settings]) -> None:
    settings = pg_database_factory()
    db = Database(settings, maxconn=2)
    try:
        rec = cal.CalibrationRecord(
            "btc_usdt", 24, GEN, 0.9, OnlineState(0.25, 1.5, 10, 8, 6, 12.5, 14.0), T0, None
        )
        with db.cursor() as cur:  # the tracker stored as the monitoring step stores it
            cal._upsert(cur, rec)
        loaded = cal.load_calibration(db, pair="BTC-USDT", generation=GEN)
        assert list(loaded) == [24]
        stored = loaded[24]
        assert stored.state == rec.state and stored.last_target_time == T0
        assert stored.scale == pytest.approx(math.exp(0.25))
    finally:
        db.close()
    restarted = Database(settings, maxconn=2)  # a new process: a new pool, the same database
    try:
        again = cal.load_calibration(restarted, pair="btc_usdt")
        assert again[24].state == rec.state and again[24].generation == GEN
        summary = cal.calibration_summary(restarted, pair="btc_usdt", generation=GEN)
        assert summary[0]["coverage"] == pytest.approx(0.8)
        assert summary[0]["coverage_without_scale"] == pytest.approx(0.6)
        assert summary[0]["skill_vs_without_scale"] == pytest.approx(1 - 12.5 / 14.0)
        assert cal.load_calibration(restarted, pair="btc_usdt", generation="other") == {}
    finally:
        restarted.close()


def test_update_steps_each_resolved_forecast_once_in_order(database: Database) -> None:
    pair = "eth_usdt"
    # 1 h forecasts made at hours 0..3: outcomes miss (120), hit, hit, unresolved
    ids = [_forecast(database, pair, h, 1, a) for h, a in enumerate([120.0, 100.0, 101.0, None])]
    # a second version's forecast of the same target, served later: not scored, never steps
    _forecast(database, pair, 0, 1, 120.0, version="2")
    # a 24 h forecast made at hour 0 resolves at hour 24: not yet at market hour 10
    _forecast(database, pair, 0, 24, 100.0)
    hour = T0 + timedelta(hours=10)
    records = cal.update_from_resolved(database, pair=pair, generation=GEN, market_hour=hour, params=P)
    assert list(records) == [1]
    s = records[1].state
    assert s.log_scale == pytest.approx(0.09 - 0.01 - 0.01)
    assert (s.resolved, s.covered, s.covered_base) == (3, 2, 2)
    # again at the same hour: nothing new
    again = cal.update_from_resolved(database, pair=pair, generation=GEN, market_hour=hour, params=P)
    assert again[1].state == s
    # a day later the 24 h forecast has resolved (a hit): its own tracker, with the 24 h step
    later = cal.update_from_resolved(
        database, pair=pair, generation=GEN, market_hour=T0 + timedelta(hours=30), params=P
    )
    assert later[24].state.log_scale == pytest.approx(-0.01 / math.sqrt(24))
    assert later[1].state == s
    # the forecast served at hour 3 is resolved now (a miss, served with the scale then): widen
    with database.cursor() as cur:
        cur.execute("UPDATE forecasts SET actual = 150 WHERE id = %s", (ids[3],))
    _served_with(database, ids[3], 2.0, GEN)
    last = cal.update_from_resolved(
        database, pair=pair, generation=GEN, market_hour=T0 + timedelta(hours=30), params=P
    )
    assert last[1].state.log_scale == pytest.approx(0.07 + 0.09)
    with database.cursor() as cur:
        steps = cur.execute(
            "SELECT forecast_id, covered, applied_scale FROM online_calibration_steps "
            "WHERE pair = %s AND generation = %s AND horizon_hours = 1 ORDER BY target_time",
            (pair, GEN),
        ).fetchall()
    assert [r["forecast_id"] for r in steps] == ids
    assert [r["covered"] for r in steps] == [False, True, True, False]
    assert steps[-1]["applied_scale"] == pytest.approx(2.0)
    # another generation's forecasts never step this tracker
    other = _forecast(database, pair, 5, 1, 200.0)
    _served_with(database, other, 1.0, "another")
    assert (
        cal.update_from_resolved(
            database, pair=pair, generation=GEN, market_hour=T0 + timedelta(hours=30), params=P
        )[1].state
        == last[1].state
    )
