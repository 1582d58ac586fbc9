"""The online calibration's live loop on real PostgreSQL: serving applies the stored scale and records it with
the range (mur/serving/calibration.py, mur/db/forecasts.py), the monitoring step judges each resolved forecast
against the range as served, once (a rerun of the hour changes nothing; mur/monitoring/task.py), the setting
off steps nothing; the summary is what the report carries (CalibrationRow)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mur.db import Database, fill_actuals, record_forecast_body
from mur.db import calibration as cal
from mur.evaluation.online_conformal import OnlineState, generation_for
from mur.monitoring.report import CalibrationRow
from mur.monitoring.store import latest_report
from mur.monitoring.task import step_online_calibration
from mur.serving.calibration import OnlineScales, graph_calibration
from mur.settings import Settings

pytestmark = pytest.mark.pg

PAIR = "btc_usdt"
LEVELS = (0.05, 0.5, 0.95)
GEN = generation_for(LEVELS)
T0 = datetime(2025, 3, 1, 10, tzinfo=UTC)  # the candle the forecasts are made from (its open time)
H = timedelta(hours=1)


@pytest.fixture
def loop_db(pg_database_factory: Callable[..., Settings]) -> Iterator[tuple[Settings, Database]]:
    settings = pg_database_factory().replace(online_calibration_eta=0.05)
    db = Database(settings, maxconn=2)
    yield settings, db
    db.close()


def graph_body(candle: datetime) -> dict[str, Any]:
    """A Forecaster's body for the candle opening at ``candle``: 1 h and 4 h ranges around 100."""
    bands = [
        {
            "hours": h,
            "target_time": (candle + h * H).isoformat(),
            "median": 100.0,
            "lower": 95.0,
            "upper": 105.0,
        }
        for h in (1, 4)
    ]
    return {
        "pair": PAIR,
        "forecast": 100.0,
        "last_close": 100.0,
        "target_time": (candle + H).isoformat(),
        "model_version": 3,
        "horizons": [b | {"level": 0.9} for b in bands],
        "calibration": graph_calibration((1, 4), LEVELS),
    }


def served(db: Database, candle: datetime) -> dict[str, Any]:
    """What the API does with the body: apply the stored scales (read from PostgreSQL), record it."""

    async def read(pair: str, generation: str) -> Any:
        return await asyncio.to_thread(cal.load_calibration, db, pair=pair, generation=generation)

    body = asyncio.run(OnlineScales(enabled=True, ttl_s=0, read=read).calibrate(graph_body(candle)))
    record_forecast_body(db, body, made_at=candle + H)
    return body


def stored_rows(db: Database) -> list[dict[str, Any]]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT horizon_hours, lower, upper, calibration_scale, calibration_generation FROM forecasts "
            "WHERE pair = %s ORDER BY target_time, horizon_hours",
            (PAIR,),
        )
        return list(cur.fetchall())


def test_the_served_scale_is_recorded_and_judged_as_served_once(loop_db: tuple[Settings, Database]) -> None:
    settings, db = loop_db
    with db.cursor() as cur:  # the tracker stored as the monitoring step stores it
        cal._upsert(cur, cal.CalibrationRecord(PAIR, 1, GEN, 0.9, OnlineState(log_scale=math.log(1.5))))

    body = served(db, T0)
    one, four = body["horizons"]
    assert body["calibration"]["method"] == "online" and body["calibration"]["generation"] == GEN
    assert [(h["hours"], h["scale"]) for h in body["calibration"]["horizons"]] == [(1, 1.5), (4, 1.0)]
    assert one["upper"] == pytest.approx(100 * 1.05**1.5) and four["upper"] == 105.0
    rows = stored_rows(db)
    assert [(r["horizon_hours"], r["calibration_scale"], r["calibration_generation"]) for r in rows] == [
        (1, 1.5, GEN),
        (4, 1.0, GEN),
    ]
    assert rows[0]["upper"] == pytest.approx(one["upper"])  # the range as served, with its scale

    # the 1 h close lands above the graph's range, inside the served one; the 4 h target has not closed
    fill_actuals(db, pair=PAIR, candles=[(T0 + H, 106.0)])
    hour = T0 + 2 * H
    summary = step_online_calibration(db, settings, PAIR, hour)
    (row,) = summary
    assert row["horizon_hours"] == 1 and row["resolved"] == 1
    assert row["coverage"] == 1.0 and row["coverage_without_scale"] == 0.0
    hit = math.exp(0.05 * (0.0 - 0.1))  # a hit narrows by exp(-eta alpha)
    assert row["scale"] == pytest.approx(1.5 * hit)
    with db.cursor() as cur:
        (step,) = cur.execute(
            "SELECT applied_scale, covered, covered_base FROM online_calibration_steps "
            "WHERE pair = %s AND generation = %s",
            (PAIR, GEN),
        ).fetchall()
    assert step["applied_scale"] == 1.5 and step["covered"] and not step["covered_base"]

    assert step_online_calibration(db, settings, PAIR, hour) == summary  # a rerun of the hour: no second step

    # a 4 h outcome resolves 4 hours after its forecast was served (delayed feedback), at its own tracker
    fill_actuals(db, pair=PAIR, candles=[(T0 + 4 * H, 80.0)])
    assert [r["resolved"] for r in step_online_calibration(db, settings, PAIR, T0 + 4 * H)] == [1]
    after = {r["horizon_hours"]: r for r in step_online_calibration(db, settings, PAIR, T0 + 5 * H)}
    assert after[4]["resolved"] == 1 and after[4]["coverage"] == 0.0
    assert after[4]["scale"] == pytest.approx(math.exp(0.05 / 2 * 0.9))  # a miss widens, eta / sqrt(4)

    assert [CalibrationRow.model_validate(r).scale for r in after.values()] == [
        row["scale"],
        after[4]["scale"],
    ]


