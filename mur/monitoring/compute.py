"""How a pair's champion fares, from what happened after its forecasts: resolution of the track record,
rolling skill and coverage, input drift against the champion's training window, and the alerts they raise.

Everything here is market time (:mod:`mur.clock`): a forecast for target hour ``T`` (the open time of the
candle whose close it predicts) is resolved once that candle has closed, i.e. once ``T < clock.hour()``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from mur.contracts import json_ready
from mur.db.forecasts import Forecast, fill_actuals, scored_counts, scored_forecasts
from mur.errors import MarketDataError
from mur.monitoring.report import DriftStat, MonitoringReport, RollingPoint, Status, Thresholds
from mur.pairs import normalize_pair
from mur.settings import DRIFT_FEATURES, Settings
from mur.timeutil import HOUR, iso, parse_time

if TYPE_CHECKING:
    import pandas as pd

    from mur.db.pool import Database

RESOLVE_LOOKBACK = timedelta(days=30)
"""Forecasts older than this that never got an actual (a gap in the data) are left alone."""
ROLLING_POINTS = 168
"""Points of the rolling series kept in a report (a week of hours)."""
PSI_BINS = 10
PSI_FLOOR = 1e-4


def thresholds_from(settings: Settings) -> Thresholds:
    """The thresholds of ``settings.monitoring`` (``monitor_<name>`` each, ``monitor_drift_alert_features``)."""
    group = settings.monitoring
    figures = {k: getattr(group, f"monitor_{k}") for k in Thresholds.model_fields if k != "alert_features"}
    return Thresholds(**figures, alert_features=list(group.monitor_drift_alert_features))


# --- resolution ------------------------------------------------------------------------------------------
def resolve_forecasts(db: Database, source: Any, pair: str, market_hour: datetime) -> int:
    """Fill ``actual`` for ``pair``'s forecasts whose target candle has closed before ``market_hour``;
    returns how many rows were resolved."""
    pair = normalize_pair(pair)
    with db.cursor() as cur:
        cur.execute(
            """
            SELECT min(target_time) AS first FROM forecasts
            WHERE pair = %(pair)s AND actual IS NULL AND target_time < %(hour)s AND target_time >= %(floor)s
            """,
            {"pair": pair, "hour": market_hour, "floor": market_hour - RESOLVE_LOOKBACK},
        )
        row = cur.fetchone()
    first = row["first"] if row else None
    if first is None:
        return 0
    try:
        candles = source.klines(pair, start=first, end=market_hour)
    except MarketDataError:  # no candle in that span (a replayed history that has ended)
        return 0
    return fill_actuals(db, pair=pair, candles=zip(candles["timestamp"], candles["close"], strict=True))


# --- rolling skill and coverage ------------------------------------------------------------------------
def window_stats(rows: Sequence[Forecast]) -> dict[str, Any]:
    """n, MAE of the model and of persistence (the last close when it was made), skill = 1 - their ratio,
    and the range's coverage and nominal level where the forecasts had one, over resolved ``rows`` (the
    monitoring window and the API's track record alike)."""
    out: dict[str, Any] = {"n": len(rows)}
    if not rows:
        return out | dict.fromkeys(("mae_model", "mae_persistence", "skill", "coverage", "level"))
    actual = np.array([r.actual for r in rows], dtype=np.float64)  # resolved: never None
    err = np.abs(np.array([r.predicted for r in rows]) - actual)
    base = np.abs(np.array([r.last_close for r in rows]) - actual)
    # exactly rounded sums: the same rows give the same digits in whatever order a view reads them
    mae_model, mae_persistence = math.fsum(err) / len(rows), math.fsum(base) / len(rows)
    banded = [r for r in rows if r.lower is not None and r.upper is not None]
    coverage = float(np.mean([r.inside for r in banded])) if banded else None
    levels = [r.level for r in banded if r.level is not None]
    return out | {
        "mae_model": mae_model,
        "mae_persistence": mae_persistence,
        "skill": 1.0 - mae_model / mae_persistence if mae_persistence > 0 else None,
        "coverage": coverage,
        "level": float(np.median(levels)) if levels else None,
    }


def rolling_series(rows: Sequence[Forecast], window: int) -> list[RollingPoint]:
    """The window statistics as of each resolved target (the last :data:`ROLLING_POINTS`)."""
    points = []
    for i in range(max(0, len(rows) - ROLLING_POINTS), len(rows)):
        stats = window_stats(rows[max(0, i + 1 - window) : i + 1])  # its "level" is not a RollingPoint's
        points.append(RollingPoint(target_time=iso(rows[i].target_time), **stats))
    return points


