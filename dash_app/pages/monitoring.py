"""Monitoring page: what the hourly monitoring task found for a pair, in plain language.

Reads ``monitoring_reports`` and ``monitoring_alerts`` (:mod:`mur.monitoring.store`): the latest report's
status, rolling skill vs persistence and coverage of the ranges, the input drift, the champion and its
shadows (:mod:`dash_app.shadows_view`, its own callback), the recent alerts and the thresholds in use; a
chart of the rolling figures over market time. Refreshed every :data:`REFRESH_MS` of wall time. Before the
first report it says so; a database failure is a message. See ``docs/monitoring.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from dash import Dash, Input, Output, dcc, html
from dash.development.base_component import Component
from pydantic import ValidationError

from dash_app import shadows_view
from dash_app.charts import empty_figure
from dash_app.components import (
    Columns,
    card,
    column_table,
    data_table,
    field,
    fmt_number,
    fmt_pct,
    fmt_signed_pct,
    fmt_time,
    muted,
    notice,
    pair_dropdown,
    row,
)
from dash_app.context import DashboardContext, get_context, require_user
from dash_app.monitoring_charts import NO_REPORT, drift_figure, parse_as_of, rolling_figure
from dash_app.track_view import BACKTEST_BELOW, Backtest, backtest_table, backtest_view, baseline_closes
from mur.errors import MurError
from mur.monitoring.report import MonitoringReport, Thresholds
from mur.monitoring.store import AlertRow, latest_alerts, report_history

if TYPE_CHECKING:
    from mur.db import User

logger = logging.getLogger(__name__)

REFRESH_MS = 30_000
HISTORY_LIMIT = 500
ALERTS_LIMIT = 20
STALE_AFTER_HOURS = 2
STATUS_TEXT = {
    "ok": ("ok", "OK", "no threshold is crossed: the model is doing its job."),
    "alert": ("bad", "Alert", "a threshold is crossed (see below)."),
    "insufficient_data": (
        "warn",
        "Insufficient data",
        "too few resolved forecasts in the window to judge the model yet.",
    ),
}
BADGE_STYLE = {
    "ok": {"background": "#ecfdf3", "color": "#027a48", "border": "1px solid #6ce9a6"},
    "bad": {"background": "#fef3f2", "color": "#b42318", "border": "1px solid #fda29b"},
    "warn": {},
}
DRIFT_COLUMNS: Columns = (
    ("input", lambda d: html.Strong(d.feature) if d.drifted else d.feature),
    ("PSI", lambda d: fmt_number(d.psi, 3)),
    ("KS", lambda d: fmt_number(d.ks, 3)),
    ("KS p-value", lambda d: fmt_p_value(d.ks_p)),
    ("training mean", lambda d: fmt_number(d.reference_mean, 4)),
    ("recent mean", lambda d: fmt_number(d.recent_mean, 4)),
    ("n (training / recent)", lambda d: f"{d.n_reference} / {d.n_recent}"),
    ("drift", lambda d: html.Strong("drifted", style={"color": "#d92d20"}) if d.drifted else "steady"),
)
CALIBRATION_COLUMNS: Columns = (
    ("horizon", lambda c: f"{c.horizon_hours} h"),
    ("nominal", lambda c: fmt_pct(c.level, 0)),
    ("coverage, graph's range", lambda c: fmt_pct(c.coverage_without_scale)),
    ("coverage, online", lambda c: fmt_pct(c.coverage)),
    ("scale now", lambda c: f"{c.scale:.3f}"),
    ("n", lambda c: str(c.resolved)),
    ("interval skill of the scale", lambda c: fmt_signed_pct(c.skill_vs_without_scale)),
)
ALERT_COLUMNS: Columns = (
    ("market time", lambda a: fmt_time(a.as_of)),
    ("kinds", lambda a: ", ".join(a.kinds)),
    ("message", lambda a: a.message),
    ("Discord", lambda a: "delivered" if a.delivered else "not delivered"),
    ("retraining run", lambda a: a.retrain_run_id or "–"),
)
OUTPUT_IDS = (
    "monitoring-status",
    "monitoring-summary",
    "monitoring-rolling",
    "monitoring-drift",
    "monitoring-drift-table",
    "monitoring-alerts",
    "monitoring-thresholds",
    "monitoring-calibration",
)


def layout(context: DashboardContext, account: User) -> Component:
    """Pair picker, status, summary, charts, drift table, alerts and thresholds (filled by :func:`update`)."""
    pairs = context.pairs()
    return html.Div(
        [
            dcc.Interval(id="monitoring-refresh", interval=REFRESH_MS, n_intervals=0),
            row(
                field("Pair", pair_dropdown("monitoring-pair", pairs, "220px")),
                html.Div(id="monitoring-status"),
            ),
            card("Latest report", html.Div(id="monitoring-summary")),
            card(
                "Rolling skill and coverage",
                dcc.Graph(id="monitoring-rolling", config={"displaylogo": False}),
            ),
            card(
                "Input drift",
                dcc.Graph(id="monitoring-drift", config={"displaylogo": False}),
                html.Div(id="monitoring-drift-table"),
            ),
            card("Champion and shadows", html.Div(id="monitoring-shadows")),
            card("Online calibration of the ranges", html.Div(id="monitoring-calibration")),
            card("Recent alerts", html.Div(id="monitoring-alerts")),
            card("Thresholds in use", html.Div(id="monitoring-thresholds")),
        ]
    )


# --- Plain-language pieces (pure) ---------------------------------------------------------------------------


def status_block(report: MonitoringReport) -> Component:
    """The status badge with one sentence (ok / alert / insufficient data)."""
    kind, label, sentence = STATUS_TEXT.get(report.status, ("warn", report.status, ""))
    return notice(
        [
            html.Span(
                label, id="monitoring-badge", className=f"badge {kind}", style=BADGE_STYLE.get(kind, {})
            ),
            " ",
            sentence,
        ],
        kind,
        id="monitoring-status-line",
    )


def skill_sentence(report: MonitoringReport) -> str:
    """``The model beat persistence ...`` / ``did not`` / why there is no skill figure."""
    t = report.thresholds
    n = report.n_resolved
    if report.skill is None:
        return (
            f"No skill figure yet: {n} resolved next-hour forecast(s) in the last {t.window_hours} market "
            f"hours, {t.min_resolved} needed."
        )
    maes = (
        f" (MAE {fmt_number(report.mae_model, 5)} vs {fmt_number(report.mae_persistence, 5)})"
        if report.mae_model is not None and report.mae_persistence is not None
        else ""
    )
    if report.skill > 0:
        verdict = (
            f"The model beat persistence ('no change'): its errors were {report.skill:.1%} smaller{maes}"
        )
    else:
        verdict = f"The model did not beat persistence ('no change'): skill {report.skill:+.1%}{maes}"
    below = f"; below the alert threshold {t.skill_below:+g}" if report.skill < t.skill_below else ""
    return f"{verdict} over the last {n} resolved next-hour forecast(s) (n = {n}){below}."


def coverage_sentence(report: MonitoringReport) -> str:
    """How often the actual close fell inside the range, against the nominal level."""
    if report.coverage is None:
        return "No coverage figure yet (no resolved forecast with a range in the window)."
    level = f"the nominal {report.level:.0%}" if report.level is not None else "the nominal level"
    t = report.thresholds
    below = (
        f"; below the alert threshold {t.coverage_below:.0%}" if report.coverage < t.coverage_below else ""
    )
    return (
        f"{report.coverage:.1%} of the actual closes fell inside the forecast range "
        f"(rolling coverage, n = {report.n_resolved}) against {level}{below}."
    )


def summary_block(
    report: MonitoringReport, *, market_now: datetime | None = None, served: str | None = None
) -> Component:
    """The latest report's figures in plain language; ``served``: the version the API serves now, named when
    the report does not know its champion (the registry did not answer the monitoring run)."""
    as_of = parse_as_of(report.as_of)
    window = report.trained_window or {}
    drifted = ", ".join(d.feature for d in report.drift if d.drifted) or "no input"
    lines: list[Any] = [
        html.Span(
            f"As of market hour {fmt_time(as_of)}; champion version {report.champion_version or served or '–'}"
            + (f", trained on {window.get('start') or '?'} → {window.get('end') or '?'}" if window else "")
            + ".",
            id="monitoring-as-of",
        ),
        html.Br(),
        html.Span(skill_sentence(report), id="monitoring-skill"),
        html.Br(),
        html.Span(coverage_sentence(report), id="monitoring-coverage"),
        html.Br(),
        html.Span(
            f"{report.n_pending} forecast(s) of any horizon waiting for their candle to close.",
            id="monitoring-pending",
        ),
        html.Br(),
        html.Span(f"Input drift: {drifted} drifted from the training window.", id="monitoring-drift-summary"),
    ]
    blocks: list[Component] = [html.P(lines)]
    if report.alerts:
        blocks.append(
            html.Div(
                [html.Strong("Thresholds crossed:"), html.Ul([html.Li(a) for a in report.alerts])],
                id="monitoring-report-alerts",
            )
        )
    if market_now is not None:
        behind = (market_now - as_of).total_seconds() / 3600
        if behind >= STALE_AFTER_HOURS:
            blocks.append(
                notice(
                    f"This report is {behind:.0f} market hours old (market time now {fmt_time(market_now)}): "
                    "is the monitoring task running?",
                    "warn",
                    id="monitoring-stale",
                )
            )
    return html.Div(blocks)


def drift_table(report: MonitoringReport) -> Component:
    """Per input: PSI, KS statistic and p-value, the means and sizes, drifted or not."""
    if not report.drift:
        return muted("No drift statistics in this report.")
    return column_table(DRIFT_COLUMNS, report.drift, id="monitoring-drift-rows")


def calibration_block(report: MonitoringReport, *, online: bool = True) -> Component:
    """Per horizon: nominal coverage, running coverage of the graph's own ranges and of the ranges as served
    with the online scale, the scale now, how many resolved forecasts stepped it (docs/forecasts.md)."""
    how = (
        "Each resolved forecast moves its horizon's scale on the ranges' distances from the median: a miss "
        "widens the next ranges, a hit narrows them a little, so misses settle at the nominal share. "
        "Coverage is over every resolved forecast since the tracker started; see docs/forecasts.md."
    )
    state = (
        "Applied to the served ranges."
        if online
        else "Not applied: MUR_ONLINE_CALIBRATION=false (the graph's own ranges are served)."
    )
    rows_in = sorted(report.online_calibration, key=lambda c: c.horizon_hours)
    if not rows_in:
        return muted(
            "No resolved forecast has stepped the online calibration yet: the served ranges are the graph's "
            f"own (scale 1). {state}",
            id="monitoring-no-calibration",
        )
    return html.Div(
        [
            column_table(CALIBRATION_COLUMNS, rows_in, id="monitoring-calibration-rows"),
            muted(f"{state} {how}"),
        ]
    )


def alerts_block(alerts: Sequence[AlertRow]) -> Component:
    """Recent alerts, newest first: market time, kinds, message, Discord delivery, the retraining run."""
    if not alerts:
        return muted("No alert raised for this pair.", id="monitoring-no-alerts")
    return column_table(ALERT_COLUMNS, alerts, id="monitoring-alert-rows")


def fmt_p_value(p: float) -> str:
    """A p-value people read: ``0.031``, ``< 1e-300``, ``2.4e-07`` (never an SI prefix such as ``100μ``)."""
    if p <= 1e-300:
        return "< 1e-300"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _threshold_value(value: object) -> str:
    """A threshold as text: a list of inputs joined (``abs_log_return``), a number as itself."""
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def thresholds_block(thresholds: Thresholds) -> Component:
    """Every threshold with its value and what it means (``MUR_MONITOR_*`` settings)."""
    rows = [
        [name, _threshold_value(getattr(thresholds, name)), info.description or ""]
        for name, info in Thresholds.model_fields.items()
    ]
    return html.Div(
        [
            data_table(["threshold", "value", "meaning"], rows, id="monitoring-threshold-rows"),
            muted(["Set with the MUR_MONITOR_* settings; see ", html.Code("docs/monitoring.md"), "."]),
        ]
    )


def render(
    pair: str,
    history: Sequence[MonitoringReport],
    alerts: Sequence[AlertRow],
    *,
    market_now: datetime | None = None,
    online: bool = True,
    served: str | None = None,
    backtest: Backtest | None = None,
) -> tuple[Any, ...]:
    """The page's outputs (:data:`OUTPUT_IDS` order) for ``pair`` from its reports (oldest first) and
    alerts (newest first); ``online``: whether serving applies the online scale (the setting); ``backtest``:
    the champion's backtest figures, labelled apart under the summary (never in the report or alerts)."""
    alerts_part = alerts_block(alerts)
    extra = [] if backtest is None else [backtest_table(backtest)]
    if not history:
        message = notice(NO_REPORT, "warn", id="monitoring-none")
        none = muted(NO_REPORT)
        blank = empty_figure(NO_REPORT)
        return message, html.Div([none, *extra]), blank, blank, "", alerts_part, none, none
    latest = max(history, key=lambda r: parse_as_of(r.as_of))
    return (
        status_block(latest),
        html.Div([summary_block(latest, market_now=market_now, served=served), *extra]),
        rolling_figure(history, pair=pair),
        drift_figure(latest),
        drift_table(latest),
        alerts_part,
        thresholds_block(latest.thresholds),
        calibration_block(latest, online=online),
    )