def test_with_the_setting_off_nothing_is_scaled_nor_stepped(loop_db: tuple[Settings, Database]) -> None:
    settings, db = loop_db
    off = settings.replace(online_calibration=False)
    with db.cursor() as cur:  # the tracker stored as the monitoring step stores it
        cal._upsert(cur, cal.CalibrationRecord(PAIR, 1, GEN, 0.9, OnlineState(log_scale=math.log(2.0))))

    async def read(pair: str, generation: str) -> Any:
        raise AssertionError("off: the state is never read")

    body = asyncio.run(OnlineScales(enabled=False, ttl_s=0, read=read).calibrate(graph_body(T0)))
    assert body["calibration"]["method"] == "off" and body["horizons"][0]["upper"] == 105.0
    record_forecast_body(db, body, made_at=T0 + H)
    assert {(r["calibration_scale"], r["calibration_generation"]) for r in stored_rows(db)} == {(None, None)}
    fill_actuals(db, pair=PAIR, candles=[(T0 + H, 120.0)])
    (row,) = step_online_calibration(db, off, PAIR, T0 + 2 * H)
    assert row["resolved"] == 0 and row["scale"] == pytest.approx(2.0)  # reported as it stands, not stepped
    assert cal.served_generations(db, pair=PAIR, since=T0, until=T0 + 5 * H) == []


@pytest.mark.usefixtures("restored_environ")
def test_the_hourly_monitoring_run_steps_the_trackers_once(loop_db: tuple[Settings, Database]) -> None:
    """The whole monitoring run (bundled candles, MLflow and Airflow unreachable): it resolves a served
    forecast from the market data, steps its tracker, puts the summary in the stored report, and a rerun of
    the same market hour steps nothing."""
    from mur.monitoring.task import run_monitoring

    settings, db = loop_db
    candle = datetime(2024, 7, 10, 10, tzinfo=UTC)
    hour = candle + 3 * H
    at = settings.replace(
        **{
            "market_data": "bundled",
            "synthetic_pairs": 0,
            "pairs": [PAIR],
            "airflow_url": "http://127.0.0.1:9",  # nothing listens
            "mlflow_tracking_uri": "http://127.0.0.1:9",
            "monitor_retrain": False,
            "discord_webhook_url": None,
            "clock_start": hour,
            "clock_speed": 0.0,
            "clock_origin": time.time(),
        }
    )
    body = graph_body(candle) | {"calibration": graph_calibration((1, 4), LEVELS) | {"method": "online"}}
    record_forecast_body(db, body, made_at=candle + H)  # served with scale 1 for this generation

    for _ in range(2):  # the same market hour twice (a retried task)
        run_monitoring(at, market_hour=hour, pairs=[PAIR], say=lambda _: None)
        report = latest_report(db, PAIR)
        assert report is not None and report.as_of == "2024-07-10T13:00:00Z"
        (row,) = report.online_calibration  # the 4 h target (14:00) has not closed at 13:00
        assert row.horizon_hours == 1 and row.generation == GEN and row.resolved == 1
        assert row.coverage == 0.0  # BTC was nowhere near 100 in July 2024: a miss, the range widens
        assert row.scale == pytest.approx(math.exp(0.05 * 0.9))
