"""One forecast, one score (issue 25): when several model versions forecast the same (pair, target time,
horizon), the track record scores the first one served, and the dashboard's data function, the monitoring
report, ``/metrics`` and the API's ``/v1/track-record`` (JSON and CSV) count and score exactly the same rows.

Real PostgreSQL (a database of its own), the API in-process with its market clock frozen at :data:`NOW`.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from api_fakes import Api, auth, running_api
from prometheus_client.parser import text_string_to_metric_families

from dash_app.track_view import track_record_view
from mur.clock import MarketClock
from mur.db import fill_actuals, list_forecasts, record_forecast
from mur.errors import MarketDataError
from mur.monitoring.compute import build_report
from mur.monitoring.report import Thresholds
from mur.monitoring.store import forecast_counts, save_report
from mur.settings import Settings

PAIR = "btc_usdt"
NOW = datetime(2025, 3, 1, 12, 30, tzinfo=UTC)
HOUR = datetime(2025, 3, 1, 12, tzinfo=UTC)
H = timedelta(hours=1)
THRESHOLDS = Thresholds(
    window_hours=48,
    min_resolved=3,
    skill_below=-0.1,
    coverage_below=0.7,
    psi_above=1.0,
    ks_p_below=1e-4,
    cooldown_hours=24,
)


class NoCandles:
    """A candle source with nothing to give (monitoring skips drift; resolution happened beforehand)."""

    def klines(self, pair: str, **_: Any) -> Any:
        raise MarketDataError(f"no candles of {pair} here")


@pytest.fixture
def api(pg_database_factory: Callable[..., Settings]) -> Iterator[Api]:
    with running_api(pg_database_factory(), configured_pairs=[PAIR]) as api:
        api.service.clock = MarketClock(start=NOW, origin=time.time(), speed=0.0)
        yield api


def actual_of(target: datetime) -> float:
    return 100.0 + (target - HOUR) / H * 0.7


def several_versions(api: Api) -> dict[tuple[datetime, int], dict[str, Any]]:
    """Ten closed 1 h targets and four closed 4 h ones, each forecast by two or three versions in a shuffled
    order of serving; one closed target left without its close (overdue); three targets still to close, two
    of them by two versions. Returns the forecast each (target, horizon) must be scored by: the first served."""
    first: dict[tuple[datetime, int], dict[str, Any]] = {}
    specs = []
    for i in range(1, 11):  # 1 h targets 02:00 .. 11:00 (all closed at 12:00)
        specs.append((HOUR - i * H, 1))
    for i in (1, 3, 5, 7):
        specs.append((HOUR - i * H, 4))
    specs += [(HOUR, 1), (HOUR + H, 4), (HOUR + 3 * H, 4)]  # not closed: pending
    for n, (target, horizon) in enumerate(specs):
        versions = ["1", "2", "3"] if n % 2 else ["3", "1"]
        for k, version in enumerate(versions):
            made = target - horizon * H + timedelta(minutes=1 + 7 * k)
            predicted = actual_of(target) + (k + 1) * (1.0 if n % 3 else -1.5) * (1 + int(version))
            last = actual_of(target) - 0.4 * (n % 4)
            band = (predicted - 2.0 - k, predicted + 1.5 + k, 0.9)
            # record the later versions first: "first" is the earliest made_at, not the first insert
            order_key = (target, horizon)
            if k == 0:
                first[order_key] = {"version": version, "predicted": predicted, "last": last, "band": band}
            specs_row = dict(
                pair=PAIR,
                model_version=version,
                target_time=target,
                predicted=predicted,
                last_close=last,
                made_at=made,
                horizon_hours=horizon,
                lower=band[0],
                upper=band[1],
                level=band[2],
            )
            if k == 0:
                first_row = specs_row
            else:
                record_forecast(api.db, **specs_row)
        record_forecast(api.db, **first_row)
        # the first version serves the same target again later: still the first served (made_at kept)
        record_forecast(api.db, **(first_row | {"made_at": first_row["made_at"] + timedelta(minutes=50)}))
    overdue = HOUR - 2 * H  # its close is not in the data yet
    closed = sorted({t for t, _ in specs if t < HOUR and t != overdue})
    fill_actuals(api.db, pair=PAIR, candles=[(t, actual_of(t)) for t in closed])
    return first


def expected_stats(first: dict[tuple[datetime, int], dict[str, Any]], horizon: int) -> dict[str, Any]:
    overdue = HOUR - 2 * H
    rows = [(t, f) for (t, h), f in first.items() if h == horizon and t < HOUR and t != overdue]
    err = [abs(f["predicted"] - actual_of(t)) for t, f in rows]
    base = [abs(f["last"] - actual_of(t)) for t, f in rows]
    inside = [f["band"][0] <= actual_of(t) <= f["band"][1] for t, f in rows]
    mae, mae_p = math.fsum(err) / len(rows), math.fsum(base) / len(rows)
    return {
        "n": len(rows),
        "mae_model": mae,
        "mae_persistence": mae_p,
        "skill": 1.0 - mae / mae_p,
        "coverage": sum(inside) / len(rows),
        "level": 0.9,
    }


def test_every_view_scores_the_first_served_forecast_and_agrees_to_the_digit(api: Api) -> None:
    first = several_versions(api)
    stored = list_forecasts(api.db, pair=PAIR, limit=1000)
    assert len(stored) > len(first)  # several versions per target are stored...
    one_hour = expected_stats(first, 1)
    assert one_hour["n"] == 9  # ...and ten closed 1 h targets minus the overdue one are scored once each

    # the dashboard's data function
    view = track_record_view(api.db, PAIR, market_hour=HOUR)
    dash = view.summary
    # the monitoring report (the same 1 h window: every target lies within its 48 market hours)
    report, _kinds = build_report(api.db, NoCandles(), PAIR, HOUR, THRESHOLDS, champion=None, drift_hours=48)
    # the API
    _, token = api.user()
    body = api.client.get(f"/v1/track-record/{PAIR}", params={"limit": 1000}, headers=auth(token)).json()
    api_one = body["summary"]["by_horizon"]["1"]
    only_one = api.client.get(
        f"/v1/track-record/{PAIR}", params={"horizon": 1, "limit": 1000}, headers=auth(token)
    ).json()

    for key in ("n", "mae_model", "mae_persistence", "skill", "coverage"):
        assert dash[key] == api_one[key] == only_one["summary"][key], key
        assert dash[key] == pytest.approx(one_hour[key], rel=1e-12), key
    assert report.n_resolved == dash["n"]
    assert (report.mae_model, report.mae_persistence, report.skill, report.coverage) == (
        dash["mae_model"],
        dash["mae_persistence"],
        dash["skill"],
        dash["coverage"],
    )
    assert len(view.record.resolved) == dash["n"]
    assert view.record.running_mae_model[-1] == pytest.approx(dash["mae_model"])
    four = expected_stats(first, 4)
    assert body["summary"]["by_horizon"]["4"]["n"] == four["n"] == 4
    assert body["summary"]["by_horizon"]["4"]["mae_model"] == pytest.approx(four["mae_model"], rel=1e-12)

    # each scored row carries the version that served first
    for row in body["resolved"]:
        target = datetime.fromisoformat(row["target_time"].replace("Z", "+00:00"))
        chosen = first[(target, row["horizon_hours"])]
        assert row["model_version"] == chosen["version"] and row["predicted"] == chosen["predicted"]
    assert len({(r["target_time"], r["horizon_hours"]) for r in body["resolved"]}) == len(body["resolved"])

    # pending and overdue: the same counts in every view (every horizon)
    assert (body["pending"], body["overdue"]) == (4, 1)  # 3 waiting + 1 overdue; 1 of them overdue
    assert (view.counts.pending, view.counts.overdue, view.counts.waiting) == (4, 1, 3)
    assert report.n_pending == body["pending"] == view.counts.pending
    assert body["resolved_total"] == view.counts.resolved == 9 + 4
    assert [u["status"] for u in body["unresolved"]].count("overdue") == 1
    assert len(view.unresolved) == 4

    # /metrics: recorded and resolved count the scored forecasts too, and the rolling gauges are the report's
    recorded, resolved = forecast_counts(api.db)[PAIR]
    assert (recorded, resolved) == (len(first), body["resolved_total"])
    save_report(api.db, report)
    scraped = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(api.client.get("/metrics").text)
        for s in family.samples
    }
    labels = (("pair", PAIR),)
    assert scraped[("mur_forecasts_recorded_total", labels)] == recorded
    assert scraped[("mur_forecasts_resolved_total", labels)] == resolved
    assert scraped[("mur_rolling_skill", labels)] == dash["skill"]
    assert scraped[("mur_rolling_coverage", labels)] == dash["coverage"]

    # the CSV has the same rows: every scored forecast once, with its state
    answer = api.client.get(
        f"/v1/track-record/{PAIR}", params={"format": "csv", "limit": 1000}, headers=auth(token)
    )
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(answer.text)))
    assert len(table) == len(first)
    states = [r["status"] for r in table]
    assert (states.count("resolved"), states.count("pending"), states.count("overdue")) == (13, 3, 1)
    one = [r for r in table if r["status"] == "resolved" and r["horizon_hours"] == "1"]
    mae = math.fsum(abs(float(r["predicted"]) - float(r["actual"])) for r in one) / len(one)
    assert mae == pytest.approx(dash["mae_model"], rel=1e-12)
    assert all(r["close_time"] > r["target_time"] for r in table)


def test_track_record_takes_a_date_range(api: Api) -> None:
    first = several_versions(api)
    _, token = api.user()
    url = f"/v1/track-record/{PAIR}"
    since, until = HOUR - 6 * H, HOUR - 3 * H  # targets 06:00, 07:00, 08:00
    body = api.client.get(
        url,
        params={"from": since.isoformat(), "to": until.isoformat(), "horizon": 1},
        headers=auth(token),
    ).json()
    assert [r["target_time"] for r in body["resolved"]] == [
        "2025-03-01T08:00:00Z",
        "2025-03-01T07:00:00Z",
        "2025-03-01T06:00:00Z",
    ]
    assert body["from"] == "2025-03-01T06:00:00Z" and body["to"] == "2025-03-01T09:00:00Z"
    assert body["pending"] == 0 and body["resolved_total"] == 3
    expected = [first[(t, 1)]["predicted"] for t in (HOUR - 4 * H, HOUR - 5 * H, HOUR - 6 * H)]
    assert [r["predicted"] for r in body["resolved"]] == expected
    # a naive time is UTC; an upside-down range is a JSON 422
    naive = api.client.get(
        url,
        params={"from": "2025-03-01T06:00:00", "to": "2025-03-01T09:00:00", "horizon": 1},
        headers=auth(token),
    ).json()
    assert naive["resolved"] == body["resolved"]
    wrong = api.client.get(
        url, params={"from": until.isoformat(), "to": since.isoformat()}, headers=auth(token)
    )
    assert wrong.status_code == 422 and wrong.json()["error"] == "invalid_input"
    bad = api.client.get(url, params={"from": "yesterday"}, headers=auth(token))
    assert bad.status_code == 422 and bad.json()["error"] == "invalid_request"
    assert api.client.get(url, params={"format": "xml"}, headers=auth(token)).status_code == 422