def failure(message: str) -> tuple[Any, ...]:
    """Every output when the page cannot be filled: the message, blank charts."""
    blank = empty_figure(message)
    return notice(message, "bad", id="monitoring-error"), "", blank, blank, "", "", "", ""


def update(pair: str | None, _n_intervals: int | None = None) -> tuple[Any, ...]:
    """Everything on the page for ``pair`` (again every :data:`REFRESH_MS`)."""
    account = require_user()
    context = get_context()
    if pair not in context.pairs():
        return failure("Pick one of the listed pairs.")
    try:
        history = report_history(context.db, pair, limit=HISTORY_LIMIT)
        alerts = latest_alerts(context.db, pair, limit=ALERTS_LIMIT)
        small = not history or history[-1].n_resolved < BACKTEST_BELOW
        closes = baseline_closes(context, pair) if small else []  # the naive range of its interval skill
        backtest = backtest_view(context.db, pair, closes, context.clock.hour()) if small else None
    except (MurError, psycopg.Error, ValidationError) as exc:
        logger.error("monitoring page: cannot read the reports of %s: %s", pair, exc)
        return failure(
            "The monitoring reports cannot be read right now (database unavailable); try again shortly."
        )
    try:
        market_now: datetime | None = context.clock.now()
    except (MurError, ValueError) as exc:  # a bad clock setting must not hide the reports
        logger.warning("monitoring page: no market clock: %s", exc)
        market_now = None
    try:  # the champion the API serves now (no quota): named when a report does not know its own
        token = context.serve_token(account.id)
        served = next(
            (str(m.version) for m in context.serve.models(token) if m.pair == pair and m.version), None
        )
    except MurError as exc:
        logger.info("monitoring page: no served version of %s: %s", pair, exc)
        served = None
    online = context.settings.monitoring.online_calibration
    return render(
        pair, history, alerts, market_now=market_now, online=online, served=served, backtest=backtest
    )


def register_callbacks(app: Dash) -> None:
    shadows_view.register_callbacks(app)
    app.callback(
        *(
            Output(name, "figure" if name in ("monitoring-rolling", "monitoring-drift") else "children")
            for name in OUTPUT_IDS
        ),
        Input("monitoring-pair", "value"),
        Input("monitoring-refresh", "n_intervals"),
    )(update)
