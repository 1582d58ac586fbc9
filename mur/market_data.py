"""Hourly candles (Binance klines) from the bundled dataset or Binance's REST API, as one typed frame.

Every source returns the same frame (:data:`KLINE_COLUMNS`, in that order): ``timestamp`` (open time) and
``close_time`` as ``datetime64[ns, UTC]``, prices and volumes ``float64``, ``trades`` and ``ignore``
``int64``, sorted by ``timestamp`` with no duplicates and a fresh ``RangeIndex``. A window is half-open:
``klines(pair, start, end)`` returns candles whose open time ``t`` satisfies ``start <= t < end``.

Gap policy (see ``docs/data.md``): sources return candles as published; :func:`regularize_hourly` puts them
on a regular hourly grid and forward-fills missing hours explicitly.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from mur.errors import DataValidationError, MarketDataError, UnknownPairError

if TYPE_CHECKING:
    import pandas as pd

    from mur.settings import Settings

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

QUOTE_ASSETS: tuple[str, ...] = (
    "FDUSD",
    "USDT",
    "USDC",
    "TUSD",
    "BUSD",
    "DAI",
    "BTC",
    "ETH",
    "BNB",
    "EUR",
    "TRY",
    "BRL",
)
"""Quote assets recognised when splitting a Binance symbol; longest match wins."""

_PAIR_RE = re.compile(r"^([a-z0-9]{2,20})[_/-]([a-z0-9]{2,10})$")
_SYMBOL_RE = re.compile(r"^[A-Z0-9]{4,30}$")
_BUNDLED_SUFFIX = f"-{INTERVAL}.csv.gz"
_T = TypeVar("_T")


# --- pairs and symbols ---------------------------------------------------------------------------
def pair_to_symbol(pair: str) -> str:
    """``"btc_usdt"`` -> ``"BTCUSDT"`` (also accepts ``BTC/USDT`` or ``btc-usdt``)."""
    match = _PAIR_RE.match(str(pair).strip().lower())
    if match is None:
        raise UnknownPairError(f"invalid pair {pair!r}: expected BASE_QUOTE such as 'btc_usdt'")
    return (match.group(1) + match.group(2)).upper()


def symbol_to_pair(symbol: str) -> str:
    """``"BTCUSDT"`` -> ``"btc_usdt"``, splitting off a known quote asset (:data:`QUOTE_ASSETS`)."""
    text = str(symbol).strip().upper()
    if _SYMBOL_RE.match(text):
        for quote in sorted(QUOTE_ASSETS, key=len, reverse=True):
            if text.endswith(quote) and len(text) - len(quote) >= 2:
                return f"{text[: -len(quote)].lower()}_{quote.lower()}"
    raise UnknownPairError(
        f"invalid symbol {symbol!r}: expected a Binance symbol such as 'BTCUSDT' "
        f"(quote asset one of {', '.join(QUOTE_ASSETS)})"
    )


# --- typed frames --------------------------------------------------------------------------------
def _ms_to_utc(values: Any) -> pd.DatetimeIndex:
    """Epoch milliseconds -> ``datetime64[ns, UTC]``."""
    import numpy as np
    import pandas as pd

    return pd.to_datetime(np.asarray(values, dtype="int64"), unit="ms", utc=True).as_unit("ns")


def utc_to_ms(values: pd.Series | pd.DatetimeIndex) -> Any:
    """UTC datetimes -> numpy ``int64`` epoch milliseconds."""
    import pandas as pd

    index = pd.DatetimeIndex(values)
    return index.as_unit("ms").asi8


def typed_klines_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """Build the typed frame from Binance-shaped data (ms integer times, numeric or numeric-string fields)."""
    import pandas as pd

    out = pd.DataFrame(
        {
            "timestamp": _ms_to_utc(pd.to_numeric(raw["timestamp"])),
            **{c: pd.to_numeric(raw[c]).astype("float64").to_numpy() for c in FLOAT_COLUMNS[:5]},
            "close_time": _ms_to_utc(pd.to_numeric(raw["close_time"])),
            "quote_av": pd.to_numeric(raw["quote_av"]).astype("float64").to_numpy(),
            "trades": pd.to_numeric(raw["trades"]).astype("int64").to_numpy(),
            "tb_base_av": pd.to_numeric(raw["tb_base_av"]).astype("float64").to_numpy(),
            "tb_quote_av": pd.to_numeric(raw["tb_quote_av"]).astype("float64").to_numpy(),
            "ignore": pd.to_numeric(raw["ignore"]).astype("int64").to_numpy(),
        }
    )
    return out.loc[:, list(KLINE_COLUMNS)]


def _as_utc(value: datetime | None) -> pd.Timestamp | None:
    """A datetime as a UTC ``Timestamp``; naive datetimes are read as UTC."""
    import pandas as pd

    if value is None:
        return None
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def format_ts(value: Any) -> str:
    """Short, unambiguous UTC label for messages: ``2023-03-24 13:00 UTC``."""
    import pandas as pd

    if value is None:
        return "open end"
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        return str(value)
    if ts is pd.NaT:
        return "NaT"
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    fmt = "%Y-%m-%d %H:%M:%S" if ts.second or ts.microsecond else "%Y-%m-%d %H:%M"
    return ts.strftime(fmt) + " UTC"


def _window(df: pd.DataFrame, start: pd.Timestamp | None, end: pd.Timestamp | None) -> pd.DataFrame:
    """Rows with ``start <= timestamp < end``, re-indexed from 0."""
    mask = None
    if start is not None:
        mask = df["timestamp"] >= start
    if end is not None:
        upper = df["timestamp"] < end
        mask = upper if mask is None else mask & upper
    out = df if mask is None else df.loc[mask]
    return out.reset_index(drop=True)


def _check_window(pair: str, start: pd.Timestamp | None, end: pd.Timestamp | None) -> None:
    if start is not None and end is not None and start >= end:
        raise MarketDataError(
            f"empty window for {pair}: start {format_ts(start)} is not before end {format_ts(end)}"
        )


def _no_candles(pair: str, start: pd.Timestamp | None, end: pd.Timestamp | None, extra: str = "") -> str:
    lo = format_ts(start) if start is not None else "the beginning"
    hi = format_ts(end) if end is not None else "now"
    return f"no candles for {pair} between {lo} and {hi}{extra}"


# --- bundled dataset -----------------------------------------------------------------------------
def _bundled_dir() -> Any:
    """The packaged klines folder (an importlib.resources Traversable; works from a wheel)."""
    from importlib.resources import files

    return files("mur") / "datasets" / "klines"


@lru_cache(maxsize=1)
def _bundled_symbols() -> tuple[str, ...]:
    names = [entry.name for entry in _bundled_dir().iterdir() if entry.name.endswith(_BUNDLED_SUFFIX)]
    return tuple(sorted(name[: -len(_BUNDLED_SUFFIX)] for name in names))


def bundled_pairs() -> list[str]:
    """Pairs with a bundled file, sorted (``["bnb_usdt", "btc_usdt", ...]``)."""
    return sorted(symbol_to_pair(symbol) for symbol in _bundled_symbols())


def _bundled_symbol(pair: str) -> str:
    symbol = pair_to_symbol(pair)
    if symbol not in _bundled_symbols():
        raise UnknownPairError(f"unknown pair {pair!r}: the bundled data has {', '.join(bundled_pairs())}")
    return symbol


def read_bundled_csv(symbol: str, *, as_text: bool = False) -> pd.DataFrame:
    """Read ``{SYMBOL}-1h.csv.gz`` as stored (integer ms times); ``as_text`` keeps every field as text."""
    import pandas as pd

    resource = _bundled_dir() / f"{symbol}{_BUNDLED_SUFFIX}"
    with resource.open("rb") as fh:
        return pd.read_csv(fh, compression="gzip", dtype=str if as_text else None)


@lru_cache(maxsize=16)
def _load_bundled_cached(symbol: str) -> pd.DataFrame:
    df = typed_klines_frame(read_bundled_csv(symbol))
    df = df.sort_values("timestamp", kind="stable").drop_duplicates("timestamp", keep="first")
    return df.reset_index(drop=True)


def load_bundled(pair: str) -> pd.DataFrame:
    """All bundled candles for ``pair`` as the typed frame (file read once per process; returns a copy)."""
    return _load_bundled_cached(_bundled_symbol(pair)).copy()


# --- the MarketData protocol ---------------------------------------------------------------------
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


class BundledMarketData:
    """Candles from the dataset shipped in ``mur/datasets/klines`` (no network)."""

    name = "bundled"

    def klines(self, pair: str, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
        """Bundled candles in ``[start, end)``; naive datetimes are read as UTC."""
        lo, hi = _as_utc(start), _as_utc(end)
        _check_window(pair, lo, hi)
        full = _load_bundled_cached(_bundled_symbol(pair))
        out = _window(full, lo, hi)
        if out.empty:
            first, last = full["timestamp"].iloc[0], full["timestamp"].iloc[-1]
            covers = f" (bundled data covers {format_ts(first)} to {format_ts(last)})"
            raise MarketDataError(_no_candles(pair, lo, hi, covers))
        return out.copy()

    def pairs(self) -> list[str]:
        """Bundled pairs."""
        return bundled_pairs()

    def data_range(self, pair: str) -> tuple[datetime, datetime]:
        """First and last bundled open time."""
        full = _load_bundled_cached(_bundled_symbol(pair))
        return full["timestamp"].iloc[0], full["timestamp"].iloc[-1]


class BinanceMarketData:
    """Candles from Binance's spot REST API via python-binance (or a compatible server, e.g. the replay).

    No network at construction. Network failures, HTTP 429 and 5xx answers are retried with exponential
    backoff (``binance_max_retries`` retries, ``binance_backoff_s * 2**n`` seconds apart); an invalid symbol
    (Binance code -1121) raises :class:`UnknownPairError` at once. Candles still open (``close_time`` in the
    future) are dropped so that callers only see finished hours.
    """

    name = "binance"

    def __init__(self, settings: Settings, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self._sleep = sleep
        self._client: Any = None
        self.retries = 0
        """Retries made so far by this instance (for logs and tests)."""

    @property
    def client(self) -> Any:
        """The python-binance ``Client``, created on first use without pinging."""
        if self._client is None:
            from binance.client import Client

            client = Client(
                self.settings.binance_api_key or None, self.settings.binance_api_secret or None, ping=False
            )
            if self.settings.binance_api_url:
                client.API_URL = self.settings.binance_api_url.rstrip("/")
            self._client = client
        return self._client

    def _call(self, what: str, pair: str | None, call: Callable[[], _T]) -> _T:
        """Run ``call`` with retries on transient failures, mapping Binance errors to MurErrors."""
        import requests
        from binance.exceptions import BinanceAPIException, BinanceRequestException

        attempts = max(0, int(self.settings.binance_max_retries)) + 1
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
                delay = self.settings.binance_backoff_s * 2**attempt
                self.retries += 1
                logger.warning(
                    "Binance %s failed (%s); retry %d/%d in %.2fs",
                    what,
                    error,
                    attempt + 1,
                    attempts - 1,
                    delay,
                )
                self._sleep(delay)
        url = self.settings.binance_api_url or "api.binance.com"
        raise MarketDataError(f"Binance {what} failed after {attempts} attempts ({url}): {error}")

    def klines(self, pair: str, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
        """Finished 1h candles in ``[start, end)`` fetched page by page (1000 per request)."""
        import pandas as pd

        symbol = pair_to_symbol(pair)
        lo, hi = _as_utc(start), _as_utc(end)
        _check_window(pair, lo, hi)
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
        out = _window(frame, lo, hi)
        if out.empty:
            raise MarketDataError(_no_candles(pair, lo, hi, " on Binance"))
        return out

    def pairs(self) -> list[str]:
        """Trading spot pairs listed by ``exchangeInfo`` whose symbol splits into base and quote."""
        info = self._call("exchangeInfo request", None, self.client.get_exchange_info)
        out = []
        for entry in info.get("symbols", []):
            if entry.get("status") != "TRADING":
                continue
            try:
                out.append(symbol_to_pair(entry["symbol"]))
            except UnknownPairError:
                continue
        return sorted(set(out))

    def data_range(self, pair: str) -> tuple[datetime, datetime]:
        """First open time (``startTime=0``) and the last finished open time on Binance (2 requests)."""
        import pandas as pd

        symbol = pair_to_symbol(pair)

        def first() -> list[list[Any]]:
            return self.client.get_klines(symbol=symbol, interval=INTERVAL, startTime=0, limit=1)

        def last() -> list[list[Any]]:
            return self.client.get_klines(symbol=symbol, interval=INTERVAL, limit=2)

        head = self._call(f"klines request for {symbol}", pair, first)
        tail = self._call(f"klines request for {symbol}", pair, last)
        if not head or not tail:
            raise MarketDataError(_no_candles(pair, None, None, " on Binance"))
        now_ms = time.time() * 1000
        finished = [row for row in tail if int(row[6]) < now_ms] or tail[:1]
        return (
            pd.Timestamp(int(head[0][0]), unit="ms", tz="UTC"),
            pd.Timestamp(int(finished[-1][0]), unit="ms", tz="UTC"),
        )


def get_market_data(settings: Settings | None = None) -> MarketData:
    """The source chosen by ``settings.market_data`` (``bundled`` or ``binance``)."""
    if settings is None:
        from mur.settings import get_settings

        settings = get_settings()
    if settings.market_data == "binance":
        return BinanceMarketData(settings)
    if settings.market_data == "bundled":
        return BundledMarketData()
    raise MarketDataError(f"unknown market data source {settings.market_data!r} (bundled or binance)")


# --- gaps ----------------------------------------------------------------------------------------
def missing_hours(df: pd.DataFrame) -> list[pd.Timestamp]:
    """Open times absent from the hourly grid between the first and last candle."""
    import pandas as pd

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
    import numpy as np
    import pandas as pd

    _check_order(df)
    if len(df) == 0:
        return df.reset_index(drop=True).copy(), []
    ts = pd.DatetimeIndex(df["timestamp"])
    off_grid = ts != ts.floor("h")
    if off_grid.any():
        bad = ts[np.argmax(off_grid)]
        raise DataValidationError(f"candle open time {format_ts(bad)} is not on a whole hour")
    filled = missing_hours(df)
    if not filled:
        return df.reset_index(drop=True).copy(), []

    grid = pd.date_range(ts[0], ts[-1], freq="h").as_unit(ts.unit)
    out = df.set_index("timestamp").reindex(grid)
    gap = out.index.isin(filled)
    prev_close = out["close"].ffill()
    for column in PRICE_COLUMNS:
        out.loc[gap, column] = prev_close[gap]
    for column in ("volume", "quote_av", "tb_base_av", "tb_quote_av", *INT_COLUMNS):
        if column in out.columns:
            out.loc[gap, column] = 0
    for column in INT_COLUMNS:
        if column in out.columns:
            out[column] = out[column].astype("int64")
    if "close_time" in out.columns:
        close_dtype = out["close_time"].dtype
        out.loc[gap, "close_time"] = grid[gap] + pd.Timedelta(milliseconds=CLOSE_OFFSET_MS)
        out["close_time"] = out["close_time"].astype(close_dtype)
    out = out.rename_axis("timestamp").reset_index().loc[:, list(df.columns)]

    shown = ", ".join(format_ts(t) for t in filled[:10])
    more = f" and {len(filled) - 10} more" if len(filled) > 10 else ""
    logger.warning("%s: forward-filled %d missing hour(s): %s%s", label, len(filled), shown, more)
    return out, filled


# --- validation ----------------------------------------------------------------------------------
def _check_order(df: pd.DataFrame) -> None:
    """Raise unless ``timestamp`` is strictly increasing and has no missing value."""
    import numpy as np
    import pandas as pd

    if "timestamp" not in df.columns:
        raise DataValidationError("candles are missing column(s): timestamp")
    ts = pd.Series(df["timestamp"]).reset_index(drop=True)
    if ts.isna().any():
        i = int(np.argmax(ts.isna().to_numpy()))
        raise DataValidationError(f"missing timestamp in row {i} of {len(ts)}")
    if len(ts) < 2:
        return
    diff = ts.diff().iloc[1:]
    zero = diff == pd.Timedelta(0) if pd.api.types.is_datetime64_any_dtype(ts) else diff == 0
    if zero.any():
        i = int(zero.idxmax())
        raise DataValidationError(f"duplicate timestamp {format_ts(ts[i])} (rows {i - 1} and {i})")
    negative = diff < (pd.Timedelta(0) if pd.api.types.is_datetime64_any_dtype(ts) else 0)
    if negative.any():
        i = int(negative.idxmax())
        raise DataValidationError(
            f"timestamps are not sorted: {format_ts(ts[i])} (row {i}) comes after {format_ts(ts[i - 1])}"
        )


def validate_candles(df: pd.DataFrame, *, min_rows: int = 0) -> None:
    """Raise :class:`DataValidationError` (one precise line) unless the candles are usable.

    Checks: required columns, at least ``min_rows`` rows, no NaN/inf in numeric columns, strictly positive
    prices, timestamps strictly increasing (sorted, no duplicates).
    """
    import numpy as np

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


# --- user CSV ------------------------------------------------------------------------------------
def _csv_timestamps(series: pd.Series, path: Path, column: str) -> pd.Series:
    """Epoch-ms integers or ISO-8601 strings -> ``datetime64[ns, UTC]`` (naive strings read as UTC)."""
    import numpy as np
    import pandas as pd

    def where(i: int) -> str:
        return f"line {i + 2} of {path}"

    if series.isna().any():
        i = int(np.argmax(series.isna().to_numpy()))
        raise DataValidationError(f"empty {column} at {where(i)}")
    text = series.astype(str).str.strip()
    if pd.api.types.is_numeric_dtype(series) or text.str.fullmatch(r"\d+(\.0*)?").all():
        ms = pd.to_numeric(text).astype("float64").to_numpy()
        if (ms != np.floor(ms)).any():
            i = int(np.argmax(ms != np.floor(ms)))
            raise DataValidationError(f"{column} {text[i]!r} at {where(i)} is not whole epoch milliseconds")
        if ms.min() < 1e11:
            raise DataValidationError(
                f"{column} values in {path} look like epoch seconds; expected epoch milliseconds"
            )
        if ms.max() >= 1e14:
            raise DataValidationError(
                f"{column} values in {path} look like epoch microseconds; expected epoch milliseconds"
            )
        return pd.Series(_ms_to_utc(ms.astype("int64")))
    parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    if parsed.isna().any():
        i = int(np.argmax(parsed.isna().to_numpy()))
        raise DataValidationError(
            f"{column} {text[i]!r} at {where(i)} is neither epoch milliseconds nor an ISO-8601 time"
        )
    return parsed.dt.as_unit("ns")


def load_candles_csv(path: str | Path) -> pd.DataFrame:
    """Read a user's candles CSV into the typed frame, then :func:`validate_candles` it.

    Needs ``timestamp`` (or ``open_time``), ``open``, ``high``, ``low``, ``close``, ``volume``; timestamps
    are epoch milliseconds or ISO-8601 (UTC when no offset is given). Missing Binance columns are filled:
    ``close_time`` = open time + 3599999 ms, the rest 0. Rows are sorted by time; extra columns are dropped.
    """
    import numpy as np
    import pandas as pd

    path = Path(path)
    try:
        raw = pd.read_csv(path, dtype=str, skipinitialspace=True)
    except FileNotFoundError:
        raise DataValidationError(f"candles CSV not found: {path}") from None
    except pd.errors.EmptyDataError:
        raise DataValidationError(f"candles CSV {path} is empty") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataValidationError(f"cannot read candles CSV {path}: {reason}") from None
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    if "timestamp" not in raw.columns and "open_time" in raw.columns:
        raw = raw.rename(columns={"open_time": "timestamp"})
    missing = [c for c in REQUIRED_CSV_COLUMNS if c not in raw.columns]
    if missing:
        raise DataValidationError(
            f"candles CSV {path} is missing column(s): {', '.join(missing)} "
            f"(need {', '.join(REQUIRED_CSV_COLUMNS)})"
        )

    timestamps = _csv_timestamps(raw["timestamp"], path, "timestamp")
    timestamps = timestamps.reset_index(drop=True)
    columns: dict[str, Any] = {"timestamp": timestamps}
    for column in KLINE_COLUMNS[1:]:
        if column == "close_time":
            if column in raw.columns and not raw[column].isna().all():
                columns[column] = _csv_timestamps(raw[column], path, column).reset_index(drop=True)
            else:
                columns[column] = timestamps + pd.Timedelta(milliseconds=CLOSE_OFFSET_MS)
            continue
        if column not in raw.columns:
            columns[column] = np.zeros(len(raw), dtype="int64" if column in INT_COLUMNS else "float64")
            continue
        text = raw[column].str.strip()
        values = pd.to_numeric(text, errors="coerce")
        bad = values.isna() & text.notna() & (text != "")
        if bad.any():
            i = int(np.argmax(bad.to_numpy()))
            raise DataValidationError(f"column '{column}' has non-numeric value {text[i]!r} at line {i + 2}")
        if column in INT_COLUMNS:
            if values.isna().any():
                values = values.fillna(0)
            columns[column] = values.astype("int64").to_numpy()
        else:
            columns[column] = values.astype("float64").to_numpy()
    out = pd.DataFrame(columns).loc[:, list(KLINE_COLUMNS)]
    out["timestamp"] = out["timestamp"].astype(TIMESTAMP_DTYPE)
    out["close_time"] = out["close_time"].astype(TIMESTAMP_DTYPE)
    out = out.sort_values("timestamp", kind="stable").reset_index(drop=True)
    validate_candles(out)
    return out
