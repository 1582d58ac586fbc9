"""The live paper portfolio: what the sizing rule (:mod:`mur.evaluation.sizing`) would have earned, after fees,
acting on the forecasts the track record holds (what was served, when), next to buy & hold and the same rule
sized by the EWMA x hour-of-day volatility baseline (:class:`mur.evaluation.intervals.EwmaBaseline`). One
definition for ``GET /v1/paper/{pair}``, the dashboard's panel and ``/metrics``. **Paper, not advice.**

The hours run from the first decision candle ``C0`` (the earliest scored forecast of the rule's horizon ``H``
made within the hour after its candle closed) to the latest close the track record knows (resolved targets'
``actual`` and the forecasts' ``last_close``; an hour whose close is unknown earns nothing, the next known close
catches up). At every ``H``-th hour the exposure is decided from the forecast served from that candle (none
served: no exposure) and held over the following ``H`` hourly returns. The EWMA baseline is fitted on the
candles before ``C0`` (hour-of-day factors, standardised quantiles); its variance after a decision candle reads
candles up to that candle only. Every time is market time (:mod:`mur.clock`).
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mur.contracts import json_ready
from mur.db.forecasts import Forecast, backtest_forecasts, scored_forecasts
from mur.errors import MurError, NotFoundError
from mur.evaluation import sizing
from mur.evaluation.intervals import EwmaBaseline
from mur.pairs import normalize_pair
from mur.timeutil import HOUR, iso

if TYPE_CHECKING:
    from mur.db.pool import Database

LABEL = "paper, not advice"
PAPER_DAYS = 30
"""Market days of the track record the portfolio covers by default (``days``: at most :data:`MAX_DAYS`)."""
MAX_DAYS = 365
EWMA_FIT = timedelta(days=30)
"""Candles before the first decision the EWMA baseline is fitted on."""
STRATEGIES = ("model", "ewma", "buy_hold")
"""The rule sized by the served ranges, by the EWMA baseline, and buy & hold (exposure 1)."""
POINT_FIELDS = ("exposure", "equity", "drawdown", "costs")


def _decision(f: Forecast) -> datetime:
    """The open time of the candle a forecast was made from (its close: the decision's price)."""
    return f.target_time - f.horizon_hours * HOUR


def paper_from(
    forecasts: Sequence[Forecast],
    *,
    pair: str,
    market_hour: datetime,
    rule: sizing.SizingRule,
    candles: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """The paper portfolio of ``pair`` at ``market_hour`` from its scored ``forecasts`` (every horizon; those
    of candles before ``market_hour`` count) and, for the EWMA-sized rule, hourly ``candles`` (None: no EWMA).
    :class:`NotFoundError` when no forecast of the rule's horizon can be traded yet."""
    rows = [f for f in forecasts if _decision(f) < market_hour]
    # traded: made within the hour after its candle closed, never after the next candle closed
    traded = [f for f in rows if f.horizon_hours == rule.horizon and f.made_at < _decision(f) + 2 * HOUR]
    decisions = {_decision(f): f for f in traded}
    closes = {_decision(f): f.last_close for f in rows}
    closes |= {f.target_time: f.actual for f in rows if f.actual is not None and f.target_time < market_hour}
    start = min(decisions, default=None)
    end = max(closes, default=start)
    if start is None or end is None or end <= start:
        raise NotFoundError(
            f"no paper portfolio for {pair} yet: it fills as forecasts of the {rule.horizon} h horizon are served "
            "and the following hours close (the track record)"
        )
    hours = [start + k * HOUR for k in range(int((end - start) / HOUR) + 1)]
    price = pd.Series([closes.get(t, np.nan) for t in hours]).ffill().to_numpy()  # the last known close
    returns = price[1:] / price[:-1] - 1.0
    q = np.array(
        [
            [f.lower, f.predicted, f.upper] if (f := decisions.get(t)) and f.lower else [np.nan] * 3
            for t in hours
        ],
        dtype=np.float64,
    )
    level = next((f.level for f in decisions.values() if f.level), 0.9)
    levels = ((1 - level) / 2, 0.5, (1 + level) / 2)
    vol = {"model": sizing.forecast_volatility(q, levels, rule.horizon), "buy_hold": None}
    vol["ewma"] = _ewma_volatility(candles, hours, levels, rule.horizon) if candles is not None else None
    out: dict[str, Any] = {"strategies": {}, "points": [{"time": iso(t + HOUR)} for t in hours[1:]]}
    for name, v in vol.items():
        if name == "ewma" and v is None:
            out["strategies"][name] = None
            continue
        held = np.ones(len(hours)) if v is None else sizing.exposures(v, rule)
        result = sizing.simulate(returns, held[:-1], rule)
        drawdown = result.equity / result.equity.cummax().clip(lower=1.0) - 1.0  # from 1 at the start
        out["strategies"][name] = json_ready(
            sizing.performance(result) | {"exposure_now": held[-1], "drawdown_now": drawdown.iloc[-1]}
        )
        series = (result.exposure, result.equity, drawdown, result.costs.cumsum())
        for point, *values in zip(out["points"], *series, strict=True):
            point |= json_ready({f"{name}_{k}": v for k, v in zip(POINT_FIELDS, values, strict=True)})
    for point, p in zip(out["points"], price[1:], strict=True):
        point["close"] = float(p)
    return {
        "pair": pair,
        "as_of": iso(market_hour),
        "label": LABEL,
        "rule": {k: getattr(rule, k) for k in sizing.SizingRule.__dataclass_fields__},
        "from": iso(start + HOUR),
        "to": iso(end + HOUR),
        "decisions": sum((t - start) % (rule.horizon * HOUR) == timedelta(0) for t in decisions),
        "verdict": verdict(out["strategies"]),
        **out,
    }


def _ewma_volatility(
    candles: pd.DataFrame, hours: list[datetime], levels: Sequence[float], horizon: int
) -> np.ndarray | None:
    """The EWMA baseline's hourly volatility after each of ``hours`` (NaN where its candle is missing),
    fitted on the candles before the first; None without :data:`EWMA_FIT`'s worth of candles before it."""
    times = pd.to_datetime(candles["timestamp"], utc=True)
    train_end = int((times < pd.Timestamp(hours[0])).sum())
    if train_end < 24 * 7 + horizon:
        return None
    close, high, low = (candles[c].to_numpy() for c in ("close", "high", "low"))
    baseline = EwmaBaseline((horizon,), tuple(levels)).fit(
        close, high, low, times.dt.hour.to_numpy(), train_end
    )
    row = pd.Series(np.arange(len(times)), index=times)
    at = row.reindex(pd.DatetimeIndex(hours).tz_convert("UTC")).to_numpy()
    vol = np.full(len(hours), np.nan)
    ok = ~np.isnan(at)
    quantiles = np.exp(baseline.log_return_quantiles(at[ok].astype(int))[:, 0, :])
    vol[ok] = sizing.forecast_volatility(quantiles, levels, horizon)
    return vol


def verdict(strategies: dict[str, dict[str, Any] | None]) -> str:
    """Whether the model-sized rule beat the EWMA-sized rule (and buy & hold) after fees, said plainly."""
    model = strategies["model"] or {}
    parts = []
    for name, label in (("ewma", "the EWMA-sized rule"), ("buy_hold", "buy & hold")):
        other = strategies.get(name)
        a, b = model.get("sharpe"), (other or {}).get("sharpe")
        if a is None or b is None:
            parts.append(f"not comparable with {label} yet (no Sharpe ratio)")
            continue
        beats = "beats" if a > b else "does NOT beat"
        parts.append(f"{beats} {label} after fees (Sharpe {a:.2f} vs {b:.2f})")
    return f"The model-sized rule {', and '.join(parts)} over {model.get('hours', 0):.0f} h ({LABEL})."


def paper_portfolio(
    db: Database,
    pair: str,
    *,
    market_hour: datetime,
    rule: sizing.SizingRule,
    days: int = PAPER_DAYS,
    candles: Callable[[datetime, datetime], pd.DataFrame] | None = None,
) -> dict[str, Any]:
    """:func:`paper_of` the :func:`paper_rows` of ``pair`` (the dashboard, the gauges)."""
    rows = paper_rows(db, pair, market_hour=market_hour, rule=rule, days=days)
    return paper_of(rows, pair=normalize_pair(pair), market_hour=market_hour, rule=rule, candles=candles)


def paper_rows(
    db: Database, pair: str, *, market_hour: datetime, rule: sizing.SizingRule, days: int = PAPER_DAYS
) -> list[Forecast]:
    """The scored forecasts (the rule's horizon and 1 h) of the last ``days`` market days of ``pair``."""
    since = market_hour - timedelta(days=max(1, min(int(days), MAX_DAYS)))
    return [
        f
        for h in sorted({1, rule.horizon})
        for f in scored_forecasts(db, pair=normalize_pair(pair), horizon_hours=h, since=since + h * HOUR)
    ]


def paper_of(
    rows: Sequence[Forecast],
    *,
    pair: str,
    market_hour: datetime,
    rule: sizing.SizingRule,
    candles: Callable[[datetime, datetime], pd.DataFrame] | None = None,
) -> dict[str, Any]:
    """:func:`paper_from` of ``rows``; ``candles(start, end)``: hourly candles opened in ``[start, end)`` for the
    EWMA-sized rule, called apart from the database (a market-data error leaves the rule out, None: left out)."""
    frame = None
    starts = [_decision(f) for f in rows if f.horizon_hours == rule.horizon]
    if candles is not None and starts:
        with contextlib.suppress(MurError):  # a market-data error leaves the EWMA-sized rule out
            frame = candles(min(starts) - EWMA_FIT, market_hour)
    return paper_from(rows, pair=pair, market_hour=market_hour, rule=rule, candles=frame)


def backtest_paper(
    db: Database,
    pair: str,
    *,
    rule: sizing.SizingRule,
    candles: Callable[[datetime, datetime], pd.DataFrame] | None = None,
) -> dict[str, Any]:
    """The rule on ``pair``'s backtest track record (its champion's test span, out-of-sample, before serving:
    :mod:`mur.monitoring.backtest_record`), what a first screen shows before live decisions exist; labelled
    ``"source": "backtest"``, never mixed with the live one. :class:`NotFoundError` without one."""
    rows = [
        f for f in backtest_forecasts(db, pair=normalize_pair(pair)) if f.horizon_hours in (1, rule.horizon)
    ]
    if not rows:
        raise NotFoundError(f"no backtest track record for {pair}")
    end = max(f.target_time for f in rows) + HOUR
    body = paper_of(rows, pair=normalize_pair(pair), market_hour=end, rule=rule, candles=candles)
    for strategy in filter(None, body["strategies"].values()):  # no "now" in a span that ended (not the
        strategy["exposure_now"] = None  # exposure its last hour would have decided without a forecast)
    return body | {"source": "backtest"}


def paper_csv(body: dict[str, Any]) -> str:
    """The hourly points of :func:`paper_portfolio` as CSV (oldest first), each row labelled paper, not advice."""
    out = io.StringIO()
    columns = ["label", "time", "close", *(f"{s}_{k}" for s in STRATEGIES for k in POINT_FIELDS)]
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({"label": LABEL} | point for point in body["points"])
    return out.getvalue()
