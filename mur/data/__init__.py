"""Hourly candles (Binance klines) from the bundled dataset or Binance's REST API, as one typed frame.

- :mod:`mur.data.candles`: the typed frame (:data:`KLINE_COLUMNS`), windows, validation, gap filling;
- :mod:`mur.data.user_csv`: a user's own candles CSV;
- :mod:`mur.data.bundled`: the dataset shipped in ``mur/data/klines``;
- :mod:`mur.data.binance`: Binance's REST API (or the local replay server);
- :mod:`mur.data.synthetic`: synthetic pairs (``syn001_usdt`` …) derived from the bundled series, for scale;
- :mod:`mur.data.source`: the :class:`MarketData` protocol and the source the settings choose.

This module only re-exports the public names; see ``docs/data.md``.
"""

from mur.data.binance import BinanceMarketData
from mur.data.bundled import BundledMarketData, bundled_pairs, load_bundled, read_bundled_csv
from mur.data.candles import KLINE_COLUMNS, format_ts, missing_hours, regularize_hourly, validate_candles
from mur.data.source import ClockedMarketData, MarketData, get_market_data
from mur.data.synthetic import load_synthetic, synthetic_pairs
from mur.data.user_csv import load_candles_csv

__all__ = [
    "ClockedMarketData",
    "KLINE_COLUMNS",
    "BinanceMarketData",
    "BundledMarketData",
    "MarketData",
    "bundled_pairs",
    "format_ts",
    "get_market_data",
    "load_bundled",
    "load_candles_csv",
    "load_synthetic",
    "missing_hours",
    "read_bundled_csv",
    "regularize_hourly",
    "synthetic_pairs",
    "validate_candles",
]
