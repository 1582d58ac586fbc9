"""``GET /v1/track-record/{pair}`` and ``GET /v1/monitoring/{pair}`` in-process (fake forecasters, the real
PostgreSQL): bearer token required, the documented shapes with exact numbers, the ``limit``/``horizon``
filters and their bounds, JSON errors, no quota used, both routes in the OpenAPI schema.

Each test has a database of its own (the forecasts of a real pair never clash with other tests') and the
service's market clock frozen at :data:`NOW`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from api_fakes import PAIR as FORECASTER_PAIR
from api_fakes import Api, assert_error, auth, running_api

from mur.clock import MarketClock
from mur.db import fill_actuals, record_forecast
from mur.monitoring.report import DriftStat, MonitoringReport, RollingPoint, Thresholds
from mur.monitoring.store import record_alert, save_report
from mur.settings import Settings

PAIR = "btc_usdt"  # served through configured_pairs (no forecaster needed to read its records)
NOW = datetime(2025, 3, 1, 12, 30, tzinfo=UTC)
HOUR_NOW = datetime(2025, 3, 1, 12, tzinfo=UTC)
H = timedelta(hours=1)


@pytest.fixture
def api(pg_database_factory: Callable[..., Settings]) -> Iterator[Api]:
    with running_api(pg_database_factory(), configured_pairs=[PAIR]) as api:
        api.service.clock = MarketClock(start=NOW, origin=time.time(), speed=0.0)
        yield api


def forecast(
    api: Api, target: datetime, horizon: int, predicted: float, last: float, band: Any = None
) -> None:
    lower, upper, level = band if band is not None else (None, None, None)
    record_forecast(
        api.db,
        pair=PAIR,
        model_version="7",
        target_time=target,
        predicted=predicted,
        last_close=last,
        made_at=target - horizon * H + timedelta(minutes=2),
        horizon_hours=horizon,
        lower=lower,
        upper=upper,
        level=level,
    )


def track_record_fixture(api: Api) -> None:
    """Four resolved forecasts (three 1 h, one 4 h) and two pending ones."""
    t9, t10, t11 = HOUR_NOW - 3 * H, HOUR_NOW - 2 * H, HOUR_NOW - H
    forecast(api, t9, 1, 101.0, 100.0, (99.0, 103.0, 0.9))  # actual 102: error -1, persistence -2, inside
    forecast(api, t10, 1, 103.0, 102.0, (101.5, 104.5, 0.9))  # actual 101: error 2, persistence 1, outside
    forecast(api, t11, 1, 100.0, 101.0)  # actual 100.5: error -0.5, persistence 0.5, a point forecast
    forecast(api, t11, 4, 104.0, 100.0, (95.0, 105.0, 0.8))  # actual 100.5: error 3.5, persistence -0.5
    forecast(api, HOUR_NOW, 1, 100.0, 100.5, (99.0, 102.0, 0.9))  # its candle has not closed: pending
    forecast(api, HOUR_NOW + 2 * H, 4, 100.0, 100.5, (95.0, 105.0, 0.9))  # pending
    # another pair's forecasts never show up
    record_forecast(
        api.db, pair="eth_usdt", model_version="1", target_time=t9, predicted=1.0, last_close=1.0, made_at=t9
    )
    assert fill_actuals(api.db, pair=PAIR, candles=[(t9, 102.0), (t10, 101.0), (t11, 100.5)]) == 4


def test_records_need_a_token(api: Api) -> None:
    track_record_fixture(api)
    for url in (f"/v1/track-record/{PAIR}", f"/v1/monitoring/{PAIR}"):
        for headers in ({}, auth("mur_not-a-real-token-at-all"), {"Authorization": "Basic dXNlcjpwdw=="}):
            response = api.client.get(url, headers=headers)
            assert_error(response, 401, "unauthorized")
            assert response.headers["WWW-Authenticate"] == "Bearer"


def test_monitoring_uses_no_quota(api: Api) -> None:
    user_id, token = api.user(quota=1)
    for _ in range(3):  # more calls than the quota allows forecasts
        assert_error(api.client.get(f"/v1/monitoring/{PAIR}", headers=auth(token)), 404, "not_found")
    assert api.usage(user_id) == 0 and api.forecaster.calls == 0


def test_track_record_uses_no_quota(api: Api) -> None:
    track_record_fixture(api)
    user_id, token = api.user(quota=1)
    assert api.usage(user_id) == 0
    for _ in range(3):  # more calls than the quota allows forecasts
        response = api.client.get(f"/v1/track-record/{PAIR}", headers=auth(token))
        assert response.status_code == 200, response.text
        assert "X-RateLimit-Remaining" not in response.headers
    assert api.usage(user_id) == 0 and api.forecaster.calls == 0


def test_track_record_shape_and_exact_numbers(api: Api) -> None:
    track_record_fixture(api)
    _, token = api.user()
    response = api.client.get(f"/v1/track-record/{PAIR}", headers=auth(token))
    assert response.status_code == 200, response.text
    body = response.json()
    assert {"pair", "as_of", "pending", "resolved", "summary"} <= set(body)  # issue 25 added fields
    assert body["pair"] == PAIR and body["as_of"] == "2025-03-01T12:00:00Z" and body["pending"] == 2
    assert body["overdue"] == 0 and body["resolved_total"] == 4
    assert [(u["status"], u["close_time"]) for u in body["unresolved"]] == [
        ("pending", "2025-03-01T15:00:00Z"),
        ("pending", "2025-03-01T13:00:00Z"),
    ]
    rows = body["resolved"]
    assert [(r["target_time"], r["horizon_hours"]) for r in rows] == [
        ("2025-03-01T11:00:00Z", 1),
        ("2025-03-01T11:00:00Z", 4),
        ("2025-03-01T10:00:00Z", 1),
        ("2025-03-01T09:00:00Z", 1),
    ]
    assert rows[0] == {
        "made_at": "2025-03-01T10:02:00Z",
        "target_time": "2025-03-01T11:00:00Z",
        "close_time": "2025-03-01T12:00:00Z",
        "horizon_hours": 1,
        "model_version": "7",
        "predicted": 100.0,
        "actual": 100.5,
        "last_close": 101.0,
        "error": -0.5,
        "persistence_error": 0.5,
        "lower": None,
        "upper": None,
        "level": None,
        "inside": None,
        "source": "live",  # ?source=backtest: tests/serve/test_backtest_api.py
    }
    assert rows[1]["made_at"] == "2025-03-01T07:02:00Z"
    assert [(r["error"], r["persistence_error"], r["inside"]) for r in rows] == [
        (-0.5, 0.5, None),
        (3.5, -0.5, True),
        (2.0, 1.0, False),
        (-1.0, -2.0, True),
    ]
    assert [(r["lower"], r["upper"], r["level"]) for r in rows[1:]] == [
        (95.0, 105.0, 0.8),
        (101.5, 104.5, 0.9),
        (99.0, 103.0, 0.9),
    ]
    summary = body["summary"]
    assert set(summary) == {"n", "mae_model", "mae_persistence", "skill", "coverage", "level", "by_horizon"}
    assert summary["n"] == 4
    assert summary["mae_model"] == pytest.approx(1.75) and summary["mae_persistence"] == pytest.approx(1.0)
    assert summary["skill"] == pytest.approx(-0.75)
    assert summary["coverage"] == pytest.approx(2 / 3) and summary["level"] == pytest.approx(0.9)
    one, four = summary["by_horizon"]["1"], summary["by_horizon"]["4"]
    assert set(summary["by_horizon"]) == {"1", "4"}
    assert one["n"] == 3 and one["mae_model"] == pytest.approx(3.5 / 3)
    assert one["mae_persistence"] == pytest.approx(3.5 / 3) and one["skill"] == pytest.approx(0.0)
    assert one["coverage"] == 0.5 and one["level"] == pytest.approx(0.9)
    assert four == {
        "n": 1,
        "mae_model": 3.5,
        "mae_persistence": 0.5,
        "skill": -6.0,
        "coverage": 1.0,
        "level": 0.8,
    }

    # the pair's name is normalized; the forecaster's own pair has one pending forecast, no resolved one
    assert api.client.get("/v1/track-record/BTC-USDT", headers=auth(token)).json() == body
    empty = api.client.get(f"/v1/track-record/{FORECASTER_PAIR}", headers=auth(token)).json()
    assert empty["resolved"] == [] and empty["pending"] == 1 and empty["summary"]["n"] == 0
    assert empty["summary"]["skill"] is None and empty["summary"]["by_horizon"] == {}


def test_track_record_limit_and_horizon(api: Api) -> None:
    track_record_fixture(api)
    _, token = api.user()
    url = f"/v1/track-record/{PAIR}"

    def get(**params: Any) -> dict[str, Any]:
        response = api.client.get(url, params=params, headers=auth(token))
        assert response.status_code == 200, response.text
        return response.json()

    latest = get(limit=2)
    assert [(r["target_time"], r["horizon_hours"]) for r in latest["resolved"]] == [
        ("2025-03-01T11:00:00Z", 1),
        ("2025-03-01T11:00:00Z", 4),
    ]
    assert latest["summary"]["n"] == 2 and latest["pending"] == 2  # pending counts every horizon, any limit

    four = get(horizon=4)
    assert [(r["target_time"], r["horizon_hours"]) for r in four["resolved"]] == [("2025-03-01T11:00:00Z", 4)]
    assert four["summary"]["n"] == 1 and set(four["summary"]["by_horizon"]) == {"4"}

    one = get(horizon=1, limit=2)
    assert [r["target_time"] for r in one["resolved"]] == ["2025-03-01T11:00:00Z", "2025-03-01T10:00:00Z"]
    assert one["summary"]["mae_model"] == pytest.approx(1.25) and one["summary"]["coverage"] == 0.0
    assert get(horizon=2)["resolved"] == [] and get(limit=1000)["summary"]["n"] == 4


def test_track_record_limit_and_horizon_bounds_are_422_json(api: Api) -> None:
    _, token = api.user()
    url = f"/v1/track-record/{PAIR}"
    bad = ({"limit": 0}, {"limit": 5000}, {"limit": -1}, {"limit": "x"}, {"horizon": 0}, {"to": "oops"})
    for params in (*bad, {"from": 137457406}, {"from": "8.5e-241"}):  # a number is not read as Unix seconds
        body = assert_error(api.client.get(url, params=params, headers=auth(token)), 422, "invalid_request")
        assert body["message"].startswith(f"query.{next(iter(params))}:"), body


def test_unknown_pair_monitoring_is_404_json(api: Api) -> None:
    _, token = api.user()
    body = assert_error(api.client.get("/v1/monitoring/doge_usdt", headers=auth(token)), 404, "unknown_pair")
    assert "doge_usdt" in body["message"]
    assert_error(api.client.get("/v1/monitoring/not-a-pair!", headers=auth(token)), 404, "unknown_pair")


def test_unknown_pair_track_record_is_404_json(api: Api) -> None:
    _, token = api.user()
    body = assert_error(
        api.client.get("/v1/track-record/doge_usdt", headers=auth(token)), 404, "unknown_pair"
    )
    assert "doge_usdt" in body["message"]
    assert_error(api.client.get("/v1/track-record/not-a-pair!", headers=auth(token)), 404, "unknown_pair")


def report_of(as_of: str, status: str, **extra: Any) -> MonitoringReport:
    return MonitoringReport(
        pair=PAIR,
        as_of=as_of,
        champion_version="7",
        trained_window={"start": "2025-01-01T00:00:00Z", "end": "2025-02-01T00:00:00Z"},
        status=status,  # type: ignore[arg-type]
        n_resolved=30,
        n_pending=2,
        skill=-0.2,
        mae_model=1.2,
        mae_persistence=1.0,
        coverage=0.6,
        level=0.9,
        thresholds=Thresholds(
            window_hours=48,
            min_resolved=12,
            skill_below=-0.1,
            coverage_below=0.7,
            psi_above=0.25,
            ks_p_below=0.01,
            cooldown_hours=24,
        ),
        **extra,
    )


def test_monitoring_is_404_before_any_report_then_the_latest_with_alerts(api: Api) -> None:
    _, token = api.user()
    url = f"/v1/monitoring/{PAIR}"
    body = assert_error(api.client.get(url, headers=auth(token)), 404, "not_found")
    assert "no monitoring report" in body["message"] and PAIR in body["message"]

    drift = DriftStat(
        feature="abs_log_return",
        psi=0.9,
        ks=0.4,
        ks_p=1e-6,
        reference_mean=0.004,
        recent_mean=0.012,
        n_reference=719,
        n_recent=48,
        drifted=True,
        alerting=True,
    )
    save_report(api.db, report_of("2025-03-01T10:00:00Z", "ok"))
    latest = report_of(
        "2025-03-01T11:00:00Z",
        "alert",
        drift=[drift],
        rolling=[RollingPoint(target_time="2025-03-01T10:00:00Z", n=30, skill=-0.2, coverage=0.6)],
        alerts=["rolling skill -0.200 over 30 resolved forecasts is below -0.10"],
    )
    save_report(api.db, latest)
    alert = record_alert(
        api.db,
        pair=PAIR,
        as_of=datetime(2025, 3, 1, 11, tzinfo=UTC),
        kinds=["skill", "drift:abs_log_return"],
        message="rolling skill -0.200 ...",
        delivered=True,
        retrain_run_id="manual__2025-03-01T11:00:00+00:00",
    )
    record_alert(
        api.db,
        pair="eth_usdt",
        as_of=datetime(2025, 3, 1, 11, tzinfo=UTC),
        kinds=["coverage"],
        message="another pair",
        delivered=False,
        retrain_run_id=None,
    )

    response = api.client.get(url, headers=auth(token))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body.pop("recent_alerts") == [
        {
            "as_of": "2025-03-01T11:00:00Z",
            "kinds": alert.kinds,
            "message": "rolling skill -0.200 ...",
            "delivered": True,
            "retrain_run_id": "manual__2025-03-01T11:00:00+00:00",
        }
    ]
    assert body == latest.model_dump(mode="json")
    assert body["status"] == "alert" and body["as_of"] == "2025-03-01T11:00:00Z"
    assert body["drift"][0]["feature"] == "abs_log_return" and body["thresholds"]["psi_above"] == 0.25


def test_openapi_documents_both_routes(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    for path, schema in (
        ("/v1/track-record/{pair}", "TrackRecordOut"),
        ("/v1/monitoring/{pair}", "MonitoringOut"),
    ):
        assert set(spec["paths"][path]) == {"get"}
        get = spec["paths"][path]["get"]
        assert get["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(schema)
        assert {"401", "404", "422"} <= set(get["responses"])
        assert get.get("security"), get  # bearer token
        assert schema in spec["components"]["schemas"]
    params = {p["name"]: p for p in spec["paths"]["/v1/track-record/{pair}"]["get"]["parameters"]}
    assert set(params) == {"pair", "limit", "horizon", "from", "to", "format", "source"}
    assert spec["paths"]["/v1/track-record/{pair}"]["get"]["summary"].startswith("Track record")
    assert "text/csv" in spec["paths"]["/v1/track-record/{pair}"]["get"]["responses"]["200"]["content"]
    assert params["limit"]["schema"]["minimum"] == 1 and params["limit"]["schema"]["maximum"] == 1000
    resolved = spec["components"]["schemas"]["ResolvedOut"]["properties"]
    assert {
        "made_at",
        "target_time",
        "horizon_hours",
        "predicted",
        "actual",
        "error",
        "persistence_error",
    } <= set(resolved)
    assert "inside" in resolved
