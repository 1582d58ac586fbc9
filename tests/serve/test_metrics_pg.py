"""``GET /metrics`` in-process over the real PostgreSQL: the forecasts recorded/resolved and the rolling skill
and coverage come from the ``forecasts`` and ``monitoring_reports`` tables (mur/monitoring/store.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from api_fakes import PAIR, VERSION, Api, auth, running_api
from prometheus_client.parser import text_string_to_metric_families

from mur.monitoring.report import MonitoringReport, Thresholds
from mur.monitoring.store import forecast_counts, save_report
from mur.settings import Settings
from mur.waiting import wait_until

THRESHOLDS = Thresholds(
    window_hours=168,
    min_resolved=24,
    skill_below=0.0,
    coverage_below=0.8,
    psi_above=0.25,
    ks_p_below=0.01,
    cooldown_hours=24,
)


@pytest.fixture
def api(pg_settings: Settings) -> Iterator[Api]:
    with running_api(pg_settings) as api:
        yield api


def scrape(api: Api) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = api.client.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_database_series_come_from_postgresql(api: Api) -> None:
    _, token = api.user()
    assert api.client.get(f"/v1/forecast/{PAIR}", headers=auth(token)).status_code == 200
    wait_until(  # recorded off the request path
        lambda: PAIR in forecast_counts(api.db), what="the forecast recorded", timeout_s=10, interval_s=0.1
    )
    pair = f"m{uuid.uuid4().hex[:6]}_usdt"  # its own pair: the session's database is shared
    report = MonitoringReport(
        pair=pair,
        as_of="2025-06-01T12:00:00Z",
        status="ok",
        n_resolved=30,
        skill=0.2,
        coverage=0.9,
        thresholds=THRESHOLDS,
    )
    save_report(api.db, report)

    scraped = scrape(api)
    counts = forecast_counts(api.db)
    assert scraped[("mur_metrics_db_up", frozenset())] == 1
    for name, (recorded, resolved) in counts.items():
        assert scraped[("mur_forecasts_recorded_total", frozenset({("pair", name)}))] == recorded
        assert scraped[("mur_forecasts_resolved_total", frozenset({("pair", name)}))] == resolved
    assert counts[PAIR][0] >= 1
    assert scraped[("mur_rolling_skill", frozenset({("pair", pair)}))] == 0.2
    assert scraped[("mur_rolling_coverage", frozenset({("pair", pair)}))] == 0.9
    assert scraped[("mur_served_model_version", frozenset({("pair", PAIR)}))] == VERSION
    key = {("route", "/v1/forecast/{pair}"), ("method", "GET"), ("status", "200"), ("replica", "r1")}
    assert scraped[("mur_http_requests_total", frozenset(key))] == 1
