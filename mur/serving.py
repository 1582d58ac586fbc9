"""Serving logic without a web framework: auth + quota, client candle validation, the market-data cache,
registry access for champion models, and forecast payloads.

The Ray Serve application (``serve_app/``) and the benchmark's single-process reference app both call these
functions; nothing here imports Ray or FastAPI, and nothing runs at import time.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from mur.errors import (
    AuthError,
    DatabaseError,
    DataValidationError,
    ForbiddenError,
    InvalidInputError,
    MarketDataError,
    ModelError,
    ModelNotLoadedError,
    MurError,
    NotFoundError,
    QuotaExceededError,
    ServiceError,
    UnknownPairError,
)

if TYPE_CHECKING:
    import pandas as pd

    from mur.db import Database, QuotaResult, TokenOwner
    from mur.settings import Settings

log = logging.getLogger(__name__)

HOUR = timedelta(hours=1)
PAIR_RE = re.compile(r"^[a-z0-9]{2,20}_[a-z0-9]{2,10}$")
MARKET_HISTORY_HOURS = 168
"""Closed candles the cache keeps per pair (a week: room for models with longer windows and for gaps)."""


# ================================================================================================
# Errors as HTTP answers
# ================================================================================================


class QuotaExhaustedError(QuotaExceededError):
    """The user's monthly quota is used up; carries the counters for the 429 answer."""

    def __init__(self, quota: QuotaResult) -> None:
        super().__init__(f"monthly quota of {quota.limit} calls used up; it resets at {iso(quota.reset_at)}")
        self.quota = quota


class RegistryUnavailableError(ServiceError):
    """The MLflow registry (or the S3 store behind it) did not answer."""


# (exception class, HTTP status, error code); the first match wins, so subclasses come first.
_ERROR_TABLE: tuple[tuple[type[MurError], int, str], ...] = (
    (ForbiddenError, 403, "forbidden"),
    (AuthError, 401, "unauthorized"),
    (QuotaExceededError, 429, "quota_exhausted"),
    (UnknownPairError, 404, "unknown_pair"),
    (NotFoundError, 404, "not_found"),
    (DataValidationError, 422, "invalid_candles"),
    (InvalidInputError, 422, "invalid_input"),
    (ModelNotLoadedError, 503, "model_not_loaded"),
    (MarketDataError, 503, "market_data_unavailable"),
    (DatabaseError, 503, "database_unavailable"),
    (ModelError, 503, "model_error"),
    (ServiceError, 503, "service_unavailable"),
    (MurError, 500, "internal_error"),
)


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The JSON body of every API error: ``{"error": code, "message": text, ...details}``."""
    return {"error": code, "message": message, **extra}


def http_error(exc: MurError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """``(status, body, headers)`` for an expected error."""
    status, code = next((st, c) for cls, st, c in _ERROR_TABLE if isinstance(exc, cls))
    body = error_body(code, str(exc))
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, QuotaExhaustedError):
        quota = exc.quota
        body.update(limit=quota.limit, used=quota.used, reset_at=iso(quota.reset_at))
        headers.update(quota_headers(quota))
        headers["Retry-After"] = str(max(1, math.ceil((quota.reset_at - datetime.now(UTC)).total_seconds())))
    return status, body, headers


def quota_headers(quota: QuotaResult) -> dict[str, str]:
    """``X-RateLimit-*`` headers describing the month's quota."""
    return {
        "X-RateLimit-Limit": str(quota.limit),
        "X-RateLimit-Remaining": str(quota.remaining),
        "X-RateLimit-Reset": iso(quota.reset_at),
    }


# ================================================================================================
# Auth and quota (blocking: call from a thread pool in async servers)
# ================================================================================================


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; a missing/other scheme is an AuthError."""
    if not authorization or not authorization.strip():
        raise AuthError("missing credentials: send 'Authorization: Bearer <token>'")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("malformed Authorization header: expected 'Bearer <token>'")
    return token.strip()


def authenticate(db: Database, authorization: str | None) -> TokenOwner:
    """The owner of the request's bearer token (one indexed query); invalid/revoked/disabled → AuthError."""
    from mur.db import lookup_token

    owner = lookup_token(db, token=bearer_token(authorization))
    if owner is None:
        raise AuthError("invalid or revoked API token")
    return owner


