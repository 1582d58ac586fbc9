"""Where candles come from: the :class:`MarketData` protocol and the source the settings choose."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from mur.data.binance import BinanceMarketData
from mur.data.bundled import BundledMarketData
from mur.data.synthetic import SyntheticPairs
from mur.errors import MarketDataError
from mur.timeutil import HOUR, as_utc, iso

if TYPE_CHECKING:
    import pandas as pd

    from mur.clock import MarketClock
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


class ClockedMarketData:
    """A recorded history seen through the market clock: candles that have not closed at market "now"
    (open time at or after :meth:`MarketClock.hour`) are invisible, as on a live exchange."""

    def __init__(self, archive: MarketData, clock: MarketClock) -> None:
        self.archive = archive
        self.clock = clock
        self.name = getattr(archive, "name", "bundled")

    def klines(self, pair: str, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
        """The archive's candles in ``[start, min(end, market hour))``."""
        hi = self.clock.hour()  # the open time of the first candle not closed yet
        if end is not None:
            hi = min(hi, as_utc(end))
        lo = as_utc(start)
        if lo is not None and lo >= hi:
            raise MarketDataError(
                f"no candles for {pair} from {iso(lo)}: the market clock stands at {iso(self.clock.now())}"
            )
        return self.archive.klines(pair, start=lo, end=hi)

    def pairs(self) -> list[str]:
        return self.archive.pairs()

    def data_range(self, pair: str) -> tuple[datetime, datetime]:
        """First open time and last open time visible now (the archive's last once the clock passed it)."""
        first, last = self.archive.data_range(pair)
        latest_visible = self.clock.hour() - HOUR
        if as_utc(first) > latest_visible:
            raise MarketDataError(
                f"no candles for {pair} yet: its data starts {iso(first)}, the market clock stands at "
                f"{iso(self.clock.now())}"
            )
        return first, min(as_utc(last).to_pydatetime(), latest_visible)


def get_market_data(settings: Settings) -> MarketData:
    """The source chosen by ``settings.data.market_data`` (``bundled`` or ``binance``); recorded histories (the
    bundled data and the pairs an admin uploaded) are seen through the market clock (:mod:`mur.clock`)."""
    if settings.data.market_data == "binance":
        return BinanceMarketData(settings)
    if settings.data.market_data == "bundled":
        from mur.clock import market_clock
        from mur.data.uploaded import UploadedPairs

        archive: MarketData = BundledMarketData()
        if settings.data.synthetic_pairs > 0:  # scale tests: syn001_usdt … (mur/data/synthetic.py)
            archive = SyntheticPairs(BundledMarketData(), settings.data.synthetic_pairs)
        # the pairs an admin uploaded (mur/data/catalogue.py) are read from PostgreSQL
        return ClockedMarketData(UploadedPairs(archive, settings), market_clock(settings))
    raise MarketDataError(f"unknown market data source {settings.data.market_data!r} (bundled or binance)")
