"""Numbers, axes and small things people read (issue 25 #7, #9, #4 of its list): skills as signed
percentages (never ``-0.0%``), MAPE in percent, persistence's direction "n/a", p-values without SI prefixes,
threshold lists as words, a labelled drift column, a time axis in hours for one report, the registry's
``champion`` alias only where it is, the endpoints list, tab titles and the favicon."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from dash_fakes import horizon_metrics
from dash_helpers import text_of

from dash_app.components import _metric_cell, fmt_signed_pct, horizon_table, metrics_table
from dash_app.layout import NAV_ITEMS, TITLE_SCRIPT
from dash_app.monitoring_charts import drift_figure, rolling_figure
from dash_app.pages.admin import alias_cell
from dash_app.pages.api import ENDPOINTS
from dash_app.pages.forecast import _signed_pct
from dash_app.pages.monitoring import _threshold_value, drift_table, fmt_p_value
from mur.monitoring.report import DriftStat, MonitoringReport, Thresholds
from mur.serving.contract import ModelOut

THRESHOLDS = Thresholds(
    window_hours=48,
    min_resolved=12,
    skill_below=-0.1,
    coverage_below=0.7,
    psi_above=1.0,
    ks_p_below=1e-4,
    alert_features=["abs_log_return"],
    cooldown_hours=24,
)


def test_skills_and_metrics_read_as_percentages() -> None:
    assert fmt_signed_pct(0.0001233, 2) == "+0.01%"
    assert fmt_signed_pct(-0.0001, 1) == "0.0%" and fmt_signed_pct(-0.012) == "-1.2%"
    assert fmt_signed_pct(None) == "–"
    assert _signed_pct(-0.0000001) == "unchanged to 0.001%" and _signed_pct(0.01) == "+1.000%"
    assert _metric_cell("model", "mape", 0.29252) == "0.29%"
    assert _metric_cell("persistence", "directional_accuracy", 0.0) == "n/a (no change)"
    assert _metric_cell("model", "directional_accuracy", 0.0) == "n/a (no change)"  # median = last close
    assert _metric_cell("model", "directional_accuracy", 0.5) == "50.0%"
    assert _metric_cell("model", "directional_accuracy", 0.55) == "55.0%"
    model = ModelOut.model_validate(
        {
            "pair": "btc_usdt",
            "loaded": True,
            "version": 3,
            "metrics": {
                "model": {"mae": 101.5, "rmse": 150.0, "mape": 0.29252, "directional_accuracy": 0.55},
                "persistence": {"mae": 110.0, "rmse": 160.0, "mape": 0.31, "directional_accuracy": 0.0},
                "horizons": [
                    horizon_metrics(
                        hours=1,
                        skill=0.0001233,
                        coverage=0.904,
                        interval_skill=-0.0004,
                        interval_skill_vs_ewma=0.0,
                    )
                ],
            },
        }
    )
    table = text_of(metrics_table(model).to_plotly_json())
    assert "0.29%" in table and "n/a (no change)" in table and "0.29252" not in table
    horizons = text_of(horizon_table(model).to_plotly_json())
    assert "+0.01%" in horizons and "90.4%" in horizons and "0.0001233" not in horizons
    assert "-0.0%" not in horizons and "0.0%" in horizons


def report(n_points: int = 1) -> list[MonitoringReport]:
    start = datetime(2024, 11, 4, 6, tzinfo=UTC)
    drift = [
        DriftStat(
            feature="abs_log_return",
            psi=0.0024000015,
            ks=0.2,
            ks_p=1e-4,
            reference_mean=0.002,
            recent_mean=0.003,
            n_reference=720,
            n_recent=48,
            drifted=False,
        )
    ]
    return [
        MonitoringReport(
            pair="btc_usdt",
            as_of=(start + timedelta(hours=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            status="ok",
            n_resolved=20,
            skill=0.01,
            coverage=0.9,
            level=0.9,
            drift=drift,
            thresholds=THRESHOLDS,
        )
        for i in range(n_points)
    ]


def test_monitoring_numbers_and_axes() -> None:
    assert fmt_p_value(1e-4) == "1.0e-04" and fmt_p_value(0.031) == "0.031" and fmt_p_value(0) == "< 1e-300"
    assert _threshold_value(["abs_log_return"]) == "abs_log_return" and _threshold_value(1e-4) == "0.0001"
    header = drift_table(report()[0]).to_plotly_json()["props"]["children"][0]
    assert "" not in [th for th in text_of(header).split("  ")] and "drift" in text_of(header)
    figure = rolling_figure(report(1), pair="btc_usdt")
    span = [datetime.fromisoformat(str(x)) for x in figure.layout.xaxis.range]
    assert span[1] - span[0] == timedelta(hours=6)  # one report: an axis of hours, not of milliseconds
    assert figure.layout.xaxis.tickformat == "%b %d %H:%M" and figure.layout.yaxis.tickformat == "+.2f"
    assert rolling_figure(report(5), pair="btc_usdt").layout.xaxis.range is None
    drift = drift_figure(report()[0])
    assert drift.layout.yaxis2.exponentformat == "power" and drift.layout.yaxis.tickformat == ".2f"


def test_the_version_table_shows_the_registry_alias_only() -> None:
    assert alias_cell(["champion"]) == "champion"
    assert alias_cell([]) == "–"  # a version promoted once keeps the gate's tag, not the alias


def test_tab_titles_and_endpoints(client: Any) -> None:
    assert '|| "/forecast"] || "Forecast") + " · Make Us Rich"' in TITLE_SCRIPT
    assert all(f"'{path}': '{label}'" in TITLE_SCRIPT for path, label in NAV_ITEMS)
    from serve_app.api import create_api
    from serve_app.service import ApiService

    class NoDb:
        settings = None

    class NoRegistry:
        async def snapshot(self) -> dict[str, Any]:
            return {}

        async def refresh(self) -> dict[str, Any]:
            return {}

    service = ApiService(db=NoDb(), forecasters={}, registry=NoRegistry(), window=8)  # type: ignore[arg-type]
    try:
        routes = {
            (method, path) for path, item in create_api(service).openapi()["paths"].items() for method in item
        }
    finally:
        service._pool.shutdown(wait=False)
    listed = {(m.lower(), p) for m, p, _ in ENDPOINTS if p.startswith("/v1")}
    assert listed == {(m, p) for m, p in routes if p.startswith("/v1")}
    icon = client.get("/_favicon.ico")
    assert icon.status_code == 200 and len(icon.data) > 1000
    login = client.get("/login").get_data(as_text=True)
    assert 'rel="icon"' in login
