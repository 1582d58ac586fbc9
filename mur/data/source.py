"""Where candles come from: the :class:`MarketData` protocol and the source the settings choose."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from mur.data.binance import BinanceMarketData
from mur.data.bundled import BundledMarketData
from mur.data.synthetic import SyntheticPairs
from mur.errors import MarketDataError

if TYPE_CHECKING:
    import pandas as pd

    from mur.settings import Settings


@runtime_checkable
class MarketData(Protocol):
    """A source of hourly candles."""

    def klines(self, pair: str, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
        """Typed candles whose open time ``t`` satisfies ``start <= t < end`` (``None``: unbounded)."""
        ...

    def pairs(self) -> list[str]:
        """Pairs this source can answer for."""
        ...

    def data_range(self, pair: str) -> tuple[datetime, datetime]:
        """(first open time, last open time) available for ``pair``."""
        ...


def get_market_data(settings: Settings | None = None) -> MarketData:
    """The source chosen by ``settings.market_data`` (``bundled`` or ``binance``)."""
    if settings is None:
        from mur.settings import get_settings

        settings = get_settings()
    if settings.market_data == "binance":
        return BinanceMarketData(settings)
    if settings.market_data == "bundled":
        if settings.synthetic_pairs > 0:  # scale tests: syn001_usdt … (mur/data/synthetic.py)
            return SyntheticPairs(BundledMarketData(), settings.synthetic_pairs)
        return BundledMarketData()
    raise MarketDataError(f"unknown market data source {settings.market_data!r} (bundled or binance)")
