"""The track record per horizon in PostgreSQL: a forecast body stores one row per horizon with its range;
resolved rows know whether the close fell inside; bad ranges are refused and store nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from mur.db import Database, fill_actuals, list_forecasts, record_forecast, record_forecast_body
from mur.errors import InvalidInputError

T0 = datetime(2025, 3, 1, 12, tzinfo=UTC)


def body(pair: str) -> dict:
    return {
        "pair": pair,
        "forecast": 101.0,
        "last_close": 100.0,
        "candle_time": "2025-03-01T11:00:00Z",
        "target_time": "2025-03-01T12:00:00Z",
        "model_version": 9,
        "horizons": [
            {
                "hours": 1,
                "target_time": "2025-03-01T12:00:00Z",
                "median": 101.0,
                "lower": 99.0,
                "upper": 103.0,
                "level": 0.9,
            },
            {
                "hours": 4,
                "target_time": "2025-03-01T15:00:00Z",
                "median": 101.5,
                "lower": 96.0,
                "upper": 106.0,
                "level": 0.9,
            },
        ],
    }


def test_a_body_stores_every_horizon_and_resolution_says_inside(database: Database) -> None:
    pair = f"t{uuid.uuid4().hex[:8]}_usdt"
    stored = record_forecast_body(database, body(pair))
    assert [(f.horizon_hours, f.lower, f.upper, f.level) for f in stored] == [
        (1, 99.0, 103.0, 0.9),
        (4, 96.0, 106.0, 0.9),
    ]
    assert (
        record_forecast_body(database, body(pair))[0].id == stored[0].id
    )  # a retry refreshes, never duplicates
    # the 1 h close lands outside (104 > 103), the 4 h close inside
    assert fill_actuals(database, pair=pair, candles=[(T0, 104.0), (T0 + timedelta(hours=3), 100.0)]) == 2
    rows = {f.horizon_hours: f for f in list_forecasts(database, pair=pair)}
    assert rows[1].inside is False and rows[4].inside is True
    assert [f.horizon_hours for f in list_forecasts(database, pair=pair, horizon_hours=4)] == [4]
    # a point forecast (no range) at the same target and version but its own horizon row is separate
    point = record_forecast(
        database, pair=pair, model_version="9", target_time=T0, predicted=1.0, last_close=1.0, horizon_hours=2
    )
    assert point.inside is None and point.level is None


@pytest.mark.parametrize(
    "band",
    [
        {"lower": 3.0, "upper": 1.0, "level": 0.9},
        {"lower": 1.0, "upper": None, "level": 0.9},
        {"lower": float("nan"), "upper": 2.0, "level": 0.9},
    ],
)
def test_bad_ranges_are_refused(database: Database, band: dict) -> None:
    pair = f"t{uuid.uuid4().hex[:8]}_usdt"
    with pytest.raises(InvalidInputError):
        record_forecast(
            database, pair=pair, model_version="1", target_time=T0, predicted=2.0, last_close=2.0, **band
        )
    assert list_forecasts(database, pair=pair) == []