def require_admin(owner: TokenOwner) -> None:
    """Raise :class:`ForbiddenError` unless the token belongs to an admin."""
    if not owner.is_admin:
        raise ForbiddenError(f"user {owner.username!r} is not an admin")


def charge(db: Database, owner: TokenOwner) -> QuotaResult:
    """Consume one unit of the owner's monthly quota (one atomic statement) or raise QuotaExhaustedError."""
    from mur.db import consume_quota

    quota = consume_quota(db, user_id=owner.user_id)
    if not quota.allowed:
        raise QuotaExhaustedError(quota)
    return quota


# ================================================================================================
# Pairs and times
# ================================================================================================


def normalize_pair(pair: str) -> str:
    """``BTC-USDT`` / ``btc_usdt`` → ``btc_usdt``; anything else is an UnknownPairError."""
    text = str(pair).strip().lower().replace("-", "_").replace("/", "_")
    if not PAIR_RE.match(text):
        raise UnknownPairError(f"unknown pair {pair!r}: expected BASE_QUOTE such as 'btc_usdt'")
    return text


def iso(ts: Any) -> str:
    """ISO-8601 UTC with a trailing Z (seconds precision)."""
    import pandas as pd

    t = pd.Timestamp(ts)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def floor_hour(ts: datetime) -> datetime:
    """``ts`` rounded down to the whole hour (UTC)."""
    ts = ts.astimezone(UTC) if ts.tzinfo else ts.replace(tzinfo=UTC)
    return ts.replace(minute=0, second=0, microsecond=0)


# ================================================================================================
# Client-supplied candles (POST /v1/forecast/{pair})
# ================================================================================================

_PRICE_FIELDS = ("open", "high", "low", "close")


def _parse_timestamp(value: Any, i: int) -> pd.Timestamp:
    """Epoch milliseconds (int) or an ISO-8601 string (naive = UTC) → UTC Timestamp."""
    import pandas as pd

    where = f"candle {i}"
    if isinstance(value, bool) or value is None:
        raise DataValidationError(f"{where}: timestamp is missing")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value != int(value):
            raise DataValidationError(f"{where}: timestamp {value!r} is not whole epoch milliseconds")
        if not 1e11 <= value < 1e14:
            raise DataValidationError(
                f"{where}: timestamp {value!r} is out of range: expected epoch milliseconds"
            )
        return pd.Timestamp(int(value), unit="ms", tz="UTC")
    if isinstance(value, str):
        try:
            ts = pd.Timestamp(value.strip())
        except (ValueError, TypeError):
            raise DataValidationError(
                f"{where}: cannot parse timestamp {value!r} (ISO-8601 or epoch ms)"
            ) from None
        if ts is pd.NaT:
            raise DataValidationError(f"{where}: timestamp is missing")
        return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    raise DataValidationError(f"{where}: timestamp must be epoch milliseconds or an ISO-8601 string")


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
    except (TypeError, ValueError):
        raise DataValidationError(f"candle {i}: '{name}' is not a number ({value!r})") from None
    if not math.isfinite(number):
        raise DataValidationError(f"candle {i}: '{name}' is {value!r}; prices must be finite")
    return number


def candles_from_payload(rows: Sequence[Mapping[str, Any]], seq_len: int) -> pd.DataFrame:
    """Validate client candles and return them as the typed klines frame.

    Rules: exactly ``seq_len`` candles; timestamps (epoch ms or ISO-8601) on whole hours, ascending and
    exactly one hour apart; open/high/low/close finite and > 0; volume (optional) finite and >= 0.
    Violations raise :class:`DataValidationError` naming the first bad candle.
    """
    import pandas as pd

    from mur.market_data import CLOSE_OFFSET_MS, KLINE_COLUMNS, TIMESTAMP_DTYPE

    if not isinstance(rows, Sequence) or isinstance(rows, str | bytes):
        raise DataValidationError("'candles' must be a list of objects")
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
        for name in _PRICE_FIELDS:
            number = _number(row, name, i)
            if number <= 0:
                raise DataValidationError(f"candle {i}: '{name}' must be positive, got {number:g}")
            values[name].append(number)
        volume = _number(row, "volume", i, required=False)
        if volume < 0:
            raise DataValidationError(f"candle {i}: 'volume' must not be negative, got {volume:g}")
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


