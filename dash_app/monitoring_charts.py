"""Figures for the Monitoring page (pure: monitoring reports in, plotly figures out).

* :func:`rolling_figure`: the rolling skill vs persistence and the rolling coverage of the ranges over market
  time, one point per stored report (``as_of``), with the 0-skill and nominal-level references and the alert
  thresholds;
* :func:`drift_figure`: per input, the latest report's PSI and KS p-value against their thresholds, drifted
  inputs highlighted.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dash_app.charts import empty_figure, styled
from mur.monitoring.report import MonitoringReport
from mur.timeutil import HOUR

SKILL_COLOR = "#d62728"
COVERAGE_COLOR = "#ff7f0e"
REFERENCE_COLOR = "gray"
THRESHOLD_COLOR = "#d92d20"
DRIFTED_COLOR = "#d92d20"
STEADY_COLOR = "#98a2b3"
NO_REPORT = "No monitoring report yet: the monitoring task runs every market hour."


def parse_as_of(value: str) -> datetime:
    """A report's ``as_of`` (ISO-8601, ``Z`` allowed) as an aware UTC datetime."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def rolling_figure(history: Sequence[MonitoringReport], *, pair: str) -> go.Figure:
    """Rolling skill vs persistence (top, with the 0-skill line and the skill alert threshold) and rolling
    coverage of the ranges (bottom, with the nominal level and the coverage alert threshold) over market
    time; a blank chart saying so when there is no report yet."""
    if not history:
        return empty_figure(NO_REPORT)
    reports = sorted(history, key=lambda r: parse_as_of(r.as_of))  # the store gives them oldest first already
    times, thresholds = [parse_as_of(r.as_of) for r in reports], reports[-1].thresholds
    figure = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.12,
        subplot_titles=("rolling skill vs persistence", "rolling coverage of the range"),
    )
    level = next((r.level for r in reversed(reports) if r.level is not None), None)  # the latest known
    nominal = [(level, f"nominal level {level:.0%}", REFERENCE_COLOR, "dash")] if level is not None else []
    skill_below, coverage_below = thresholds.skill_below, thresholds.coverage_below
    skill_refs = [
        (0.0, "no skill (0)", REFERENCE_COLOR, "dash"),
        (skill_below, f"skill alert below {skill_below:+g}", THRESHOLD_COLOR, "dot"),
    ]
    coverage_refs = [
        *nominal,
        (coverage_below, f"coverage alert below {coverage_below:.0%}", THRESHOLD_COLOR, "dot"),
    ]
    panels: list[tuple[int, str, str, str, list[tuple[float, str, str, str]]]] = [
        (1, "skill", SKILL_COLOR, "skill %{y:+.3f}", skill_refs),
        (2, "coverage", COVERAGE_COLOR, "coverage %{y:.1%}", coverage_refs),
    ]
    for row, name, color, hover, references in panels:
        figure.add_trace(
            go.Scatter(
                x=times,
                y=[getattr(r, name) for r in reports],
                mode="lines+markers",
                name=f"rolling {name}",
                line={"color": color},
                customdata=[r.n_resolved for r in reports],
                hovertemplate=f"%{{x}}<br>{hover}<br>n = %{{customdata}}<extra></extra>",
            ),
            row=row,
            col=1,
        )
        for value, label, line_color, dash in references:  # a trace across the chart: it shows in the legend
            reference = go.Scatter(
                x=[times[0], times[-1]],
                y=[value, value],
                mode="lines",
                name=label,
                line={"color": line_color, "dash": dash, "width": 1},
                hoverinfo="skip",
            )
            figure.add_trace(reference, row=row, col=1)
    figure.update_yaxes(tickformat=".0%", row=2, col=1)
    figure.update_yaxes(tickformat="+.2f", row=1, col=1)
    # a market-time axis that reads as hours: whole-hour ticks, and with one point a six-hour span around it
    # (plotly would otherwise zoom to milliseconds: 05:59:59.999)
    figure.update_xaxes(tickformat="%b %d %H:%M", hoverformat="%Y-%m-%d %H:%M UTC")
    if len(times) == 1:
        figure.update_xaxes(range=[times[0] - 3 * HOUR, times[0] + 3 * HOUR])
    return styled(figure, f"{pair.upper()} rolling skill and coverage (market time)", 520, legend_y=-0.15)


def drift_figure(report: MonitoringReport) -> go.Figure:
    """Per input: PSI (left, alert threshold dotted) and KS p-value (right, log scale, threshold dotted) of
    ``report``; drifted inputs in red, the others grey."""
    if not report.drift:
        return empty_figure("no drift statistics in the latest report")
    features = [d.feature for d in report.drift]
    colors = [DRIFTED_COLOR if d.drifted else STEADY_COLOR for d in report.drift]
    status = ["drifted" if d.drifted else "steady" for d in report.drift]
    thresholds = report.thresholds
    figure = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.12,
        subplot_titles=(
            f"PSI (alert above {thresholds.psi_above:g})",
            f"KS p-value (alert below {thresholds.ks_p_below:g})",
        ),
    )
    panels = (
        (1, "PSI", [d.psi for d in report.drift], "PSI %{y:.3f}", thresholds.psi_above),
        (2, "KS p-value", [max(d.ks_p, 1e-300) for d in report.drift], "p = %{y:.3g}", thresholds.ks_p_below),
    )
    for col, name, values, hover, threshold in panels:
        figure.add_trace(
            go.Bar(
                x=features,
                y=values,
                name=name,
                marker={"color": colors},
                customdata=status,
                hovertemplate=f"%{{x}}: {hover} (%{{customdata}})<extra></extra>",
            ),
            row=1,
            col=col,
        )
        figure.add_hline(y=threshold, line_dash="dot", line_color=THRESHOLD_COLOR, row=1, col=col)
    figure.update_yaxes(type="log", exponentformat="power", row=1, col=2)  # 10^-4, never "100μ"
    figure.update_yaxes(tickformat=".2f", row=1, col=1)
    title = f"{report.pair.upper()} input drift at {report.as_of} (recent hours vs training window)"
    return styled(figure, title, 360, top=80, showlegend=False)
