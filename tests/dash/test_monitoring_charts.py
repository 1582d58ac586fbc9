"""The Monitoring page's figures (fast tier: reports in, plotly figures out)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from dash_fakes import MONITOR_THRESHOLDS, monitoring_report

from dash_app.monitoring_charts import (
    DRIFTED_COLOR,
    NO_REPORT,
    STEADY_COLOR,
    drift_figure,
    rolling_figure,
)


def traces(figure: Any) -> dict[str, Any]:
    return {trace.name: trace for trace in figure.data}


def test_rolling_figure_is_in_market_time_order() -> None:
    later = monitoring_report(as_of="2024-11-05T11:00:00Z", skill=-0.1, coverage=0.7, n_resolved=30)
    earlier = monitoring_report(as_of="2024-11-05T10:00:00Z", skill=0.05, coverage=0.9, n_resolved=29)
    by_name = traces(rolling_figure([later, earlier], pair="btc_usdt"))
    skill, coverage = by_name["rolling skill"], by_name["rolling coverage"]
    assert list(skill.x) == [
        datetime(2024, 11, 5, 10, tzinfo=UTC),
        datetime(2024, 11, 5, 11, tzinfo=UTC),
    ]
    assert list(skill.y) == [0.05, -0.1] and list(coverage.y) == [0.9, 0.7]
    assert list(skill.customdata) == [29, 30]
    assert "nominal level 90%" in by_name


def test_rolling_figure_draws_skill_coverage_and_references() -> None:
    history = [
        monitoring_report(as_of="2024-11-05T10:00:00Z", skill=0.05, coverage=0.91),
        monitoring_report(
            as_of="2024-11-05T11:00:00Z", skill=None, coverage=None, status="insufficient_data"
        ),
        monitoring_report(as_of="2024-11-05T12:00:00Z", skill=-0.08, coverage=0.75, status="alert"),
    ]
    figure = rolling_figure(history, pair="btc_usdt")
    by_name = traces(figure)
    skill, coverage = by_name["rolling skill"], by_name["rolling coverage"]
    assert list(skill.y) == [0.05, None, -0.08] and list(coverage.y) == [0.91, None, 0.75]
    assert list(skill.customdata) == [120, 120, 120]  # n in the hover
    assert [t.isoformat() for t in skill.x] == [
        "2024-11-05T10:00:00+00:00",
        "2024-11-05T11:00:00+00:00",
        "2024-11-05T12:00:00+00:00",
    ]
    zero, level = by_name["no skill (0)"], by_name["nominal level 90%"]
    assert list(zero.y) == [0.0, 0.0] and list(level.y) == [0.9, 0.9]
    assert list(level.x) == [skill.x[0], skill.x[-1]]
    skill_alert = by_name[f"skill alert below {MONITOR_THRESHOLDS['skill_below']:+g}"]
    assert list(skill_alert.y) == [MONITOR_THRESHOLDS["skill_below"]] * 2
    assert list(by_name["coverage alert below 80%"].y) == [0.8, 0.8]
    assert skill.yaxis == "y" and coverage.yaxis == "y2"  # skill on top, coverage below
    assert "BTC_USDT" in figure.layout.title.text


def test_rolling_figure_without_reports_says_so() -> None:
    figure = rolling_figure([], pair="btc_usdt")
    assert not figure.data
    assert figure.layout.annotations[0].text == NO_REPORT


def test_drift_figure_highlights_drifted_inputs_and_draws_thresholds() -> None:
    report = monitoring_report(drifted=("log_volume",), status="alert")
    figure = drift_figure(report)
    psi, ks_p = traces(figure)["PSI"], traces(figure)["KS p-value"]
    assert list(psi.x) == ["abs_log_return", "log_range", "log_volume"]
    assert list(psi.y) == [0.03, 0.03, 0.61]
    assert list(ks_p.y) == pytest.approx([0.42, 0.42, 1e-6])
    assert list(psi.marker.color) == [STEADY_COLOR, STEADY_COLOR, DRIFTED_COLOR]
    assert list(ks_p.marker.color) == [STEADY_COLOR, STEADY_COLOR, DRIFTED_COLOR]
    lines = sorted(shape.y0 for shape in figure.layout.shapes)
    assert lines == [MONITOR_THRESHOLDS["ks_p_below"], MONITOR_THRESHOLDS["psi_above"]]
    assert figure.layout.yaxis2.type == "log"


def test_drift_figure_without_statistics() -> None:
    bare = monitoring_report().model_copy(update={"drift": []})
    assert "no drift statistics" in drift_figure(bare).layout.annotations[0].text