def window_from_candles(candles: pd.DataFrame, seq_len: int) -> np.ndarray:
    """The raw ``(seq_len, 9)`` float32 model input for the last ``seq_len`` candles."""
    from mur.forecast import windows_from_candles

    return windows_from_candles(candles, seq_len)[0]


# ================================================================================================
# Market-data cache
# ================================================================================================


class MarketClock:
    """The cache's notion of "now": the wall clock, or a replay clock that starts at ``anchor``.

    With an anchor, ``now = anchor + (elapsed wall time) * speed`` (speed 0 freezes it), so a bundled
    dataset can be replayed as if it were live.
    """

    def __init__(self, anchor: datetime | None = None, speed: float = 1.0) -> None:
        if anchor is not None and anchor.tzinfo is None:
            anchor = anchor.replace(tzinfo=UTC)
        self.anchor = anchor
        self.speed = float(speed)
        self._started = time.monotonic()

    def now(self) -> datetime | None:
        """The current time, or None when the data's own end should be used (bundled, no anchor)."""
        if self.anchor is None:
            return None
        return self.anchor + timedelta(seconds=(time.monotonic() - self._started) * self.speed)


@dataclass(frozen=True)
class CandleSnapshot:
    """The latest closed candles of one pair at one refresh, with the model windows derived from them."""

    pair: str
    candles: pd.DataFrame
    as_of: datetime
    fetched_at: datetime
    filled_hours: int = 0
    _windows: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def last_close(self) -> float:
        return float(self.candles["close"].iloc[-1])

    @property
    def candle_time(self) -> datetime:
        """Open time of the most recent closed candle."""
        return self.candles["timestamp"].iloc[-1].to_pydatetime()

    def window(self, seq_len: int) -> np.ndarray:
        """The ``(seq_len, 9)`` float32 input for the latest ``seq_len`` candles (computed once per size)."""
        cached = self._windows.get(seq_len)
        if cached is None:
            cached = window_from_candles(self.candles, seq_len)
            self._windows[seq_len] = cached
        return cached


