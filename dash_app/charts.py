"""Figures and track-record statistics for the Forecast page (pure: data in, plotly figures out)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import plotly.graph_objects as go
from plotly.subplots import make_subplots

if TYPE_CHECKING:
    import pandas as pd

    from dash_app.clients import ServeForecast
    from mur.db import Forecast

CHART_TEMPLATE = "plotly_white"
FORECAST_COLOR = "#d62728"


@dataclass(frozen=True)
class TrackRecord:
    """Resolved forecasts (``actual`` known) in target-time order, with running MAEs."""

    times: list[datetime]
    predicted: list[float]
    actual: list[float]
    persistence: list[float]
    versions: list[str]
    running_mae_model: list[float]
    running_mae_persistence: list[float]
    pending: int

    @property
    def count(self) -> int:
        return len(self.times)

    @property
    def mae_model(self) -> float | None:
        return self.running_mae_model[-1] if self.running_mae_model else None

    @property
    def mae_persistence(self) -> float | None:
        return self.running_mae_persistence[-1] if self.running_mae_persistence else None


def running_mean(values: Sequence[float]) -> list[float]:
    """Cumulative mean: element ``i`` is the mean of ``values[:i+1]``."""
    out: list[float] = []
    total = 0.0
    for i, value in enumerate(values, start=1):
        total += value
        out.append(total / i)
    return out


def track_record(forecasts: Sequence[Forecast]) -> TrackRecord:
    """Running MAE of the model vs persistence (tomorrow = today's last close) over resolved forecasts.

    When several forecasts share a target time (different model versions), each counts: the record is the
    model's, whichever version was champion when the forecast was made.
    """
    resolved = sorted(
        (f for f in forecasts if f.actual is not None), key=lambda f: (f.target_time, f.made_at)
    )
    actual = [float(f.actual) for f in resolved if f.actual is not None]
    predicted = [f.predicted for f in resolved]
    persistence = [f.last_close for f in resolved]
    return TrackRecord(
        times=[f.target_time for f in resolved],
        predicted=predicted,
        actual=actual,
        persistence=persistence,
        versions=[f.model_version for f in resolved],
        running_mae_model=running_mean([abs(p - a) for p, a in zip(predicted, actual, strict=True)]),
        running_mae_persistence=running_mean([abs(p - a) for p, a in zip(persistence, actual, strict=True)]),
        pending=sum(1 for f in forecasts if f.actual is None),
    )


def candlestick_figure(candles: pd.DataFrame, *, pair: str, forecast: ServeForecast | None) -> go.Figure:
    """Recent candles, with the next-hour forecast drawn from the last close to the predicted close."""
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
        add_fan(figure, forecast, candles)
    elif forecast is not None:
        last_time = candles["timestamp"].iloc[-1]
        last_close = float(candles["close"].iloc[-1]) if forecast.last_close is None else forecast.last_close
        start_time = forecast.candle_time or last_time
        figure.add_trace(
            go.Scatter(
                x=[start_time, forecast.target_time],
                y=[last_close, forecast.forecast],
                mode="lines+markers",
                line={"color": FORECAST_COLOR, "dash": "dot"},
                marker={"size": [0, 12], "symbol": "star", "color": FORECAST_COLOR},
                name=f"forecast (model v{forecast.model_version})",
                hovertemplate="%{x}<br>forecast close %{y:.6g}<extra></extra>",
            )
        )
    figure.update_layout(
        template=CHART_TEMPLATE,
        title=f"{pair.upper()} hourly candles",
        xaxis_rangeslider_visible=False,
        margin={"l": 50, "r": 20, "t": 50, "b": 40},
        legend={"orientation": "h", "y": -0.12},
        height=460,
    )
    return figure


def add_fan(figure: go.Figure, forecast: ServeForecast, candles: pd.DataFrame) -> None:
    """The forecast as a fan: the range of every horizon (shaded, from the last close outwards) and the
    median through the horizons."""
    start = forecast.candle_time or candles["timestamp"].iloc[-1]
    last = float(candles["close"].iloc[-1]) if forecast.last_close is None else forecast.last_close
    bands = list(forecast.horizons)
    xs = [start, *(b.target_time for b in bands)]
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
    """Forecasts against what happened (top) and the running MAE, model vs persistence (bottom)."""
    figure = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        row_heights=[0.62, 0.38],
        vertical_spacing=0.08,
        subplot_titles=("forecast vs actual close", "running MAE"),
    )
    figure.add_trace(
        go.Scatter(x=record.times, y=record.actual, mode="lines+markers", name="actual close"), row=1, col=1
    )
    figure.add_trace(
        go.Scatter(
            x=record.times,
            y=record.predicted,
            mode="markers",
            name="model forecast",
            marker={"color": FORECAST_COLOR, "symbol": "star", "size": 9},
            customdata=record.versions,
            hovertemplate="%{x}<br>forecast %{y:.6g}<br>model v%{customdata}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    figure.add_trace(
        go.Scatter(
            x=record.times, y=record.running_mae_model, name="MAE model", line={"color": FORECAST_COLOR}
        ),
        row=2,
        col=1,
    )
    figure.add_trace(
        go.Scatter(
            x=record.times, y=record.running_mae_persistence, name="MAE persistence", line={"dash": "dash"}
        ),
        row=2,
        col=1,
    )
    figure.update_layout(
        template=CHART_TEMPLATE,
        title=f"{pair.upper()} track record",
        margin={"l": 50, "r": 20, "t": 70, "b": 40},
        legend={"orientation": "h", "y": -0.12},
        height=480,
    )
    return figure


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
