"""Synthetic pairs for scale tests: ``syn001_usdt`` … derived deterministically from the bundled real series.

The bundled dataset has five real pairs; serving or training hundreds of them offline needs more. Pair
``syn{i:03d}_usdt`` (``i`` from 1) is built from bundled pair ``bundled_pairs()[(i - 1) % 5]``:

- the hourly log-returns of the close are cut into 24-hour blocks and the blocks are **shuffled** with a
  generator seeded by ``i`` (same ``i``, same series, on every machine and in every process);
- the price path is rebuilt from the shuffled returns and **scaled** by a factor in [0.01, 100] that depends
  on ``i`` (so no two synthetic pairs share a price level);
- open/high/low keep each candle's ratios to its close, volume/trades come with the candle, so every candle
  is consistent (``low <= open, close <= high``); open times are those of the real series.

These are **not market data**: they exist so that scale tests and benchmarks run without network. The API
marks them (``synthetic: true`` in ``/v1/pairs`` and ``/v1/models``); they are offered only when
``MUR_SYNTHETIC_PAIRS`` (:attr:`~mur.settings.Settings.synthetic_pairs`) is above 0, and never by the
Binance source.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from mur.data.bundled import bundled_frame, bundled_pairs
from mur.data.candles import check_window, format_ts, no_candles_message
from mur.errors import MarketDataError, UnknownPairError

SYNTHETIC_RE = re.compile(r"^syn(\d{3,4})_usdt$")
"""Synthetic pair names: ``syn001_usdt`` … ``syn9999_usdt``."""
BLOCK_HOURS = 24
MAX_SYNTHETIC = 9999


def synthetic_pairs(count: int) -> list[str]:
    """The first ``count`` synthetic pairs, in order (``MUR_SYNTHETIC_PAIRS`` allows at most
    :data:`MAX_SYNTHETIC`)."""
    if count > MAX_SYNTHETIC:
        raise ValueError(f"at most {MAX_SYNTHETIC} synthetic pairs, not {count}")
    return [f"syn{i:03d}_usdt" for i in range(1, max(0, int(count)) + 1)]


def synthetic_index(pair: str) -> int | None:
    """``3`` for ``syn003_usdt``; None when ``pair`` is not a synthetic name."""
    m = SYNTHETIC_RE.match(pair)
    return int(m.group(1)) if m and int(m.group(1)) >= 1 else None


def is_synthetic(pair: str) -> bool:
    """Whether ``pair`` names a synthetic pair (whatever the configured count)."""
    return synthetic_index(pair) is not None


def synthetic_base(pair: str) -> str:
    """The bundled real pair that ``pair`` is derived from."""
    index = synthetic_index(pair)
    if index is None:
        raise ValueError(f"not a synthetic pair: {pair!r}")
    real = bundled_pairs()
    return real[(index - 1) % len(real)]


def _scale(index: int) -> float:
    """A price factor in [0.01, 100], spread over the indices (golden-ratio sequence on a log scale)."""
    frac = (index * 0.6180339887498949) % 1.0
    return float(10.0 ** (4.0 * frac - 2.0))


@lru_cache(maxsize=MAX_SYNTHETIC)
def _plan(pair: str) -> tuple[str, np.ndarray, np.ndarray]:
    """``(base pair, row order, price factor per row)``: all a synthetic pair keeps in memory (~0.2 MB for a
    year of candles; the candles themselves are built from the real frame per request window)."""
    index = synthetic_index(pair)
    if index is None:
        raise ValueError(f"not a synthetic pair: {pair!r}")
    base = synthetic_base(pair)
    close = bundled_frame(base)["close"].to_numpy(dtype=np.float64)
    n = len(close)
    order = np.arange(n, dtype=np.int32)
    blocks = [order[i : i + BLOCK_HOURS] for i in range(1, n, BLOCK_HOURS)]  # row 0 anchors the path
    rng = np.random.default_rng(10_000 + index)
    shuffled = np.concatenate([order[:1]] + [blocks[j] for j in rng.permutation(len(blocks))])
    log_ret = np.zeros(n)
    log_ret[1:] = np.diff(np.log(close))
    new_close = close[0] * _scale(index) * np.exp(np.cumsum(log_ret[shuffled]))
    return base, shuffled, (new_close / close[shuffled]).astype(np.float32)


def _build(pair: str, lo: int, hi: int) -> pd.DataFrame:
    """Candles ``lo:hi`` (row positions on the base series' hours) of synthetic ``pair``."""
    base, order, factor = _plan(pair)
    real = bundled_frame(base)
    rows = order[lo:hi]
    scale = factor[lo:hi].astype(np.float64)
    out = real.iloc[rows].reset_index(drop=True)
    out["timestamp"] = real["timestamp"].to_numpy()[lo:hi]
    out["close_time"] = real["close_time"].to_numpy()[lo:hi]
    for column in ("open", "high", "low", "close", "quote_av", "tb_quote_av"):
        out[column] = out[column].to_numpy(dtype=np.float64) * scale
    return out


def load_synthetic(pair: str) -> pd.DataFrame:
    """All candles of synthetic ``pair`` as the typed klines frame (the same on every call)."""
    return _build(pair, 0, len(_plan(pair)[1]))


class SyntheticPairs:
    """A bundled source plus ``count`` synthetic pairs (``syn001_usdt`` …): the :class:`MarketData` that
    ``get_market_data`` returns when ``MUR_SYNTHETIC_PAIRS`` > 0 with bundled data."""

    name = "bundled"

    def __init__(self, real: Any, count: int) -> None:
        self.real = real
        self.count = max(0, int(count))

    def _synthetic(self, pair: str) -> bool:
        index = synthetic_index(pair)
        if index is None:
            return False
        if index > self.count:
            raise UnknownPairError(
                f"unknown pair {pair!r}: only {self.count} synthetic pairs are configured (MUR_SYNTHETIC_PAIRS)"
            )
        return True

    def klines(self, pair: str, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
        """Candles in ``[start, end)`` of a real or a synthetic pair."""
        if not self._synthetic(pair):
            return self.real.klines(pair, start, end)
        lo, hi = check_window(pair, start, end)
        times = bundled_frame(synthetic_base(pair))["timestamp"]  # the synthetic candles' open times
        i = 0 if lo is None else int(times.searchsorted(lo))
        j = len(times) if hi is None else int(times.searchsorted(hi))
        out = _build(pair, i, max(i, j))
        if out.empty:
            first, last = self.data_range(pair)
            covers = f" (synthetic data covers {format_ts(first)} to {format_ts(last)})"
            raise MarketDataError(no_candles_message(pair, lo, hi, covers))
        return out

    def pairs(self) -> list[str]:
        """The real pairs, then the synthetic ones."""
        return [*self.real.pairs(), *synthetic_pairs(self.count)]

    def data_range(self, pair: str) -> tuple[datetime, datetime]:
        """First and last open time (a synthetic pair spans its real base series)."""
        return self.real.data_range(synthetic_base(pair) if self._synthetic(pair) else pair)