class MarketCache:
    """Latest closed hourly candles per pair, refreshed in the background (no fetch per request).

    The source follows ``settings.market_data`` (bundled or Binance). "Now" comes from
    :class:`MarketClock` (``settings.market_now`` / ``market_clock_speed``); with bundled data and no
    anchor it is the end of the data. A failed refresh keeps the previous snapshot and records the error.
    """

    def __init__(
        self,
        settings: Settings,
        pairs: Iterable[str],
        *,
        source: Any = None,
        clock: MarketClock | None = None,
        history_hours: int = MARKET_HISTORY_HOURS,
    ) -> None:
        self.settings = settings
        self.pairs = [normalize_pair(p) for p in pairs]
        self._source = source
        self.clock = clock or MarketClock(settings.market_now, settings.market_clock_speed)
        self.history_hours = max(int(history_hours), 2)
        self._snapshots: dict[str, CandleSnapshot] = {}
        self._errors: dict[str, str] = {}
        self._refreshed_at: datetime | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def source(self) -> Any:
        if self._source is None:
            from mur.market_data import get_market_data

            self._source = get_market_data(self.settings)
        return self._source

    def _window_end(self, pair: str) -> datetime:
        """Exclusive upper bound on open times of closed candles."""
        now = self.clock.now()
        if now is None and self.settings.market_data == "bundled":
            last_open = self.source.data_range(pair)[1]
            return (
                last_open.to_pydatetime() + HOUR if hasattr(last_open, "to_pydatetime") else last_open + HOUR
            )
        return floor_hour(now or datetime.now(UTC))

    def fetch(self, pair: str) -> CandleSnapshot:
        """Fetch the latest closed candles of ``pair`` now (blocking) and return a snapshot."""
        from mur.market_data import regularize_hourly, validate_candles

        end = self._window_end(pair)
        start = end - timedelta(hours=self.history_hours + 24)
        candles = self.source.klines(pair, start=start, end=end)
        validate_candles(candles, min_rows=1)
        candles, filled = regularize_hourly(candles.reset_index(drop=True), label=f"{pair} cache")
        candles = candles.iloc[-self.history_hours :].reset_index(drop=True)
        now = datetime.now(UTC)
        return CandleSnapshot(pair, candles, as_of=end, fetched_at=now, filled_hours=len(filled))

    def refresh(self, pairs: Iterable[str] | None = None) -> dict[str, str]:
        """Refresh every pair (or ``pairs``); returns ``{pair: error}`` for the ones that failed."""
        errors: dict[str, str] = {}
        for pair in pairs or self.pairs:
            try:
                snapshot = self.fetch(pair)
            except (MurError, OSError, ValueError, KeyError) as exc:
                errors[pair] = f"{type(exc).__name__}: {exc}"
                log.warning("market cache: refreshing %s failed: %s", pair, exc)
                continue
            with self._lock:
                self._snapshots[pair] = snapshot
        with self._lock:
            for pair in pairs or self.pairs:
                if pair in errors:
                    self._errors[pair] = errors[pair]
                else:
                    self._errors.pop(pair, None)
            self._refreshed_at = datetime.now(UTC)
        return errors

    def snapshot(self, pair: str) -> CandleSnapshot:
        """The latest snapshot of ``pair``; MarketDataError when none could be fetched yet."""
        snap = self._snapshots.get(pair)
        if snap is None:
            reason = self._errors.get(pair, "not fetched yet")
            raise MarketDataError(f"no market data for {pair} yet ({reason})")
        return snap

    def status(self) -> dict[str, Any]:
        """Per-pair last candle time and error, for /readyz."""
        with self._lock:
            return {
                "source": self.settings.market_data,
                "refreshed_at": iso(self._refreshed_at) if self._refreshed_at else None,
                "pairs": {
                    pair: {
                        "candle_time": iso(s.candle_time) if (s := self._snapshots.get(pair)) else None,
                        "error": self._errors.get(pair),
                    }
                    for pair in self.pairs
                },
            }

    def start(self, interval_s: float) -> None:
        """Refresh now, then every ``interval_s`` seconds on a daemon thread."""
        if self._thread is not None:
            return
        self.refresh()

        def loop() -> None:
            while not self._stop.wait(max(interval_s, 0.1)):
                try:
                    self.refresh()
                except Exception:  # never let the refresher die
                    log.exception("market cache refresh crashed")

        self._thread = threading.Thread(target=loop, name="market-cache", daemon=True)
        self._thread.start()

    def stop(self, *, wait: bool = True) -> None:
        """Stop the background refresher (``wait``: until its thread has exited)."""
        self._stop.set()
        if self._thread is not None and wait:
            self._thread.join(timeout=5)
            self._thread = None


# ================================================================================================
# Registry: champions and model bytes (blocking; MLflow imported lazily)
# ================================================================================================


def registry_client(settings: Settings, *, timeout_s: float = 10.0) -> Any:
    """An MlflowClient that fails fast (MLflow's default retries take minutes when the server is down)."""
    from mur import registry

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(max(timeout_s, 1))))
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return registry.configure(settings)


_NOT_FOUND_CODES = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}


