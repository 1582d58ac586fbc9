"""The candle frame every source returns, and the checks and gap filling done on it.

The typed frame has :data:`KLINE_COLUMNS`, in that order: ``timestamp`` (open time) and ``close_time`` as
``datetime64[ns, UTC]``, prices and volumes ``float64``, ``trades`` and ``ignore`` ``int64``, sorted by
``timestamp`` with no duplicates and a fresh ``RangeIndex``. A window is half-open: it holds the candles
whose open time ``t`` satisfies ``start <= t < end``.

Gap policy (see ``docs/data.md``): sources return candles as published; :func:`regularize_hourly` puts them
on a regular hourly grid and forward-fills missing hours explicitly.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from mur.errors import DataValidationError, MarketDataError
from mur.timeutil import as_utc

logger = logging.getLogger(__name__)

KLINE_COLUMNS: tuple[str, ...] = (
    "timestamp",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_av",
    "trades",
    "tb_base_av",
    "tb_quote_av",
    "ignore",
)
"""Binance kline fields in Binance's order; ``timestamp`` is the open time."""

TIMESTAMP_DTYPE = "datetime64[ns, UTC]"
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
FLOAT_COLUMNS: tuple[str, ...] = (*PRICE_COLUMNS, "volume", "quote_av", "tb_base_av", "tb_quote_av")
INT_COLUMNS: tuple[str, ...] = ("trades", "ignore")
REQUIRED_CSV_COLUMNS: tuple[str, ...] = ("timestamp", "open", "high", "low", "close", "volume")
INTERVAL = "1h"
HOUR_MS = 3_600_000
CLOSE_OFFSET_MS = HOUR_MS - 1
"""A 1h candle opened at ``t`` closes at ``t + 3599999 ms``."""


# --- typed frames ---------------------------------------------------------------------------------
def ms_to_utc(values: Any) -> pd.DatetimeIndex:
    """Epoch milliseconds -> ``datetime64[ns, UTC]``."""
    return pd.to_datetime(np.asarray(values, dtype="int64"), unit="ms", utc=True).as_unit("ns")


def typed_klines_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """Build the typed frame from Binance-shaped data (ms integer times, numeric or numeric-string fields)."""
    columns = {c: ms_to_utc(pd.to_numeric(raw[c])) for c in ("timestamp", "close_time")}
    columns |= {c: pd.to_numeric(raw[c]).astype("float64").to_numpy() for c in FLOAT_COLUMNS}
    columns |= {c: pd.to_numeric(raw[c]).astype("int64").to_numpy() for c in INT_COLUMNS}
    return pd.DataFrame(columns).loc[:, list(KLINE_COLUMNS)]


# --- windows -------------------------------------------------------------------------------------
def format_ts(value: Any) -> str:
    """Short, unambiguous UTC label for messages: ``2023-03-24 13:00 UTC``."""
    if value is None:
        return "open end"
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        return str(value)
    if ts is pd.NaT:
        return "NaT"
    ts = as_utc(ts)
    fmt = "%Y-%m-%d %H:%M:%S" if ts.second or ts.microsecond else "%Y-%m-%d %H:%M"
    return ts.strftime(fmt) + " UTC"


def select_window(df: pd.DataFrame, start: pd.Timestamp | None, end: pd.Timestamp | None) -> pd.DataFrame:
    """Rows with ``start <= timestamp < end`` of ``df`` (sorted by ``timestamp``), re-indexed from 0."""
    ts = df["timestamp"]
    lo = 0 if start is None else int(ts.searchsorted(start))
    hi = len(df) if end is None else int(ts.searchsorted(end))
    return df.iloc[lo:hi].reset_index(drop=True)


def check_window(
    pair: str, start: datetime | None, end: datetime | None
) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """The window's bounds as UTC (:func:`as_utc`); an empty window (``start >= end``) is refused before any
    data is read."""
    lo, hi = as_utc(start), as_utc(end)
    if lo is not None and hi is not None and lo >= hi:
        raise MarketDataError(
            f"empty window for {pair}: start {format_ts(lo)} is not before end {format_ts(hi)}"
        )
    return lo, hi


def no_candles_message(
    pair: str, start: pd.Timestamp | None, end: pd.Timestamp | None, extra: str = ""
) -> str:
    """The error message for a window with no candle, naming its bounds (``extra``: where we looked)."""
    lo = format_ts(start) if start is not None else "the beginning"
    hi = format_ts(end) if end is not None else "now"
    return f"no candles for {pair} between {lo} and {hi}{extra}"


