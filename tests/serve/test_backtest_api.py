"""``GET /v1/track-record/{pair}?source=backtest`` in-process (fake forecasters, the real PostgreSQL): the
champion's backtest rows (sql/0013_backtest_forecasts.sql), labelled ``backtest`` row by row, with exact
numbers; the live track record (the default) never shows them."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from api_fakes import auth, running_api

from mur.clock import MarketClock
from mur.db.forecasts import record_backtest
from mur.settings import Settings

PAIR = "btc_usdt"
T0 = datetime(2025, 2, 1, tzinfo=UTC)
H = timedelta(hours=1)


def row(version: int, i: int, hours: int, median: float, actual: float) -> dict[str, object]:
    made_at = T0 + i * H
    return {
        "pair": PAIR,
        "version": version,
        "target": made_at + (hours - 1) * H,
        "hours": hours,
        "made_at": made_at,
        "median": median,
        "lower": median - 2.0,
        "upper": median + 2.0,
        "level": 0.9,
        "last_close": 100.0,
        "actual": actual,
    }


def test_track_record_source_backtest(pg_database_factory: Callable[..., Settings]) -> None:
    with running_api(pg_database_factory(), configured_pairs=[PAIR]) as api:
        api.service.clock = MarketClock(start=T0 + 48 * H, origin=time.time(), speed=0.0)
        rows = [row(2, 0, 1, 101.0, 102.0), row(2, 1, 1, 103.0, 100.0), row(2, 1, 4, 99.0, 104.0)]
        assert record_backtest(api.db, [*rows, row(1, 0, 1, 50.0, 102.0)]) == 4
        assert record_backtest(api.db, rows) == 0  # loaded once
        _, token = api.user()
        url = f"/v1/track-record/{PAIR}"

        live = api.client.get(url, headers=auth(token)).json()
        assert live["source"] == "live" and live["resolved"] == [] and live["resolved_total"] == 0

        body = api.client.get(url, params={"source": "backtest"}, headers=auth(token)).json()
        assert body["source"] == "backtest" and "backtest" in body["scored"]
        assert body["pending"] == 0 and body["unresolved"] == [] and body["resolved_total"] == 3
        resolved = body["resolved"]
        assert [r["source"] for r in resolved] == ["backtest"] * 3
        assert {r["model_version"] for r in resolved} == {"2"}  # the newest backtested version only
        assert [(r["horizon_hours"], r["error"], r["inside"]) for r in resolved] == [
            (4, -5.0, False),  # newest target first: 4 h (target 04:00), then 1 h at 01:00 and 00:00
            (1, 3.0, False),
            (1, -1.0, True),
        ]
        one = body["summary"]["by_horizon"]["1"]
        assert one["n"] == 2 and one["mae_model"] == pytest.approx(2.0) and one["mae_persistence"] == 1.0
        assert one["coverage"] == 0.5

        only = api.client.get(
            url, params={"source": "backtest", "horizon": 1, "limit": 1}, headers=auth(token)
        )
        assert only.json()["resolved_total"] == 2 and len(only.json()["resolved"]) == 1
        csv = api.client.get(url, params={"source": "backtest", "format": "csv"}, headers=auth(token))
        assert (
            csv.status_code == 200
            and "btc_usdt-backtest-track-record.csv" in csv.headers["Content-Disposition"]
        )
        assert len(csv.text.strip().splitlines()) == 4
        bad = api.client.get(url, params={"source": "both"}, headers=auth(token))
        assert bad.status_code == 422 and bad.json()["error"]