def champions(client: Any, *, prefix: str, pairs: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{pair: version summary}`` for every registered ``{prefix}{pair}`` that has a champion alias.

    Only names that are valid pairs after the prefix count (so ``mur-test-x-btc_usdt`` is not a pair of
    the ``mur-`` registry). Raises :class:`RegistryUnavailableError` when MLflow does not answer, so that
    "unreachable" is never mistaken for "no champion".
    """
    from mlflow.exceptions import MlflowException

    from mur import registry

    wanted = {normalize_pair(p) for p in pairs} if pairs is not None else None
    try:
        names = registry.registered_pairs(client, prefix)
    except MlflowException as exc:
        raise RegistryUnavailableError(f"model registry unreachable: {_first_line(exc)}") from exc
    found: dict[str, dict[str, Any]] = {}
    for pair in names:
        if not PAIR_RE.match(pair) or (wanted is not None and pair not in wanted):
            continue
        try:
            version = client.get_model_version_by_alias(registry.model_name(pair, prefix), registry.CHAMPION)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") in _NOT_FOUND_CODES:
                continue
            raise RegistryUnavailableError(f"model registry unreachable: {_first_line(exc)}") from exc
        found[pair] = registry.version_summary(client, version, prefix)
    return found


def probe_artifacts(client: Any, run_id: str | None) -> None:
    """List a run's artefacts: proves the artefact store (S3, proxied by MLflow) answers."""
    if not run_id:
        return
    try:
        client.list_artifacts(run_id)
    except Exception as exc:  # MlflowException (S3 error proxied as HTTP 500), requests errors
        raise RegistryUnavailableError(f"artifact store unreachable: {_first_line(exc)}") from exc


def model_bytes(settings: Settings, pair: str, version: int) -> bytes:
    """The ONNX model of ``{prefix}{pair}`` version ``version`` as one self-contained serialized graph.

    ``mlflow.onnx.log_model`` stores weights above 1 KiB in a side file by default; those are folded back
    in here, since onnxruntime cannot resolve external data for a model loaded from bytes.
    Raises RegistryUnavailableError when MLflow/S3 does not answer, ModelError for a broken artefact.
    """
    import tempfile
    from pathlib import Path

    from mur import registry

    uri = f"models:/{registry.model_name(pair, settings.registry_prefix)}/{int(version)}"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            import mlflow

            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        except Exception as exc:  # MlflowException, botocore and requests errors alike
            raise RegistryUnavailableError(f"cannot download {uri}: {_first_line(exc)}") from exc
        files = [local] if local.is_file() else sorted(local.rglob("*.onnx"))
        if not files:
            raise ModelError(f"{uri} has no .onnx file")
        if local.is_file():
            return local.read_bytes()
        import onnx

        try:
            return onnx.load(str(files[0]), load_external_data=True).SerializeToString()
        except Exception as exc:
            raise ModelError(f"cannot read {uri}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


# ================================================================================================
# Loaded models and forecast payloads
# ================================================================================================


@dataclass(frozen=True)
class LoadedModel:
    """One champion version in an onnxruntime session, with what the API reports about it."""

    pair: str
    version: int
    session: Any
    seq_len: int
    summary: dict[str, Any]
    loaded_at: datetime

    @classmethod
    def from_bytes(cls, pair: str, version: int, data: bytes, summary: Mapping[str, Any]) -> LoadedModel:
        """Open the ONNX bytes in onnxruntime, read the window length and warm the session up once."""
        from mur.export import load_session, run_session
        from mur.features import N_FEATURES
        from mur.forecast import model_seq_len

        session = load_session(data)
        seq_len = model_seq_len(session)
        warm = np.ones((1, seq_len, N_FEATURES), dtype=np.float32)
        warm[..., 0] = 0.0
        run_session(session, warm)
        return cls(pair, int(version), session, seq_len, dict(summary), datetime.now(UTC))

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Forecasts ``(n,)`` for windows ``(n, seq_len, 9)`` in one onnxruntime call."""
        from mur.export import run_session

        return run_session(self.session, windows)

    def describe(self) -> dict[str, Any]:
        """What GET /v1/models shows: version, alias, trained window, test metrics incl. skill."""
        s = self.summary
        metrics = dict(s.get("metrics") or {})
        return {
            "pair": self.pair,
            "model_name": s.get("model_name"),
            "version": self.version,
            "alias": s.get("alias", "champion"),
            "aliases": s.get("aliases", []),
            "seq_len": self.seq_len,
            "trained_window": s.get("data_window"),
            "test_window": metrics.get("test_window"),
            "metrics": {
                "mae": s.get("mae"),
                "skill": s.get("skill"),
                "model": metrics.get("model"),
                "persistence": metrics.get("persistence"),
                "linear": metrics.get("linear"),
                "n_test": metrics.get("n_test"),
            },
            "run_id": s.get("run_id"),
            "loaded_at": iso(self.loaded_at),
        }


def forecast_body(
    pair: str, version: int, *, prediction: float, last_close: float, candle_time: datetime
) -> dict[str, Any]:
    """The forecast answer: next-hour close, last close, candle time (open time of the last candle)."""
    return {
        "pair": pair,
        "forecast": float(prediction),
        "last_close": float(last_close),
        "change_pct": (float(prediction) / float(last_close) - 1.0) * 100.0,
        "candle_time": iso(candle_time),
        "target_time": iso(candle_time + HOUR),
        "model_version": int(version),
    }
