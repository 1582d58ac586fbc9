"""The API's side of online calibration (issue 24), in-process over real PostgreSQL: ``/v1/forecast`` says
which scale each horizon's range carries (1 and "no state yet" before any, the stored scale after one is
seeded: a wider range around the same median), the recorded forecast keeps its scale, and
``/v1/monitoring/{pair}`` shows the running coverage with and without the scale."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pytest
from api_fakes import PAIR, VERSION, Api, FakeForecaster, auth, running_api

from mur.db import calibration as cal
from mur.evaluation.online_conformal import OnlineState, generation_for
from mur.model.inference import forecast_body, horizon_rows
from mur.monitoring.compute import thresholds_from
from mur.monitoring.report import CalibrationRow, MonitoringReport
from mur.monitoring.store import save_report
from mur.serving.calibration import graph_calibration
from mur.serving.contract import ForecastOut
from mur.settings import Settings

LEVELS = (0.05, 0.5, 0.95)
HORIZONS = (1, 4, 24)
GEN = generation_for(LEVELS)


@dataclass
class RangeForecaster(FakeForecaster):
    """The fake forecaster with ranges, answering as a Forecaster replica does: the graph's ranges and the
    ``calibration`` stub naming their generation (serve_app/forecaster.py)."""

    def _answer(self, window: np.ndarray, last_close: float, candle_time: datetime) -> ForecastOut:
        point = self.predict(window)
        quantiles = np.array([[point * 0.98**h, point, point * 1.02**h] for h in (1, 2, 3)])
        body = forecast_body(
            self.pair,
            prediction=point,
            last_close=last_close,
            candle_time=candle_time,
            model_version=VERSION,
            horizons=horizon_rows(quantiles, HORIZONS, LEVELS, candle_time),
        )
        body["calibration"] = graph_calibration(HORIZONS, LEVELS)
        return ForecastOut.model_validate(body)


@pytest.fixture
def api(pg_database_factory: Callable[..., Settings]) -> Iterator[Api]:
    settings = pg_database_factory().replace(online_calibration_cache_s=0.0)
    with running_api(settings, configured_pairs=[PAIR]) as api:
        api.service.forecasters[PAIR] = RangeForecaster(PAIR)
        api.service.answer_ttl_s = 0.0
        yield api


def log_width(band: dict[str, Any]) -> float:
    return math.log(band["upper"]) - math.log(band["lower"])


def test_the_forecast_says_its_scale_and_a_seeded_state_widens_the_range(api: Api) -> None:
    _, token = api.user()
    before = api.client.get(f"/v1/forecast/{PAIR}", headers=auth(token))
    assert before.status_code == 200, before.text
    first = before.json()
    calibration = first["calibration"]
    assert calibration["method"] == "online" and calibration["generation"] == GEN
    assert [(h["hours"], h["scale"], h["resolved"]) for h in calibration["horizons"]] == [
        (1, 1.0, 0),
        (4, 1.0, 0),
        (24, 1.0, 0),
    ]
    assert "no state yet" in calibration["note"] and calibration["updated_at"] is None

    with api.db.cursor() as cur:  # the tracker stored as the monitoring step stores it
        cal._upsert(cur, cal.CalibrationRecord(PAIR, 24, GEN, 0.9, OnlineState(math.log(1.6), 0, 40)))
    after = api.client.get(f"/v1/forecast/{PAIR}", headers=auth(token)).json()
    assert [(h["hours"], h["scale"]) for h in after["calibration"]["horizons"]] == [
        (1, 1.0),
        (4, 1.0),
        (24, 1.6),
    ]
    assert after["calibration"]["horizons"][2]["resolved"] == 40 and after["calibration"]["updated_at"]
    old24, new24 = first["horizons"][2], after["horizons"][2]
    assert new24["median"] == old24["median"]
    assert log_width(new24) == pytest.approx(1.6 * log_width(old24), rel=1e-9)  # wider, in log price
    assert after["horizons"][:2] == first["horizons"][:2]  # the other horizons keep the graph's range

    api.service.close(wait=True)  # the pending track-record write is done
    with api.db.cursor() as cur:
        cur.execute(
            "SELECT horizon_hours, upper, calibration_scale, calibration_generation FROM forecasts "
            "WHERE pair = %s ORDER BY horizon_hours",
            (PAIR,),
        )
        recorded = cur.fetchall()
    assert [(r["horizon_hours"], r["calibration_scale"], r["calibration_generation"]) for r in recorded] == [
        (1, 1.0, GEN),
        (4, 1.0, GEN),
        (24, 1.0, GEN),  # recorded once per target hour: the first served (scale 1) is the one kept
    ]
    assert recorded[2]["upper"] == pytest.approx(old24["upper"])


def test_monitoring_shows_coverage_with_and_without_the_scale(api: Api, pg_settings: Settings) -> None:
    row = CalibrationRow(
        horizon_hours=24,
        generation=GEN,
        level=0.9,
        scale=1.2,
        resolved=50,
        coverage=0.9,
        coverage_without_scale=0.84,
    )
    report = MonitoringReport(
        pair=PAIR,
        as_of="2025-06-01T12:00:00Z",
        status="ok",
        n_resolved=50,
        thresholds=thresholds_from(pg_settings),
        online_calibration=[row],
    )
    save_report(api.db, report)
    _, token = api.user()
    body = api.client.get(f"/v1/monitoring/{PAIR}", headers=auth(token))
    assert body.status_code == 200, body.text
    (got,) = body.json()["online_calibration"]
    assert got["horizon_hours"] == 24 and got["scale"] == 1.2 and got["resolved"] == 50
    assert got["coverage"] == 0.9 and got["coverage_without_scale"] == 0.84
