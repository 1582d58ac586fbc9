"""The Forecast page's track record, live reliability and pending forecasts, from the one scoring
definition (:mod:`mur.monitoring.track_record`): the same rows and counts as ``/v1/track-record``, the monitoring
report and ``/metrics``; and its CSV download (the API's ``format=csv`` rows)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from dash import dcc, html
from dash.development.base_component import Component
from dash.exceptions import PreventUpdate

from dash_app.charts import TrackRecord, track_record
from dash_app.components import (
    Columns,
    column_table,
    data_table,
    fmt_close,
    fmt_number,
    fmt_pct,
    fmt_time,
    muted,
)
from dash_app.context import DashboardContext, current_account, get_context
from mur.db.forecasts import ScoredCounts, backtest_forecasts, scored_counts, scored_forecasts
from mur.errors import MurError
from mur.monitoring.backtest_record import LABEL as BACKTEST_LABEL
from mur.monitoring.compute import window_stats
from mur.monitoring.track_record import (
    RELIABILITY_WINDOWS,
    Reliability,
    close_time,
    naive_log_band,
    reliability,
)

if TYPE_CHECKING:
    from mur.db import Database, Forecast

TRACK_RECORD_LIMIT = 500
PENDING_SHOWN = 12
NOMINAL = 0.9
"""The ranges' nominal level the track record chart's naive range is built for."""
TEST_SPAN = "its test span"
BACKTEST_BELOW = 24 * 7
"""The backtest track record is shown beside the live one while it has fewer resolved forecasts."""


@dataclass(frozen=True)
class TrackRecordView:
    """What the Forecast page says about the track record, from the one scoring definition (see the module)."""

    record: TrackRecord
    """The 1 h scored forecasts for the chart (running MAEs, coverage)."""
    summary: dict[str, Any]
    """:func:`mur.monitoring.compute.window_stats` over the resolved 1 h scored forecasts."""
    counts: ScoredCounts
    """Every horizon: resolved, waiting, overdue."""
    unresolved: list[Forecast] = field(default_factory=list)
    """The next pending (and overdue) scored forecasts, soonest target first."""
    reliability: list[Reliability] = field(default_factory=list)
    backtest: Backtest | None = None
    """The champion's backtest track record, while the live one is small (:data:`BACKTEST_BELOW`)."""


@dataclass(frozen=True)
class Backtest:
    """The backtest track record's figures (:mod:`mur.monitoring.backtest_record`), labelled apart."""

    version: str
    span: tuple[datetime, datetime]
    """First and last target time."""
    summary: dict[str, Any]
    """:func:`mur.monitoring.compute.window_stats` over its 1 h forecasts."""
    reliability: list[Reliability]


def track_record_view(
    db: Database, pair: str, *, market_hour: datetime, closes: list[float] | None = None
) -> TrackRecordView:
    """The Forecast page's track record of ``pair`` at ``market_hour`` (``closes``: hourly closes before it,
    oldest first, for the naive ranges the interval skill compares with)."""
    closes = closes or []
    rows = scored_forecasts(db, pair=pair, horizon_hours=1, limit=TRACK_RECORD_LIMIT)
    # the same naive range as the live-reliability panel's 1 h row (the closes of the last 30 days)
    record = track_record(rows, naive_log_band(closes, 1, NOMINAL), market_hour=market_hour)
    longest = max(hours for _, hours in RELIABILITY_WINDOWS)
    recent = scored_forecasts(
        db,
        pair=pair,
        market_hour=market_hour,
        resolved=True,
        since=market_hour - timedelta(hours=longest),
        until=market_hour,
    )
    unresolved = scored_forecasts(db, pair=pair, market_hour=market_hour, resolved=False, limit=200)
    counts = scored_counts(db, pair=pair, market_hour=market_hour)
    return TrackRecordView(
        record=record,
        summary=window_stats(record.resolved),
        counts=counts,
        unresolved=sorted(unresolved, key=lambda f: (f.target_time, f.horizon_hours))[:PENDING_SHOWN],
        reliability=reliability(recent, market_hour=market_hour, closes=closes),
        backtest=backtest_view(db, pair, closes, market_hour) if counts.resolved < BACKTEST_BELOW else None,
    )


