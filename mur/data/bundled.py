"""The dataset shipped in ``mur/data/klines`` (``{SYMBOL}-1h.csv.gz``, see ``SOURCES.md``): no network."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any

import pandas as pd

from mur.data.candles import (
    INTERVAL,
    check_window,
    format_ts,
    no_candles_message,
    select_window,
    typed_klines_frame,
)
from mur.errors import MarketDataError, UnknownPairError
from mur.pairs import pair_to_symbol, symbol_to_pair

_BUNDLED_SUFFIX = f"-{INTERVAL}.csv.gz"


def _bundled_dir() -> Any:
    """The packaged klines folder (an importlib.resources Traversable; works from a wheel)."""
    from importlib.resources import files

    return files("mur.data") / "klines"


@lru_cache(maxsize=1)
def _bundled_symbols() -> tuple[str, ...]:
    names = [entry.name for entry in _bundled_dir().iterdir() if entry.name.endswith(_BUNDLED_SUFFIX)]
    return tuple(sorted(name[: -len(_BUNDLED_SUFFIX)] for name in names))


def bundled_pairs() -> list[str]:
    """Pairs with a bundled file, sorted (``["bnb_usdt", "btc_usdt", ...]``)."""
    return sorted(symbol_to_pair(symbol) for symbol in _bundled_symbols())


def read_bundled_csv(symbol: str, *, as_text: bool = False) -> pd.DataFrame:
    """Read ``{SYMBOL}-1h.csv.gz`` as stored (integer ms times); ``as_text`` keeps every field as text."""
    resource = _bundled_dir() / f"{symbol}{_BUNDLED_SUFFIX}"
    with resource.open("rb") as fh:
        return pd.read_csv(fh, compression="gzip", dtype=str if as_text else None)


@lru_cache(maxsize=16)
def _load_bundled_cached(symbol: str) -> pd.DataFrame:
    df = typed_klines_frame(read_bundled_csv(symbol))
    df = df.sort_values("timestamp", kind="stable").drop_duplicates("timestamp", keep="first")
    return df.reset_index(drop=True)


def bundled_frame(pair: str) -> pd.DataFrame:
    """All bundled candles for ``pair`` as the typed frame, read once per process and shared: not to be
    changed (:func:`load_bundled` returns a copy)."""
    symbol = pair_to_symbol(pair)
    if symbol not in _bundled_symbols():
        raise UnknownPairError(f"unknown pair {pair!r}: the bundled data has {', '.join(bundled_pairs())}")
    return _load_bundled_cached(symbol)


def load_bundled(pair: str) -> pd.DataFrame:
    """All bundled candles for ``pair`` as the typed frame (file read once per process; returns a copy)."""
    return bundled_frame(pair).copy()


class BundledMarketData:
    """Candles from the dataset shipped in ``mur/data/klines`` (no network)."""

    name = "bundled"

    def klines(self, pair: str, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
        """Bundled candles in ``[start, end)``; naive datetimes are read as UTC."""
        lo, hi = check_window(pair, start, end)
        full = bundled_frame(pair)
        out = select_window(full, lo, hi)
        if out.empty:
            first, last = full["timestamp"].iloc[0], full["timestamp"].iloc[-1]
            covers = f" (bundled data covers {format_ts(first)} to {format_ts(last)})"
            raise MarketDataError(no_candles_message(pair, lo, hi, covers))
        return out.copy()

    def pairs(self) -> list[str]:
        """Bundled pairs."""
        return bundled_pairs()

    def data_range(self, pair: str) -> tuple[datetime, datetime]:
        """First and last bundled open time."""
        full = bundled_frame(pair)
        return full["timestamp"].iloc[0], full["timestamp"].iloc[-1]
