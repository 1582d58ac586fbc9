"""Candles from Binance's spot REST API via python-binance (or a compatible server, e.g. the replay)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd

from mur.data.candles import (
    INTERVAL,
    KLINE_COLUMNS,
    check_window,
    no_candles_message,
    select_window,
    typed_klines_frame,
)
from mur.errors import MarketDataError, UnknownPairError
from mur.pairs import is_pair, lenient_pair, pair_to_symbol

if TYPE_CHECKING:
    from mur.settings import Settings

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class BinanceMarketData:
    """Candles from Binance's spot REST API via python-binance (or a compatible server, e.g. the replay).

    No network at construction. Network failures, HTTP 429 and 5xx answers are retried with exponential
    backoff (``binance_max_retries`` retries, ``binance_backoff_s * 2**n`` seconds apart); an invalid symbol
    (Binance code -1121) raises :class:`UnknownPairError` at once. Candles still open (``close_time`` in the
    future) are dropped so that callers only see finished hours.
    """

    name = "binance"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.retries = 0
        """Retries made so far by this instance (for logs and tests)."""

    @cached_property
    def client(self) -> Any:
        """The python-binance ``Client``, created on first use without pinging."""
        from binance.client import Client

        client = Client(
            self.settings.data.binance_api_key or None,
            self.settings.data.binance_api_secret or None,
            ping=False,
        )
        if self.settings.data.binance_api_url:
            client.API_URL = self.settings.data.binance_api_url.rstrip("/")
        return client

    def _call(self, what: str, pair: str | None, call: Callable[[], _T]) -> _T:
        """Run ``call`` with retries on transient failures, mapping Binance errors to MurErrors."""
        import requests
        from binance.exceptions import BinanceAPIException, BinanceRequestException

        attempts = max(0, int(self.settings.data.binance_max_retries)) + 1
        error = ""
        for attempt in range(attempts):
            try:
                return call()
            except BinanceAPIException as exc:
                if exc.code == -1121:
                    symbol = pair_to_symbol(pair) if pair else "?"
                    raise UnknownPairError(
                        f"unknown pair {pair!r}: Binance says symbol {symbol} is invalid (code -1121)"
                    ) from exc
                if exc.status_code != 429 and exc.status_code < 500:
                    raise MarketDataError(
                        f"Binance rejected {what}: {exc.message} (code {exc.code}, HTTP {exc.status_code})"
                    ) from exc
                error = f"HTTP {exc.status_code}: {exc.message}"
            except (
                requests.exceptions.ConnectionError,
                requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError,
                BinanceRequestException,
            ) as exc:
                error = f"{type(exc).__name__}: {exc}"
            if attempt + 1 < attempts:
                delay = self.settings.data.binance_backoff_s * 2**attempt
                self.retries += 1
                logger.warning(
                    "Binance %s failed (%s); retry %d/%d in %.2fs",
                    what,
                    error,
                    attempt + 1,
                    attempts - 1,
                    delay,
                )
                time.sleep(delay)
        url = self.settings.data.binance_api_url or "api.binance.com"
        raise MarketDataError(f"Binance {what} failed after {attempts} attempts ({url}): {error}")

    def klines(self, pair: str, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
        """Finished 1h candles in ``[start, end)`` fetched page by page (1000 per request)."""
        symbol = pair_to_symbol(pair)
        lo, hi = check_window(pair, start, end)
        start_ms = int(lo.value // 1_000_000) if lo is not None else 0
        end_ms = int(hi.value // 1_000_000) - 1 if hi is not None else None

        def fetch() -> list[list[Any]]:
            try:
                return self.client.get_historical_klines(symbol, INTERVAL, start_ms, end_ms)
            except IndexError:  # python-binance's earliest-timestamp probe found no candle at all
                return []

        rows = self._call(f"klines request for {symbol}", pair, fetch)
        frame = typed_klines_frame(pd.DataFrame(rows, columns=list(KLINE_COLUMNS)))
        now = pd.Timestamp.now(tz="UTC")
        unfinished = frame["close_time"] >= now
        if unfinished.any():
            logger.debug("dropping %d unfinished %s candle(s)", int(unfinished.sum()), symbol)
            frame = frame.loc[~unfinished]
        frame = frame.sort_values("timestamp", kind="stable").drop_duplicates("timestamp")
        out = select_window(frame, lo, hi)
        if out.empty:
            raise MarketDataError(no_candles_message(pair, lo, hi, " on Binance"))
        return out

    def pairs(self) -> list[str]:
        """Trading spot pairs listed by ``exchangeInfo`` whose symbol splits into base and quote."""
        info = self._call("exchangeInfo request", None, self.client.get_exchange_info)
        symbols = [e["symbol"] for e in info.get("symbols", []) if e.get("status") == "TRADING"]
        # lenient_pair returns a symbol it cannot split unchanged: is_pair leaves it out
        return sorted({pair for pair in map(lenient_pair, symbols) if is_pair(pair)})

    def data_range(self, pair: str) -> tuple[datetime, datetime]:
        """First open time (``startTime=0``) and the last finished open time on Binance (2 requests)."""
        symbol = pair_to_symbol(pair)
        request = partial(self.client.get_klines, symbol=symbol, interval=INTERVAL)
        head = self._call(f"klines request for {symbol}", pair, partial(request, startTime=0, limit=1))
        tail = self._call(f"klines request for {symbol}", pair, partial(request, limit=2))
        if not head or not tail:
            raise MarketDataError(no_candles_message(pair, None, None, " on Binance"))
        now_ms = time.time() * 1000
        finished = [row for row in tail if int(row[6]) < now_ms] or tail[:1]
        return (
            pd.Timestamp(int(head[0][0]), unit="ms", tz="UTC"),
            pd.Timestamp(int(finished[-1][0]), unit="ms", tz="UTC"),
        )