def baseline_closes(context: DashboardContext, pair: str) -> list[float]:
    """Hourly closes of the 30 days before market now (the naive ranges of the interval skill)."""
    hour = context.clock.hour()
    longest = max(hours for _, hours in RELIABILITY_WINDOWS)
    try:
        frame = context.market.klines(pair, start=hour - timedelta(hours=longest + 48), end=hour)
    except MurError:
        return []
    return [float(c) for c in frame["close"]]


def backtest_view(
    db: Database, pair: str, closes: Sequence[float] = (), market_hour: datetime | None = None
) -> Backtest | None:
    """The backtest figures of ``pair`` over its whole test span (None when none was loaded); its naive range
    from the ``closes`` (hourly, up to ``market_hour``) before the span's first forecast, as the training's."""
    rows = backtest_forecasts(db, pair=pair)
    if not rows:
        return None
    first, last = rows[-1].target_time, rows[0].target_time
    span = ((TEST_SPAN, int((last - first) / timedelta(hours=1)) + 1),)
    if market_hour is not None:
        closes = closes[: max(0, len(closes) - math.ceil((market_hour - first) / timedelta(hours=1)) - 1)]
    return Backtest(
        version=rows[0].model_version,
        span=(first, last),
        summary=window_stats([f for f in rows if f.horizon_hours == 1]),
        reliability=reliability(rows, market_hour=last + timedelta(hours=1), closes=closes, windows=span),
    )


def summary_text(view: TrackRecordView, now: datetime) -> Component:
    """The 1 h track record in one sentence (the same numbers as the API's ``by_horizon["1"]``)."""
    counts, summary = view.counts, view.summary
    waiting = (
        f"{counts.pending} forecast(s) of every horizon not resolved yet: {counts.waiting} waiting for "
        "their candle to close"
        + (f", {counts.overdue} whose candle closed but is not in the data yet" if counts.overdue else "")
    )
    if not summary["n"]:
        return muted(
            f"No resolved 1 h forecasts yet ({waiting}; market time {fmt_time(now)}).", id="track-pending"
        )
    skill = summary["skill"]
    return html.P(
        [
            f"Over {summary['n']} resolved 1 h forecast(s) (one per target hour: the first served): MAE of "
            "the model ",
            html.Strong(fmt_number(summary["mae_model"], 6), id="mae-model"),
            " vs persistence ",
            html.Strong(fmt_number(summary["mae_persistence"], 6), id="mae-persistence"),
            f" (skill {skill * 100:+.2f}%)" if skill is not None else "",
            f"; {waiting} (market time {fmt_time(now)}).",
            *_range_record(view.record, summary),
        ],
        id="track-summary",
    )


def _range_record(record: TrackRecord, summary: dict[str, Any]) -> list[Any]:
    """The ranges' coverage and interval skill vs the naive range, when forecasts had ranges."""
    if not record.ranged or summary.get("coverage") is None:
        return []
    parts: list[Any] = [
        html.Br(),
        f"{record.ranged} of them had a {record.level or 0.9:.0%} range: coverage ",
        html.Strong(fmt_pct(summary["coverage"]), id="track-coverage"),
    ]
    if record.interval_skill is not None:
        parts += [
            ", interval skill vs naive ranges ",
            html.Strong(f"{record.interval_skill * 100:+.1f}%", id="track-interval-skill"),
        ]
    return parts


def reliability_table(rows: list[Reliability], backtest: Backtest | None = None) -> Component:
    """Per horizon, for the last 24 h / 7 d / 30 d of market time: how often the range held the close next
    to its nominal level, and its interval skill against the naive range; beside it, labelled apart, the
    champion's backtest (:func:`backtest_table`) while the live record is small."""
    live = _reliability_table(rows, [label for label, _ in RELIABILITY_WINDOWS], "live-reliability")
    if backtest is None:
        return live
    return html.Div([html.H4("Live (served forecasts)"), live, backtest_table(backtest)])


