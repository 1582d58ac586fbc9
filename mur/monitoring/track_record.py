"""The track record, one definition for every view: the API (``GET /v1/track-record/{pair}``, JSON or CSV),
the dashboard's Forecast page, the monitoring report and ``/metrics``.

**Which forecast is scored**: of all the forecasts served for a (pair, target time, horizon), the *first*
one (earliest ``made_at``, then the lowest id), with its model version: the view ``scored_forecasts``
(``sql/0007_scored_forecasts.sql``) read by :func:`mur.db.forecasts.scored_forecasts` and counted by
:func:`mur.db.forecasts.scored_counts`. A later version's forecast of the same target stays stored but is not
counted. At market hour ``H`` a scored forecast is **resolved** (its candle, open at ``target_time``, closed
before ``H`` and its close is known), **pending** (its candle has not closed) or **overdue** (closed, close
not known yet). Every time here is market time (:mod:`mur.clock`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from mur.db.forecasts import SCORED_VIEW_DOC, Forecast, ScoredCounts, scored_counts, scored_forecasts
from mur.evaluation.intervals import naive_quantiles, winkler_scores
from mur.monitoring.compute import window_stats
from mur.pairs import normalize_pair
from mur.timeutil import HOUR, iso

if TYPE_CHECKING:
    from mur.db.pool import Database

BACKTEST_SCORED = (
    "backtest: the newest champion's forecasts of its own test span (never trained or calibrated on), made "
    "through its ONNX graph before it served; not part of the live scores, monitoring or alerts"
)

MAX_LIMIT = 1000
RELIABILITY_WINDOWS: tuple[tuple[str, int], ...] = (("24 h", 24), ("7 d", 7 * 24), ("30 d", 30 * 24))
"""The live-reliability windows (label, market hours before the current market hour)."""
CSV_COLUMNS = (
    "pair",
    "status",
    "horizon_hours",
    "target_time",
    "close_time",
    "made_at",
    "model_version",
    "predicted",
    "lower",
    "upper",
    "level",
    "last_close",
    "actual",
    "error",
    "persistence_error",
    "inside",
)


def close_time(target_time: datetime) -> datetime:
    """When the forecast candle closes (``target_time`` is its open time): what a forecast is "for"."""
    return target_time + HOUR


def _row(f: Forecast) -> dict[str, Any]:
    resolved = f.actual is not None
    return {
        "made_at": iso(f.made_at),
        "target_time": iso(f.target_time),
        "close_time": iso(close_time(f.target_time)),
        **{k: getattr(f, k) for k in ("horizon_hours", "model_version", "predicted", "actual", "last_close")},
        "error": f.predicted - f.actual if resolved else None,  # type: ignore[operator]
        "persistence_error": f.last_close - f.actual if resolved else None,  # type: ignore[operator]
        **{k: getattr(f, k) for k in ("lower", "upper", "level", "inside")},
    }


def _pending_row(f: Forecast, market_hour: datetime) -> dict[str, Any]:
    row = {k: v for k, v in _row(f).items() if k not in ("actual", "error", "persistence_error", "inside")}
    return row | {"status": "pending" if f.target_time >= market_hour else "overdue"}


def track_record(
    db: Database,
    pair: str,
    *,
    market_hour: datetime,
    limit: int = 100,
    horizon: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    source: Literal["live", "backtest"] = "live",
) -> dict[str, Any]:
    """The latest ``limit`` resolved scored forecasts of ``pair`` at ``market_hour`` (one ``horizon`` or
    all; targets in ``[since, until)``), their summary overall and per horizon, the counts of every state
    and the unresolved ones (``unresolved``: pending and overdue, newest first, at most ``limit``); with
    ``source="backtest"`` the backtest track record's (:mod:`mur.monitoring.backtest_record`), all resolved."""
    pair = normalize_pair(pair)
    if source == "backtest":
        from mur.db.forecasts import backtest_forecasts

        rows = backtest_forecasts(db, pair=pair, horizon_hours=horizon, since=since, until=until)
        counts = ScoredCounts(resolved=len(rows), waiting=0, overdue=0)
        shown = rows[: max(1, int(limit))]
        body = record_body(pair, market_hour, shown, counts, BACKTEST_SCORED, since, until, source="backtest")
        return {"source": "backtest"} | body
    limit = max(1, min(int(limit), MAX_LIMIT))

    def read(resolved: bool) -> list[Forecast]:
        return scored_forecasts(
            db,
            pair=pair,
            market_hour=market_hour,
            resolved=resolved,
            horizon_hours=horizon,
            since=since,
            until=until,
            limit=limit,
        )

    rows, waiting = read(True), read(False)
    counts = scored_counts(
        db, pair=pair, market_hour=market_hour, horizon_hours=horizon, since=since, until=until
    )
    return record_body(pair, market_hour, rows, counts, SCORED_VIEW_DOC, since, until) | {
        "unresolved": [_pending_row(f, market_hour) for f in waiting]
    }


