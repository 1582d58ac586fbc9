"""Client-supplied candles (``POST /v1/forecast/{pair}``): validated into the typed klines frame.

The bounds below are the API's documented input contract (docs/serving.md): anything outside them is a 422
before a model sees it, so a forecast never meets an overflowing float32, an out-of-range timestamp or a
candle whose high is below its close.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from mur.errors import DataValidationError
from mur.serving.contract import (
    MAX_CANDLES,
    PRICE_MAX,
    PRICE_MIN,
    TIMESTAMP_MAX,
    TIMESTAMP_MAX_MS,
    TIMESTAMP_MIN,
    TIMESTAMP_MIN_MS,
    TIMESTAMP_TEXT_MAX,
    VOLUME_MAX,
)
from mur.timeutil import iso

if TYPE_CHECKING:
    import pandas as pd

_PRICE_FIELDS = ("open", "high", "low", "close")


def _parse_timestamp(value: Any, i: int) -> pd.Timestamp:
    """Epoch milliseconds (int) or an ISO-8601 string (naive = UTC) → UTC Timestamp in the documented range."""
    import pandas as pd

    where = f"candle {i}"
    if isinstance(value, bool) or value is None:
        raise DataValidationError(f"{where}: timestamp is missing")
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise DataValidationError(f"{where}: timestamp {value!r} is not whole epoch milliseconds")
        value = int(value)
    if isinstance(value, int):  # compared as integers: 10**400 never meets a float or an int64
        if not TIMESTAMP_MIN_MS <= value < TIMESTAMP_MAX_MS:
            raise DataValidationError(
                f"{where}: timestamp {_short(value)} is out of range: expected epoch milliseconds from "
                f"{iso(TIMESTAMP_MIN)} to {iso(TIMESTAMP_MAX)}"
            )
        return pd.Timestamp(value, unit="ms", tz="UTC")
    if isinstance(value, str):
        text = value.strip()
        try:
            if len(text) > TIMESTAMP_TEXT_MAX:
                raise ValueError(text)
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise DataValidationError(
                f"{where}: cannot parse timestamp {_short(value)} (ISO-8601 or epoch ms)"
            ) from None
        parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        if not TIMESTAMP_MIN <= parsed < TIMESTAMP_MAX:
            raise DataValidationError(
                f"{where}: timestamp {_short(value)} is out of range: expected {iso(TIMESTAMP_MIN)} "
                f"to {iso(TIMESTAMP_MAX)}"
            )
        return pd.Timestamp(parsed)
    raise DataValidationError(f"{where}: timestamp must be epoch milliseconds or an ISO-8601 string")


def _short(value: Any) -> str:
    """``repr(value)`` cut to 40 characters (error messages echo client input, never all of it)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(row: Mapping[str, Any], name: str, i: int, *, required: bool = True) -> float:
    value = row.get(name)
    if value is None:
        if required:
            raise DataValidationError(f"candle {i}: '{name}' is missing")
        return 0.0
    if isinstance(value, bool):
        raise DataValidationError(f"candle {i}: '{name}' is not a number")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float64
        raise DataValidationError(f"candle {i}: '{name}' is {_short(value)}; values must be finite") from None
    except (TypeError, ValueError):
        raise DataValidationError(f"candle {i}: '{name}' is not a number ({_short(value)})") from None
    if not math.isfinite(number):
        raise DataValidationError(f"candle {i}: '{name}' is {_short(value)}; prices must be finite")
    return number


def _price(row: Mapping[str, Any], name: str, i: int) -> float:
    number = _number(row, name, i)
    if number <= 0:
        raise DataValidationError(f"candle {i}: '{name}' must be positive, got {number:g}")
    if not PRICE_MIN <= number <= PRICE_MAX:
        raise DataValidationError(
            f"candle {i}: '{name}' is {number:g}; prices must lie in [{PRICE_MIN:g}, {PRICE_MAX:g}]"
        )
    return number