# --- input drift ---------------------------------------------------------------------------------------
def drift_inputs(candles: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-hour inputs whose distribution drift matters: |log return|, log(high/low), log(1 + volume)."""
    close, high, low, volume = (
        candles[c].to_numpy(dtype=np.float64) for c in ("close", "high", "low", "volume")
    )
    return {
        "abs_log_return": np.abs(np.diff(np.log(close))),
        "log_range": np.log(high / low)[1:],
        "log_volume": np.log1p(np.maximum(volume, 0.0))[1:],
    }


def psi(reference: np.ndarray, recent: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population-stability index of ``recent`` against ``reference``, over the reference's quantile bins
    (``sum((p_recent - p_ref) * ln(p_recent / p_ref))``; < 0.1 stable, 0.1-0.25 moderate, > 0.25 shifted)."""
    inner = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    edges = np.concatenate([[-np.inf], inner, [np.inf]])  # bins [e_i, e_(i+1)), open-ended outer bins
    ref, new = (np.maximum(np.histogram(x, edges)[0] / len(x), PSI_FLOOR) for x in (reference, recent))
    return float(np.sum((new - ref) * np.log(new / ref)))


def drift_stats(reference: pd.DataFrame, recent: pd.DataFrame, thresholds: Thresholds) -> list[DriftStat]:
    """PSI and two-sample KS of each input, recent hours against the reference window."""
    from scipy.stats import ks_2samp

    ref_inputs, new_inputs = drift_inputs(reference), drift_inputs(recent)
    stats = []
    for name in DRIFT_FEATURES:
        ref, new = ref_inputs[name], new_inputs[name]
        ref, new = ref[np.isfinite(ref)], new[np.isfinite(new)]
        if len(ref) < 2 * PSI_BINS or len(new) < PSI_BINS:
            continue
        value = psi(ref, new)
        ks = ks_2samp(ref, new)
        p_value = float(ks.pvalue)
        stats.append(
            DriftStat(
                feature=name,
                psi=value,
                ks=float(ks.statistic),
                ks_p=p_value,
                reference_mean=float(ref.mean()),
                recent_mean=float(new.mean()),
                n_reference=len(ref),
                n_recent=len(new),
                drifted=(drifted := value > thresholds.psi_above and p_value < thresholds.ks_p_below),
                alerting=drifted and name in thresholds.alert_features,
            )
        )
    return stats


# --- the report --------------------------------------------------------------------------------------------
def alerts_for(
    stats: dict[str, Any], drift: Sequence[DriftStat], thresholds: Thresholds
) -> tuple[list[str], list[str]]:
    """(kinds, plain-language lines) of the thresholds crossed."""
    kinds, lines = [], []
    n, skill, coverage = stats["n"], stats["skill"], stats["coverage"]
    if n >= thresholds.min_resolved and skill is not None and skill < thresholds.skill_below:
        kinds.append("skill")
        lines.append(
            f"rolling skill {skill:+.3f} over {n} resolved forecasts is below {thresholds.skill_below:+.2f}: "
            f"persistence did better (MAE {stats['mae_persistence']:.6g} vs the model's {stats['mae_model']:.6g})"
        )
    if n >= thresholds.min_resolved and coverage is not None and coverage < thresholds.coverage_below:
        kinds.append("coverage")
        lines.append(
            f"rolling coverage {coverage:.0%} of the {stats['level'] or 0:.0%} range over {n} forecasts is "
            f"below {thresholds.coverage_below:.0%}"
        )
    for d in drift:
        if d.alerting:
            kinds.append(f"drift:{d.feature}")
            lines.append(
                f"input drift in {d.feature}: PSI {d.psi:.2f} > {thresholds.psi_above:g}, KS p {d.ks_p:.1e} "
                f"(mean {d.recent_mean:.4g} over the last {d.n_recent} h vs {d.reference_mean:.4g} in training)"
            )
    return kinds, lines


def build_report(
    db: Database,
    source: Any,
    pair: str,
    market_hour: datetime,
    thresholds: Thresholds,
    *,
    champion: dict[str, Any] | None,
    drift_hours: int,
) -> tuple[MonitoringReport, list[str]]:
    """The report of ``pair`` at ``market_hour`` (after resolving its forecasts) and its alert kinds."""
    pair = normalize_pair(pair)
    # the resolved 1 h forecasts of the rolling points' hours, oldest first: one per target hour, the one the
    # track record scores (the first served, :func:`mur.db.forecasts.scored_forecasts`)
    rows = scored_forecasts(
        db,
        pair=pair,
        market_hour=market_hour,
        resolved=True,
        horizon_hours=1,
        since=market_hour - max(thresholds.window_hours, ROLLING_POINTS) * HOUR,
        until=market_hour,
    )[::-1]
    stats = window_stats(rows[-thresholds.window_hours :])
    window = (champion or {}).get("data_window") or {}
    drift: list[DriftStat] = []
    recent_start = market_hour - drift_hours * HOUR
    try:
        recent = source.klines(pair, start=recent_start - HOUR, end=market_hour)
    except MarketDataError:  # no recent candles (a replayed history that has ended): no drift to measure
        recent = None
    ref_start, ref_end = parse_time(window.get("start")), parse_time(window.get("end"))
    if ref_end is None or ref_end > recent_start:  # no champion window (or it overlaps): the 30 days before
        ref_end = recent_start
        ref_start = ref_end - timedelta(days=30)
    try:
        reference = source.klines(pair, start=ref_start, end=ref_end)
    except MarketDataError:  # the training window is not in this source (e.g. trained on a CSV)
        reference = None
    if recent is not None and reference is not None and len(reference) > 2 * PSI_BINS:
        drift = drift_stats(reference, recent, thresholds)
    kinds, lines = alerts_for(stats, drift, thresholds)
    status: Status = (
        "alert" if kinds else "insufficient_data" if stats["n"] < thresholds.min_resolved else "ok"
    )
    version = (champion or {}).get("version")
    report = MonitoringReport(
        pair=pair,
        as_of=iso(market_hour),
        champion_version=None if version is None else str(version),
        trained_window={"start": window.get("start"), "end": window.get("end")} if window else None,
        status=status,
        n_resolved=stats["n"],
        n_pending=scored_counts(db, pair=pair, market_hour=market_hour).pending,  # waiting or overdue
        skill=json_ready(stats["skill"]),
        mae_model=json_ready(stats["mae_model"]),
        mae_persistence=json_ready(stats["mae_persistence"]),
        coverage=json_ready(stats["coverage"]),
        level=stats["level"],
        drift=drift,
        rolling=rolling_series(rows, thresholds.window_hours),
        alerts=lines,
        thresholds=thresholds,
    )
    return report, kinds
