"""The Monitoring page: its render function (fast tier) and the page through the app with reports and an
alert stored in PostgreSQL (services tier, database only)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import plotly.utils
from dash_fakes import monitoring_report
from dash_helpers import logged_in, login, make_user, monitoring_page, page, text_of
from flask.testing import FlaskClient

from dash_app.monitoring_charts import NO_REPORT
from dash_app.pages.monitoring import OUTPUT_IDS, render
from mur.db import Database
from mur.monitoring.store import AlertRow, record_alert, save_report

AS_OF = datetime(2024, 11, 5, 12, tzinfo=UTC)


def as_json(value: Any) -> Any:
    """A component tree (or figure) as Dash sends it to the browser."""
    return json.loads(json.dumps(value, cls=plotly.utils.PlotlyJSONEncoder))


def alert_row(**changes: Any) -> AlertRow:
    fields: dict[str, Any] = {
        "id": 1,
        "pair": "btc_usdt",
        "as_of": AS_OF,
        "created_at": datetime(2026, 11, 22, 16, tzinfo=UTC),
        "kinds": ["skill", "drift"],
        "message": "BTC_USDT: rolling skill -0.080 below -0.05; log_volume drifted",
        "delivered": True,
        "retrain_run_id": "monitoring__btc_usdt__2024-11-05T12",
    }
    return AlertRow(**{**fields, **changes})


def rendered(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return dict(zip(OUTPUT_IDS, as_json(list(render(*args, **kwargs))), strict=True))


# ------------------------------------------------------------------------------------------------
# Fast: render()
# ------------------------------------------------------------------------------------------------


def test_render_an_ok_report_in_plain_language() -> None:
    history = [
        monitoring_report(as_of="2024-11-05T11:00:00Z", skill=0.01),
        monitoring_report(as_of="2024-11-05T12:00:00Z", skill=0.042, coverage=0.88, n_resolved=120),
    ]
    out = rendered("btc_usdt", history, [], market_now=AS_OF)
    status = text_of(out["monitoring-status"])
    assert "OK" in status and "doing its job" in status
    summary = text_of(out["monitoring-summary"])
    assert "As of market hour 2024-11-05 12:00 UTC" in summary
    assert "The model beat persistence" in summary and "4.2% smaller" in summary and "n = 120" in summary
    assert "88.0% of the actual closes fell inside" in summary and "nominal 90%" in summary
    assert "3 forecast(s) of any horizon waiting for their candle" in summary
    assert "no input drifted" in summary
    assert "market hours old" not in summary  # fresh
    assert [t["name"] for t in out["monitoring-rolling"]["data"]][0] == "rolling skill"
    assert out["monitoring-rolling"]["data"][0]["y"] == [0.01, 0.042]
    assert "No alert raised" in text_of(out["monitoring-alerts"])
    thresholds = text_of(out["monitoring-thresholds"])
    assert "skill_below" in thresholds and "-0.05" in thresholds and "coverage_below" in thresholds
    assert "psi_above" in thresholds and "0.25" in thresholds and "cooldown_hours" in thresholds


def test_render_an_alert_with_drift_and_the_alerts_list() -> None:
    report = monitoring_report(
        as_of="2024-11-05T12:00:00Z",
        status="alert",
        skill=-0.08,
        coverage=0.7,
        drifted=("log_volume",),
        alerts=("rolling skill -0.080 below -0.05", "coverage 70% below 80%"),
    )
    alerts = [alert_row(), alert_row(id=2, delivered=False, retrain_run_id=None, kinds=["coverage"])]
    out = rendered("btc_usdt", [report], alerts, market_now=datetime(2024, 11, 5, 18, 30, tzinfo=UTC))
    status = text_of(out["monitoring-status"])
    assert "Alert" in status and "threshold is crossed" in status
    summary = text_of(out["monitoring-summary"])
    assert (
        "did not beat persistence" in summary
        and "-8.0%" in summary
        and "below the alert threshold" in summary
    )
    assert "70.0% of the actual closes" in summary and "below the alert threshold 80%" in summary
    assert "log_volume drifted" in summary and "rolling skill -0.080 below -0.05" in summary
    assert "6 market hours old" in summary  # stale: market now is 6.5 h later
    drift_rows = text_of(out["monitoring-drift-table"])
    assert "log_volume" in drift_rows and "drifted" in drift_rows and "0.61" in drift_rows
    listed = text_of(out["monitoring-alerts"])
    assert "2024-11-05 12:00 UTC" in listed and "skill, drift" in listed and "log_volume drifted" in listed
    assert "delivered" in listed and "not delivered" in listed
    assert "monitoring__btc_usdt__2024-11-05T12" in listed
    colors = out["monitoring-drift"]["data"][0]["marker"]["color"]
    assert colors[-1] != colors[0]  # the drifted input stands out


def test_render_insufficient_data() -> None:
    report = monitoring_report(status="insufficient_data", skill=None, coverage=None, n_resolved=5)
    out = rendered("eth_usdt", [report], [])
    assert "Insufficient data" in text_of(out["monitoring-status"])
    summary = text_of(out["monitoring-summary"])
    assert "No skill figure yet: 5 resolved" in summary and "24 needed" in summary
    assert "No coverage figure yet" in summary


def test_render_before_any_report() -> None:
    out = rendered("btc_usdt", [], [])
    assert NO_REPORT in text_of(out["monitoring-status"])
    assert NO_REPORT in text_of(out["monitoring-summary"])
    assert out["monitoring-rolling"]["layout"]["annotations"][0]["text"] == NO_REPORT
    assert out["monitoring-drift"]["layout"]["annotations"][0]["text"] == NO_REPORT
    assert "No alert raised" in text_of(out["monitoring-alerts"])


def test_render_the_online_calibration_table() -> None:
    from mur.monitoring.report import CalibrationRow

    rows = [
        CalibrationRow(
            horizon_hours=h,
            generation="levels=0.05,0.5,0.95;offline=block-conformal-120",
            level=0.9,
            scale=scale,
            resolved=n,
            coverage=cov,
            coverage_without_scale=base,
            skill_vs_without_scale=skill,
        )
        for h, scale, n, cov, base, skill in [
            (24, 1.184, 300, 0.897, 0.853, 0.041),
            (1, 0.962, 420, 0.902, 0.91, 0.01),
        ]
    ]
    report = monitoring_report().model_copy(update={"online_calibration": rows})
    table = text_of(rendered("btc_usdt", [report], [])["monitoring-calibration"])
    assert table.index("1 h") < table.index("24 h")  # by horizon
    for expected in (
        "90%",
        "85.3%",
        "89.7%",
        "1.184",
        "300",
        "+4.1%",
        "0.962",
        "Applied to the served ranges",
    ):
        assert expected in table, (expected, table)
    off = text_of(rendered("btc_usdt", [report], [], online=False)["monitoring-calibration"])
    assert "MUR_ONLINE_CALIBRATION=false" in off
    none = text_of(rendered("btc_usdt", [monitoring_report()], [])["monitoring-calibration"])
    assert "No resolved forecast has stepped the online calibration yet" in none


# ------------------------------------------------------------------------------------------------
# Services tier (PostgreSQL only): the page through the app
# ------------------------------------------------------------------------------------------------


def test_monitoring_page_shows_stored_reports_and_alerts(
    client: FlaskClient, dash_database: Database
) -> None:
    assert client.get("/monitoring").status_code == 302  # logged out: to the login page
    member = make_user(dash_database)
    back = login(client, member.username, next_page="/monitoring")
    assert back.status_code == 302 and back.headers["Location"].endswith("/monitoring")
    logged_in(client, member)
    assert client.get("/monitoring").status_code == 200

    shell = page(client, "/monitoring")
    nav = text_of(shell["navbar"])
    assert nav.index("API") < nav.index("Monitoring")  # Admin is not shown to a member
    assert "monitoring-pair" in json.dumps(shell["page-content"])

    # before any report: a message, not an error
    empty = monitoring_page(client, "eth_usdt")
    assert NO_REPORT in text_of(empty["monitoring-status"])

    save_report(dash_database, monitoring_report(as_of="2024-11-05T11:00:00Z", skill=0.03, coverage=0.9))
    save_report(
        dash_database,
        monitoring_report(
            as_of="2024-11-05T12:00:00Z",
            status="alert",
            skill=-0.08,
            coverage=0.72,
            drifted=("abs_log_return",),
            alerts=("rolling skill -0.080 below -0.05",),
        ),
    )
    record_alert(
        dash_database,
        pair="btc_usdt",
        as_of=AS_OF,
        kinds=["skill", "drift"],
        message="BTC_USDT needs attention: skill -0.080, abs_log_return drifted",
        delivered=False,
        retrain_run_id="monitoring__btc_usdt__1",
    )
    out = monitoring_page(client, "btc_usdt", n_intervals=1)
    assert "Alert" in text_of(out["monitoring-status"])
    summary = text_of(out["monitoring-summary"])
    assert "did not beat persistence" in summary and "72.0% of the actual closes" in summary
    assert "abs_log_return drifted" in summary
    rolling = out["monitoring-rolling"]["figure"]
    skill = next(t for t in rolling["data"] if t["name"] == "rolling skill")
    assert skill["y"] == [0.03, -0.08]
    alerts = text_of(out["monitoring-alerts"])
    assert "BTC_USDT needs attention" in alerts and "not delivered" in alerts
    assert "monitoring__btc_usdt__1" in alerts
    assert "window_hours" in text_of(out["monitoring-thresholds"])

    unknown = monitoring_page(client, "../../etc")
    assert "Pick one of the listed pairs" in text_of(unknown["monitoring-status"])


def test_monitoring_page_when_the_database_fails(
    client: FlaskClient, dash_database: Database, monkeypatch
) -> None:
    from dash_app.pages import monitoring
    from mur.errors import DatabaseError

    logged_in(client, make_user(dash_database))

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise DatabaseError("cannot connect to PostgreSQL at 127.0.0.1:5432/secret_db: refused")

    monkeypatch.setattr(monitoring, "report_history", broken)
    out = monitoring_page(client, "btc_usdt")
    status = text_of(out["monitoring-status"])
    assert "cannot be read right now" in status and "secret_db" not in status
