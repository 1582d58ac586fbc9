"""The dashboard's "now" is the market clock's (fast tier): the candles shown, the forecasts counted as
resolved or waiting, the chart's "now" line. Session and login timing stay on wall time (not tested here)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pandas as pd

from dash_app.charts import candlestick_figure, track_record
from dash_app.context import DashboardContext
from dash_app.pages.forecast import recent_candles
from mur.clock import MarketClock
from mur.data import BundledMarketData
from mur.db import Forecast
from mur.security import HashingGate
from mur.settings import Settings

NOW = datetime(2024, 11, 5, 14, 25, tzinfo=UTC)
HOUR = datetime(2024, 11, 5, 14, tzinfo=UTC)


def frozen(at: datetime = NOW) -> MarketClock:
    return MarketClock(start=at, origin=time.time(), speed=0)


class ClockedSource:
    """The bundled history with a ``clock`` attribute, as the core's clocked source has (it hides nothing
    itself here: the page must still never show a candle of the current market hour or later)."""

    def __init__(self, clock: MarketClock) -> None:
        self.archive = BundledMarketData()
        self.clock = clock

    def klines(self, pair: str, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
        return self.archive.klines(pair, start=start, end=end)

    def pairs(self) -> list[str]:
        return self.archive.pairs()

    def data_range(self, pair: str) -> tuple[datetime, datetime]:
        return self.archive.data_range(pair)


def context_with(market: Any) -> DashboardContext:
    context = DashboardContext(
        settings=Settings(env="test", pairs=["btc_usdt"]),
        db=cast(Any, None),
        serve=cast(Any, None),
        airflow=cast(Any, None),
        secret_key="x" * 32,
        hashing=HashingGate(1),
    )
    context.market = market  # before its first use: the cached property is never built
    return context


def forecast(target: datetime, actual: float | None, *, predicted: float = 101.0) -> Forecast:
    return Forecast(
        id=0,
        pair="btc_usdt",
        model_version="7",
        made_at=target - timedelta(hours=1),
        target_time=target,
        predicted=predicted,
        last_close=100.0,
        actual=actual,
    )


def test_context_uses_the_sources_clock_and_shows_only_closed_candles() -> None:
    context = context_with(ClockedSource(frozen()))
    assert context.clock.now() == NOW and context.clock.hour() == HOUR
    candles = recent_candles(context, "btc_usdt")
    assert len(candles) == context.candles_shown
    assert candles["timestamp"].iloc[-1] == pd.Timestamp(HOUR - timedelta(hours=1))  # the last closed hour


def test_context_without_a_source_clock_reads_the_settings_clock() -> None:
    context = context_with(BundledMarketData())
    start = datetime(2025, 3, 3, 9, 30, tzinfo=UTC)
    context.settings = context.settings.replace(clock_start=start, clock_speed=0.0, clock_origin=time.time())
    assert context.clock.now() == start
    assert recent_candles(context, "btc_usdt")["timestamp"].iloc[-1] == pd.Timestamp("2025-03-03T08:00Z")


def test_track_record_resolves_in_market_time() -> None:
    forecasts = [
        forecast(HOUR - timedelta(hours=3), 100.0),  # resolved
        forecast(HOUR - timedelta(hours=2), 102.0),  # resolved
        forecast(HOUR - timedelta(hours=1), None),  # candle closed, close not filled yet
        forecast(HOUR, None),  # the current hour's candle: waiting
        forecast(HOUR + timedelta(hours=3), None),  # waiting
        forecast(HOUR + timedelta(hours=5), 99.0),  # a replay that ran ahead stored it: not shown yet
    ]
    record = track_record(forecasts, market_hour=HOUR)
    assert [f.actual for f in record.resolved] == [100.0, 102.0]
    assert record.running_mae_model[-1] == 1.0
    assert len(track_record(forecasts).resolved) == 3


def test_candle_chart_marks_market_now() -> None:
    candles = BundledMarketData().klines("btc_usdt", start=HOUR - timedelta(hours=5), end=HOUR)
    figure = candlestick_figure(candles, pair="btc_usdt", forecast=None, now=NOW)
    assert len(figure.data) == 1  # the line is a shape, not a trace
    line = figure.layout.shapes[0]
    assert pd.Timestamp(line.x0) == pd.Timestamp(NOW) and line.yref == "y domain"  # the whole plot height
    assert figure.layout.annotations[0].text == "market now"