def record_body(
    pair: str,
    market_hour: datetime,
    rows: Sequence[Forecast],
    counts: ScoredCounts,
    scored: str,
    since: datetime | None,
    until: datetime | None,
    **row_extra: Any,
) -> dict[str, Any]:
    """A track record answer of resolved ``rows`` (their summary, overall and per horizon), without the
    unresolved ones (``row_extra``: added to each row)."""
    by_horizon = {
        str(h): window_stats([f for f in rows if f.horizon_hours == h])
        for h in sorted({f.horizon_hours for f in rows})
    }
    return {
        "pair": normalize_pair(pair),
        "as_of": iso(market_hour),
        "pending": counts.pending,
        "overdue": counts.overdue,
        "resolved_total": counts.resolved,
        "scored": scored,
        "from": iso(since) if since is not None else None,
        "to": iso(until) if until is not None else None,
        "resolved": [_row(f) | row_extra for f in rows],
        "unresolved": [],
        "summary": window_stats(rows) | {"by_horizon": by_horizon},
    }


def track_record_csv(record: dict[str, Any]) -> str:
    """The rows of :func:`track_record` (unresolved first, then resolved; newest first) as CSV."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in record["unresolved"]:
        writer.writerow({"pair": record["pair"], **row})
    for row in record["resolved"]:
        writer.writerow({"pair": record["pair"], "status": "resolved", **row})
    return out.getvalue()


# --- live reliability ------------------------------------------------------------------------------------
def naive_log_band(closes: Sequence[float], hours: int, level: float) -> tuple[float, float] | None:
    """Baseline (a) for a ``hours``-ahead range of nominal ``level``: the outer quantiles of the past
    ``hours``-hour log returns of ``closes`` (hourly, oldest first); None with fewer than 50 returns."""
    c = np.asarray([x for x in closes if x and x > 0], dtype=np.float64)
    if len(c) - hours < 50:
        return None
    tail = (1.0 - level) / 2.0
    lo, hi = naive_quantiles(c, len(c), [hours], [tail, 1.0 - tail])[0]
    return float(lo), float(hi)


@dataclass(frozen=True)
class Reliability:
    """How the ranges of one horizon held over one window of market hours."""

    horizon_hours: int
    window: str
    hours: int
    n: int
    """Resolved scored forecasts with a range in the window."""
    coverage: float | None
    level: float | None
    """The ranges' nominal coverage (the median level)."""
    interval_skill: float | None
    """``1 - sum Winkler_model / sum Winkler_naive`` (> 0: better ranges than the naive one)."""


def reliability(
    forecasts: Sequence[Forecast],
    *,
    market_hour: datetime,
    closes: Sequence[float] = (),
    windows: Sequence[tuple[str, int]] = RELIABILITY_WINDOWS,
) -> list[Reliability]:
    """Running coverage and interval skill per horizon over each window before ``market_hour``, from resolved
    scored forecasts (``forecasts``: e.g. :func:`scored_forecasts` with ``resolved=True`` over the longest
    window). ``closes``: hourly closes for the naive baseline (no interval skill without them)."""
    ranged = [
        f
        for f in forecasts
        if f.target_time < market_hour and None not in (f.actual, f.lower, f.upper, f.level)
    ]
    out = []
    for h in sorted({f.horizon_hours for f in ranged}):
        for label, hours in windows:
            start = market_hour - timedelta(hours=hours)
            rows = [f for f in ranged if f.horizon_hours == h and f.target_time >= start]
            if not rows:
                out.append(Reliability(h, label, hours, 0, None, None, None))
                continue
            lo, hi, lv, y, last = (
                np.array([getattr(f, k) for f in rows], dtype=np.float64)
                for k in ("lower", "upper", "level", "actual", "last_close")
            )
            level = float(np.median(lv))
            coverage = float(np.mean((lo <= y) & (y <= hi)))
            band = naive_log_band(closes, h, level) if closes else None
            skill = None
            if band is not None:
                model = winkler_scores(lo, hi, y, 1.0 - lv).sum()
                naive = winkler_scores(last * np.exp(band[0]), last * np.exp(band[1]), y, 1.0 - lv).sum()
                skill = float(1.0 - model / naive) if naive > 0 else None
            out.append(Reliability(h, label, hours, len(rows), coverage, level, skill))
    return out
