"""Figures and track-record statistics for the Forecast page (pure: data in, plotly figures out)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mur.evaluation.intervals import winkler_scores
from mur.timeutil import HOUR

if TYPE_CHECKING:
    import pandas as pd

    from mur.db import Forecast
    from mur.serving.contract import ForecastOut

CHART_TEMPLATE = "plotly_white"
FORECAST_COLOR = "#d62728"


@dataclass(frozen=True)
class TrackRecord:
    """Resolved forecasts (``actual`` known) in target-time order, with running MAEs."""

    resolved: list[Forecast]
    running_mae_model: list[float]
    running_mae_persistence: list[float]
    running_coverage: list[float | None]
    interval_skill: float | None
    """``1 - sum Winkler_model / sum Winkler_naive`` over the ranged forecasts (baseline (a))."""
    level: float | None

    @property
    def ranged(self) -> int:
        return sum(1 for f in self.resolved if f.inside is not None)


def track_record(
    forecasts: Sequence[Forecast],
    naive_log_quantiles: tuple[float, float] | None = None,
    *,
    market_hour: datetime | None = None,
) -> TrackRecord:
    """Running MAE of the model vs persistence (tomorrow = today's last close) over resolved forecasts, and
    for forecasts with a range: whether the actual fell inside, the running coverage and the interval skill
    against baseline (a) (``naive_log_quantiles``: the outer quantiles of past 1 h log returns).

    ``market_hour`` (the open time of the current market hour, :meth:`mur.clock.MarketClock.hour`): only
    forecasts whose target candle (open time ``target_time``) has closed by then count as resolved, whatever a
    replay that ran ahead stored (the others are waiting for their candle).

    When several forecasts share a target time (different model versions), each counts: the record is the
    model's, whichever version was champion when the forecast was made.
    """
    closed = [f for f in forecasts if market_hour is None or f.target_time < market_hour]
    resolved = sorted((f for f in closed if f.actual is not None), key=lambda f: (f.target_time, f.made_at))
    y, predicted, last, lo, hi, level = (  # a missing range bound or level is NaN
        np.array([getattr(f, k) for f in resolved], dtype=np.float64)
        for k in ("actual", "predicted", "last_close", "lower", "upper", "level")
    )
    scored = np.array([f.inside is not None for f in resolved], dtype=bool)
    ranged = scored & ~np.isnan(lo + hi + level)  # both bounds and a level
    inside = np.array([bool(f.inside) for f in resolved], dtype=bool)
    hits, counts = np.cumsum(ranged & inside).tolist(), np.cumsum(ranged).tolist()
    coverage = [h / n if n else None for h, n in zip(hits, counts, strict=True)]
    skill = None
    if naive_log_quantiles is not None:
        alpha = 1.0 - level[ranged]
        naive_lo, naive_hi = (last[ranged] * np.exp(q) for q in naive_log_quantiles)
        w_model = winkler_scores(lo[ranged], hi[ranged], y[ranged], alpha).sum()
        w_naive = winkler_scores(naive_lo, naive_hi, y[ranged], alpha).sum()
        skill = float(1.0 - w_model / w_naive) if w_naive > 0 else None
    steps = np.arange(1, len(resolved) + 1)
    return TrackRecord(
        resolved=resolved,
        running_mae_model=(np.cumsum(np.abs(predicted - y)) / steps).tolist(),
        running_mae_persistence=(np.cumsum(np.abs(last - y)) / steps).tolist(),
        running_coverage=coverage,
        interval_skill=skill,
        level=next((f.level for f in resolved if f.level is not None), None),
    )


def candlestick_figure(
    candles: pd.DataFrame, *, pair: str, forecast: ForecastOut | None, now: datetime | None = None
) -> go.Figure:
    """Recent candles, with the next-hour forecast drawn from the last close to the predicted close, and
    market ``now`` (the market clock) as a dotted vertical line."""
    figure = go.Figure(
        go.Candlestick(
            x=candles["timestamp"],
            open=candles["open"],
            high=candles["high"],
            low=candles["low"],
            close=candles["close"],
            name=pair.upper(),
        )
    )
    if forecast is not None and forecast.horizons:
        add_fan(figure, forecast)
    elif forecast is not None:
        figure.add_trace(
            go.Scatter(
                x=[forecast.candle_time + HOUR, forecast.closes_at()],  # the last close, the forecast one
                y=[forecast.last_close, forecast.forecast],
                mode="lines+markers",
                line={"color": FORECAST_COLOR, "dash": "dot"},
                marker={"size": [0, 12], "symbol": "star", "color": FORECAST_COLOR},
                name=f"forecast (model v{forecast.model_version})",
                hovertemplate="%{x}<br>forecast close %{y:.6g}<extra></extra>",
            )
        )
    if now is not None:  # labelled; a shape, not a trace: the legend is unchanged
        figure.add_vline(
            x=now,
            line={"color": "gray", "dash": "dot", "width": 1},
            name="market now",
            annotation={"text": "market now", "font": {"size": 11, "color": "gray"}},
            annotation_position="top",
        )
    return styled(figure, f"{pair.upper()} hourly candles", 460, top=50, xaxis_rangeslider_visible=False)


def styled(
    figure: go.Figure, title: str, height: int, *, top: int = 70, legend_y: float = -0.12, **layout: Any
) -> go.Figure:
    """``figure`` in the dashboard's style (every chart's): ``title`` over it (``top`` px of margin), a
    horizontal legend below it (at ``legend_y``), ``height`` px tall; ``layout``: more layout settings."""
    figure.update_layout(
        template=CHART_TEMPLATE,
        title=title,
        margin={"l": 50, "r": 20, "t": top, "b": 40},
        legend={"orientation": "h", "y": legend_y},
        height=height,
        **layout,
    )
    return figure


def add_fan(figure: go.Figure, forecast: ForecastOut) -> None:
    """The forecast as a fan: the range of every horizon (shaded, from the last close outwards) and the
    median through the horizons, each at the time its candle closes (the last close at its own close)."""
    last, bands = forecast.last_close, forecast.horizons
    xs = [forecast.candle_time + HOUR, *(b.closes_at() for b in bands)]
    upper = [last, *(b.upper for b in bands)]
    lower = [last, *(b.lower for b in bands)]
    level = bands[0].level
    figure.add_trace(
        go.Scatter(
            x=xs + xs[::-1],
            y=upper + lower[::-1],
            fill="toself",
            fillcolor="rgba(255, 127, 14, 0.18)",
            line={"width": 0},
            hoverinfo="skip",
            name=f"{level:.0%} range",
        )
    )
    figure.add_trace(
        go.Scatter(
            x=xs,
            y=[last, *(b.median for b in bands)],
            mode="lines+markers",
            line={"color": FORECAST_COLOR, "dash": "dot"},
            marker={"size": [0, *([9] * len(bands))], "color": FORECAST_COLOR},
            customdata=[[0, last, last], *([b.hours, b.lower, b.upper] for b in bands)],
            name=f"median forecast (model v{forecast.model_version})",
            hovertemplate="+%{customdata[0]} h: median %{y:.6g}<br>range %{customdata[1]:.6g} – "
            "%{customdata[2]:.6g}<extra></extra>",
        )
    )


def track_record_figure(record: TrackRecord, *, pair: str) -> go.Figure:
    """Forecasts (with their ranges, green inside / red outside) against what happened (top), the running
    MAE, model vs persistence (middle) and the running coverage of the ranges (bottom)."""
    ranged = record.ranged > 0
    titles = ("forecast vs actual close", "running MAE", "running coverage of the ranges")
    figure = make_subplots(
        rows=3 if ranged else 2,
        cols=1,
        shared_xaxes=True,
        row_heights=[0.5, 0.25, 0.25] if ranged else [0.62, 0.38],
        vertical_spacing=0.07,
        subplot_titles=titles[: 3 if ranged else 2],
    )
    rows, times = record.resolved, [f.target_time for f in record.resolved]
    figure.add_trace(
        go.Scatter(x=times, y=[f.actual for f in rows], mode="lines+markers", name="actual close"),
        row=1,
        col=1,
    )
    error_y = None
    if ranged:
        error_y = {
            "type": "data",
            "symmetric": False,
            "array": [(f.upper - f.predicted) if f.upper is not None else 0 for f in rows],
            "arrayminus": [(f.predicted - f.lower) if f.lower is not None else 0 for f in rows],
            "color": "rgba(255, 127, 14, 0.6)",
        }
    colors = [FORECAST_COLOR if f.inside is None else ("#12b76a" if f.inside else "#d92d20") for f in rows]
    figure.add_trace(
        go.Scatter(
            x=times,
            y=[f.predicted for f in rows],
            mode="markers",
            name="model forecast (median, range)" if ranged else "model forecast",
            marker={"color": colors, "symbol": "star", "size": 9},
            error_y=error_y,
            customdata=[f.model_version for f in rows],
            hovertemplate="%{x}<br>forecast %{y:.6g}<br>model v%{customdata}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    mae = (
        (record.running_mae_model, "MAE model", {"color": FORECAST_COLOR}),
        (record.running_mae_persistence, "MAE persistence", {"dash": "dash"}),
    )
    figure.add_traces([go.Scatter(x=times, y=y, name=n, line=line) for y, n, line in mae], rows=2, cols=1)
    if ranged:
        figure.add_trace(
            go.Scatter(x=times, y=record.running_coverage, name="coverage", line={"color": "#ff7f0e"}),
            row=3,
            col=1,
        )
        if record.level is not None:
            figure.add_hline(y=record.level, line_dash="dot", line_color="gray", row=3, col=1)
    return styled(figure, f"{pair.upper()} track record", 600 if ranged else 480)


def empty_figure(message: str) -> go.Figure:
    """A blank chart carrying ``message`` (no data, an unknown pair, ...)."""
    figure = go.Figure()
    figure.update_layout(
        template=CHART_TEMPLATE,
        xaxis={"visible": False},
        yaxis={"visible": False},
        annotations=[{"text": message, "showarrow": False, "font": {"size": 15}}],
        height=300,
    )
    return figure