# --- gaps ----------------------------------------------------------------------------------------
def missing_hours(df: pd.DataFrame) -> list[pd.Timestamp]:
    """Open times absent from the hourly grid between the first and last candle."""
    if len(df) < 2:
        return []
    ts = pd.DatetimeIndex(df["timestamp"])
    grid = pd.date_range(ts[0], ts[-1], freq="h").as_unit(ts.unit)
    return list(grid.difference(ts))


def regularize_hourly(df: pd.DataFrame, *, label: str = "candles") -> tuple[pd.DataFrame, list[pd.Timestamp]]:
    """Reindex on a regular hourly grid and forward-fill missing hours (the ``ffill`` gap policy).

    A missing hour becomes a flat candle: open = high = low = close = the previous close, volumes and
    trades 0, ``close_time`` = open time + 3599999 ms. Existing rows are left untouched (including
    Binance's zero-volume placeholders). Returns the new frame and the open times that were filled.
    """
    _check_order(df)
    ts = pd.DatetimeIndex(df["timestamp"])
    off_grid = ts != ts.floor("h")
    if off_grid.any():
        bad = ts[np.argmax(off_grid)]
        raise DataValidationError(f"candle open time {format_ts(bad)} is not on a whole hour")
    filled = missing_hours(df)
    if not filled:
        return df.reset_index(drop=True).copy(), []

    out = df.set_index("timestamp").asfreq("h")
    gap = out.index.isin(filled)
    prev_close = out["close"].ffill()
    for column in PRICE_COLUMNS:
        out.loc[gap, column] = prev_close[gap]
    out.loc[gap, [*FLOAT_COLUMNS[len(PRICE_COLUMNS) :], *INT_COLUMNS]] = 0
    out = out.astype(dict.fromkeys(INT_COLUMNS, "int64"))
    out["close_time"] = out["close_time"].where(~gap, out.index + pd.Timedelta(milliseconds=CLOSE_OFFSET_MS))
    out = out.reset_index().loc[:, list(df.columns)]

    shown = ", ".join(format_ts(t) for t in filled[:10])
    more = f" and {len(filled) - 10} more" if len(filled) > 10 else ""
    logger.warning("%s: forward-filled %d missing hour(s): %s%s", label, len(filled), shown, more)
    return out, filled


# --- validation ----------------------------------------------------------------------------------
def _check_order(df: pd.DataFrame) -> None:
    """Raise unless ``timestamp`` is strictly increasing and has no missing value."""
    if "timestamp" not in df.columns:
        raise DataValidationError("candles are missing column(s): timestamp")
    ts = df["timestamp"].reset_index(drop=True)
    if ts.isna().any():
        i = int(np.argmax(ts.isna().to_numpy()))
        raise DataValidationError(f"missing timestamp in row {i} of {len(ts)}")
    step = np.diff(ts.astype("int64").to_numpy())
    if (step > 0).all():
        return
    i = int(np.argmax(step <= 0)) + 1
    if step[i - 1] == 0:
        raise DataValidationError(f"duplicate timestamp {format_ts(ts[i])} (rows {i - 1} and {i})")
    raise DataValidationError(
        f"timestamps are not sorted: {format_ts(ts[i])} (row {i}) comes after {format_ts(ts[i - 1])}"
    )


def validate_candles(df: pd.DataFrame, *, min_rows: int = 0) -> None:
    """Raise :class:`DataValidationError` (one precise line) unless the candles are usable.

    Checks: required columns, at least ``min_rows`` rows, no NaN/inf in numeric columns, strictly positive
    prices, timestamps strictly increasing (sorted, no duplicates).
    """
    missing = [c for c in REQUIRED_CSV_COLUMNS if c not in df.columns]
    if missing:
        raise DataValidationError(f"candles are missing column(s): {', '.join(missing)}")
    if len(df) < min_rows:
        raise DataValidationError(f"need at least {min_rows} candles, got {len(df)}")
    ts = df["timestamp"].reset_index(drop=True)
    numeric = [c for c in KLINE_COLUMNS if c in df.columns and c not in ("timestamp", "close_time")]
    for column in numeric:
        try:
            values = df[column].to_numpy(dtype="float64", na_value=np.nan)
        except (TypeError, ValueError):
            raise DataValidationError(f"column '{column}' is not numeric") from None
        finite = np.isfinite(values)
        if not finite.all():
            i = int(np.argmin(finite))
            kind = "NaN" if np.isnan(values[i]) else f"{values[i]}"
            raise DataValidationError(f"column '{column}' has {kind} at {format_ts(ts[i])} (row {i})")
        if column in PRICE_COLUMNS:
            positive = values > 0
            if not positive.all():
                i = int(np.argmin(positive))
                raise DataValidationError(
                    f"non-positive {column} price {values[i]:g} at {format_ts(ts[i])} (row {i})"
                )
    _check_order(df)