def candles_from_payload(rows: Sequence[Mapping[str, Any]], seq_len: int) -> pd.DataFrame:
    """Validate client candles and return them as the typed klines frame.

    Rules: exactly ``seq_len`` candles (at most :data:`MAX_CANDLES`); timestamps (epoch ms or ISO-8601) in
    ``[TIMESTAMP_MIN, TIMESTAMP_MAX)``, on whole hours, ascending and exactly one hour apart;
    open/high/low/close in ``[PRICE_MIN, PRICE_MAX]`` with ``low <= min(open, close)`` and
    ``high >= max(open, close)``; volume (optional) in ``[0, VOLUME_MAX]``.
    Violations raise :class:`DataValidationError` naming the first bad candle.
    """
    import pandas as pd

    from mur.data import CLOSE_OFFSET_MS, KLINE_COLUMNS, TIMESTAMP_DTYPE

    if not isinstance(rows, Sequence) or isinstance(rows, str | bytes):
        raise DataValidationError("'candles' must be a list of objects")
    if len(rows) > MAX_CANDLES:
        raise DataValidationError(f"at most {MAX_CANDLES} candles per request, got {len(rows)}")
    if len(rows) != seq_len:
        raise DataValidationError(f"need exactly {seq_len} candles (the model's window), got {len(rows)}")
    stamps: list[pd.Timestamp] = []
    values: dict[str, list[float]] = {name: [] for name in (*_PRICE_FIELDS, "volume")}
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise DataValidationError(
                f"candle {i}: expected an object with timestamp, open, high, low, close"
            )
        ts = _parse_timestamp(row.get("timestamp", row.get("open_time")), i)
        if ts != ts.floor("h"):
            raise DataValidationError(f"candle {i}: timestamp {iso(ts)} is not on a whole hour")
        if stamps and ts - stamps[-1] != pd.Timedelta(hours=1):
            order = "not after" if ts <= stamps[-1] else "more than one hour after"
            raise DataValidationError(
                f"candle {i}: timestamp {iso(ts)} is {order} candle {i - 1} ({iso(stamps[-1])}); "
                "candles must be ascending and hourly"
            )
        stamps.append(ts)
        prices = {name: _price(row, name, i) for name in _PRICE_FIELDS}
        if prices["high"] < max(prices["open"], prices["close"]):
            raise DataValidationError(f"candle {i}: 'high' is below its open or close")
        if prices["low"] > min(prices["open"], prices["close"]):
            raise DataValidationError(f"candle {i}: 'low' is above its open or close")
        for name, number in prices.items():
            values[name].append(number)
        volume = _number(row, "volume", i, required=False)
        if volume < 0:
            raise DataValidationError(f"candle {i}: 'volume' must not be negative, got {volume:g}")
        if volume > VOLUME_MAX:
            raise DataValidationError(f"candle {i}: 'volume' is {volume:g}; at most {VOLUME_MAX:g}")
        values["volume"].append(volume)
    index = pd.DatetimeIndex(stamps).as_unit("ns")
    frame = pd.DataFrame({"timestamp": index})
    for name in (*_PRICE_FIELDS, "volume"):
        frame[name] = np.asarray(values[name], dtype=np.float64)
    frame["close_time"] = index + pd.Timedelta(milliseconds=CLOSE_OFFSET_MS)
    for name in ("quote_av", "tb_base_av", "tb_quote_av"):
        frame[name] = 0.0
    for name in ("trades", "ignore"):
        frame[name] = np.zeros(len(frame), dtype="int64")
    frame = frame.loc[:, list(KLINE_COLUMNS)]
    frame["timestamp"] = frame["timestamp"].astype(TIMESTAMP_DTYPE)
    frame["close_time"] = frame["close_time"].astype(TIMESTAMP_DTYPE)
    return frame


def candles_to_payload(candles: pd.DataFrame) -> list[dict[str, Any]]:
    """The klines frame as the ``candles`` of a ``POST /v1/forecast/{pair}`` body (epoch-ms timestamps): what a
    client sends, the inverse of :func:`candles_from_payload`."""
    columns = ["timestamp", "open", "high", "low", "close", "volume"]
    return [
        {
            "timestamp": int(ts.value // 1_000_000),
            "open": float(o),
            "high": float(h),
            "low": float(lo),
            "close": float(c),
            "volume": float(v),
        }
        for ts, o, h, lo, c, v in candles[columns].itertuples(index=False)
    ]