def backtest_table(backtest: Backtest) -> Component:
    """The champion's forecasts of its test span, labelled as a backtest and never mixed with the live part."""
    s, (first, last) = backtest.summary, backtest.span
    skill = "" if s.get("skill") is None else f" (skill {s['skill'] * 100:+.2f}% vs persistence)"
    return html.Div(
        [
            html.H4(BACKTEST_LABEL),
            muted(
                f"Model v{backtest.version}'s forecasts of its own test span, {fmt_time(first)} to "
                f"{fmt_time(last)}, made through its ONNX graph before it served (it never trained on these "
                f"hours): {s['n']} 1 h forecasts, MAE {fmt_number(s.get('mae_model'), 6)} vs persistence "
                f"{fmt_number(s.get('mae_persistence'), 6)}{skill}. Not part of the live scores, monitoring or "
                "alerts."
            ),
            _reliability_table(backtest.reliability, [TEST_SPAN], "backtest-reliability"),
        ],
        id="backtest-record",
        className="backtest",
    )


def _reliability_table(rows: list[Reliability], labels: list[str], id: str) -> Component:
    if not rows:
        return muted("No resolved forecast with a range in the last 30 market days yet.", id=id)
    cell = {(r.horizon_hours, r.window): r for r in rows}
    body = []
    for h in sorted({r.horizon_hours for r in rows}):
        line: list[Any] = [f"{h} h"]
        for label in labels:
            r = cell.get((h, label))
            if r is None or not r.n:
                line.append("–")
                continue
            skill = "" if r.interval_skill is None else f", skill {r.interval_skill * 100:+.1f}%"
            line.append(f"{fmt_pct(r.coverage)} of {r.n} (nominal {fmt_pct(r.level, 0)}){skill}")
        body.append(line)
    return html.Div(
        [
            muted(
                "Share of closes inside the forecast range, by horizon and window of market time, next to "
                "the range's nominal level; interval skill > 0: better (narrower or better placed) ranges "
                "than the naive one, the spread of the moves of about 30 market days before (the champion's "
                "figures compare with its whole training span's: other numbers)."
            ),
            data_table(
                ["horizon", *(label if label == TEST_SPAN else f"last {label}" for label in labels)],
                body,
                id=id,
            ),
        ]
    )


def pending_table(view: TrackRecordView, now: datetime) -> Component:
    """The next forecasts still waiting for their candle (and overdue ones)."""
    if not view.unresolved:
        return html.Div(id="pending-forecasts")
    columns: Columns = (
        ("horizon", lambda f: f"{f.horizon_hours} h"),
        ("for the", lambda f: fmt_close(close_time(f.target_time), now)),
        ("median", lambda f: fmt_number(f.predicted, 6)),
        (
            "range",
            lambda f: "–" if f.lower is None else f"{fmt_number(f.lower, 6)} – {fmt_number(f.upper, 6)}",
        ),
        ("made at (market time)", lambda f: fmt_time(f.made_at)),
        ("model", lambda f: f.model_version),
    )
    summary = html.Summary(f"Pending forecasts ({view.counts.pending})")
    return html.Details([summary, column_table(columns, view.unresolved, id="pending-forecasts")])


def download_csv(n_clicks: int | None, pair: str | None) -> Any:
    """The pair's track record as CSV: the API's ``format=csv`` rows (the same scoring definition)."""
    from mur.monitoring.track_record import MAX_LIMIT, track_record_csv
    from mur.monitoring.track_record import track_record as api_track_record

    context = get_context()
    if not n_clicks or current_account() is None or pair not in context.pairs():
        raise PreventUpdate
    hour = context.clock.hour()
    body = api_track_record(context.db, pair, market_hour=hour, limit=MAX_LIMIT)
    stamp = hour.strftime("%Y%m%dT%H%MZ")
    return dcc.send_string(track_record_csv(body), f"{pair}-track-record-{stamp}.csv", type="text/csv")
