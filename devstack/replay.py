"""A Binance-compatible HTTP replay server over the bundled klines (stdlib only, no network needed).

It answers the public spot endpoints python-binance uses for historical candles, with Binance's semantics
and error shapes, so ``BinanceMarketData`` (and any Binance client) can be exercised end to end offline::

    mur data serve --port 9100
    MUR_MARKET_DATA=binance MUR_BINANCE_API_URL=http://127.0.0.1:9100/api mur data show btc_usdt

Endpoints: ``GET /api/v3/ping``, ``/api/v3/time``, ``/api/v3/exchangeInfo`` (``symbol=`` / ``symbols=``),
``/api/v3/klines`` (``symbol``, ``interval`` = ``1h`` only, ``startTime``, ``endTime``, ``limit`` 1..1000,
default 500). Each symbol's open times are an ``int64`` array and each row is pre-encoded JSON, so a klines
request is two ``searchsorted`` calls and a join.

Given a market clock (``mur data serve`` and the local stack pass :func:`mur.clock.market_clock`), the server
is a live-looking exchange over the recorded history: ``serverTime`` is market now and klines that have not
closed by then are not there (unlike Binance, the current unclosed candle is not served either: its final
values would leak the future).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    import pandas as pd

    from mur.clock import MarketClock

logger = logging.getLogger(__name__)

DEFAULT_LIMIT = 500
MAX_LIMIT = 1000
SERVED_INTERVAL = "1h"
BINANCE_INTERVALS = frozenset(
    ["1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M"]
)
_DIGITS = re.compile(r"^[0-9]{1,20}$")


class BinanceError(Exception):
    """An error answered the way Binance does: HTTP status + ``{"code": …, "msg": …}``."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


def _mandatory(name: str) -> BinanceError:
    return BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


@dataclass(frozen=True, slots=True)
class SymbolData:
    """One symbol's klines, ready to slice: sorted open times (ms) and the JSON text of each row."""

    symbol: str
    base_asset: str
    quote_asset: str
    open_times: Any  # numpy int64, sorted
    rows: Any  # numpy object array of str, one encoded kline list per open time

    def klines_json(self, start: int | None, end: int | None, limit: int) -> bytes:
        """The JSON body of a klines answer with Binance semantics: start/end inclusive on open time, at most
        ``limit`` rows (the first ones from ``start``, else the last ones up to ``end``)."""
        import numpy as np

        hi = len(self.open_times) if end is None else int(np.searchsorted(self.open_times, end, side="right"))
        if start is None:
            lo = max(0, hi - limit)
        else:
            lo = int(np.searchsorted(self.open_times, start, side="left"))
            hi = max(lo, min(hi, lo + limit))
        return ("[" + ",".join(self.rows[lo:hi]) + "]").encode()

    def exchange_info(self) -> dict[str, Any]:
        """This symbol's ``exchangeInfo`` entry (the fields clients commonly read)."""
        return {
            "symbol": self.symbol,
            "status": "TRADING",
            "baseAsset": self.base_asset,
            "baseAssetPrecision": 8,
            "quoteAsset": self.quote_asset,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "orderTypes": ["LIMIT", "MARKET"],
            "icebergAllowed": False,
            "ocoAllowed": False,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [],
            "permissions": ["SPOT"],
        }


def _symbol_data(pair: str, text: pd.DataFrame) -> SymbolData:
    """:class:`SymbolData` from a pair's klines as text columns (sorted, one row an open time): each row
    encoded once as Binance does (times and trades as numbers, every other field a string)."""
    import numpy as np

    from mur.data import KLINE_COLUMNS
    from mur.pairs import pair_to_symbol

    cells = [
        text[c] if c in ("timestamp", "close_time", "trades") else '"' + text[c] + '"' for c in KLINE_COLUMNS
    ]
    rows = "[" + cells[0].str.cat(cells[1:], sep=",") + "]"
    base, quote = pair.split("_")
    return SymbolData(
        symbol=pair_to_symbol(pair),
        base_asset=base.upper(),
        quote_asset=quote.upper(),
        open_times=text["timestamp"].astype("int64").to_numpy(dtype=np.int64),
        rows=rows.to_numpy(dtype=object),
    )


def load_symbol_data(pair: str) -> SymbolData:
    """A bundled file, read as text so decimals are served exactly as stored, as :class:`SymbolData`."""
    from mur.data import read_bundled_csv
    from mur.pairs import pair_to_symbol

    raw = read_bundled_csv(pair_to_symbol(pair), as_text=True)
    raw = raw.assign(_ms=raw["timestamp"].astype("int64")).sort_values("_ms", kind="stable")
    return _symbol_data(pair, raw.drop_duplicates("_ms").reset_index(drop=True))


def frame_symbol_data(pair: str, frame: pd.DataFrame) -> SymbolData:
    """A pair's typed candle frame (a synthetic pair, a pair an admin uploaded) as :class:`SymbolData`."""
    import pandas as pd

    from mur.data.candles import FLOAT_COLUMNS

    text = {c: frame[c].map("{:.8f}".format) for c in FLOAT_COLUMNS}
    text |= {c: (frame[c].astype("int64") // 1_000_000).astype(str) for c in ("timestamp", "close_time")}
    text |= {c: frame[c].astype("int64").astype(str) for c in ("trades", "ignore")}
    return _symbol_data(pair, pd.DataFrame(text))


class ReplayHandler(BaseHTTPRequestHandler):
    """Routes GET requests to the Binance endpoints; subclass it to inject faults in tests."""

    server: ReplayServer
    protocol_version = "HTTP/1.1"
    server_version = "mur-replay/1"

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        """Answer one request."""
        url = urlsplit(self.path)
        params = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        route = {
            "/api/v3/ping": self._ping,
            "/api/v3/time": self._time,
            "/api/v3/exchangeInfo": self._exchange_info,
            "/api/v3/klines": self._klines,
        }.get(url.path.rstrip("/"))
        try:
            if route is None:
                raise BinanceError(-1000, f"Unknown endpoint {url.path}.", status=404)
            self.send_json(200, route(params))
        except BinanceError as exc:
            self.send_json(exc.status, json.dumps({"code": exc.code, "msg": exc.msg}).encode())

    def send_json(self, status: int, body: bytes) -> None:
        """Send a complete JSON response (with Content-Length, so keep-alive works)."""
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        logger.debug("%s - %s", self.address_string(), format % args)

    # --- endpoints -------------------------------------------------------------------------------
    def _ping(self, params: dict[str, str]) -> bytes:
        return b"{}"

    def _time(self, params: dict[str, str]) -> bytes:
        return json.dumps({"serverTime": self.server.server_time()}).encode()

    def _exchange_info(self, params: dict[str, str]) -> bytes:
        if params.get("symbol"):
            wanted = [params["symbol"]]
        elif params.get("symbols"):
            try:
                wanted = [str(s) for s in json.loads(params["symbols"])]
            except (ValueError, TypeError):
                raise _mandatory("symbols") from None
        else:
            wanted = sorted(self.server.symbols())
        info = {
            "timezone": "UTC",
            "serverTime": self.server.server_time(),
            "rateLimits": [],
            "exchangeFilters": [],
            "symbols": [self.server.lookup(symbol).exchange_info() for symbol in wanted],
        }
        return json.dumps(info).encode()

    def _klines(self, params: dict[str, str]) -> bytes:
        symbol = params.get("symbol", "").strip()
        if not symbol:
            raise _mandatory("symbol")
        interval = params.get("interval", "").strip()
        if not interval:
            raise _mandatory("interval")
        data = self.server.lookup(symbol)
        if interval not in BINANCE_INTERVALS:
            raise BinanceError(-1120, "Invalid interval.")
        if interval != SERVED_INTERVAL:
            raise BinanceError(-1120, f"Invalid interval. The replay server only serves {SERVED_INTERVAL}.")
        numbers = {name: params.get(name) or None for name in ("startTime", "endTime", "limit")}
        for name, value in numbers.items():
            if value is not None and not _DIGITS.match(value):
                raise BinanceError(
                    -1100,
                    f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
                )
        start, end, limit = (None if value is None else int(value) for value in numbers.values())
        limit = DEFAULT_LIMIT if limit is None else limit
        if not 1 <= limit <= MAX_LIMIT:
            raise BinanceError(-1130, "Data sent for parameter 'limit' is not valid.")
        if self.server.clock is not None:  # candles that have not closed at market "now" do not exist yet
            last_visible = int(self.server.clock.hour().timestamp() * 1000) - 1
            if start is not None and start > last_visible:
                return b"[]"
            end = last_visible if end is None else min(end, last_visible)
        return data.klines_json(start, end, limit)


RELOAD_EVERY_S = 30.0
"""How often a running replay server re-reads its reloadable pairs (the uploaded ones) when asked for the
symbol list; an unknown symbol re-reads them at once (at most every :data:`RELOAD_MIN_GAP_S`)."""
RELOAD_MIN_GAP_S = 2.0


class ReplayServer(ThreadingHTTPServer):
    """Threaded HTTP server holding :class:`SymbolData` per symbol in ``store``, plus the pairs ``reload``
    returns (the uploaded ones), re-read while it runs so a pair an admin adds is served without a restart."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        store: dict[str, SymbolData],
        handler_class: type[ReplayHandler] = ReplayHandler,
        clock: MarketClock | None = None,
        reload: Callable[[], Mapping[str, pd.DataFrame]] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self._reload = reload
        self._reloaded: dict[str, SymbolData] = {}
        self._reloaded_at = float("-inf")
        self._reload_lock = threading.Lock()
        super().__init__(address, handler_class)

    def _reload_now(self, max_age_s: float) -> None:
        """Re-read the reloadable pairs when the last read is older than ``max_age_s``; a failed read keeps
        the last ones (logged)."""
        if self._reload is None:
            return
        with self._reload_lock:
            if time.monotonic() - self._reloaded_at < max_age_s:
                return
            self._reloaded_at = time.monotonic()
            try:
                frames = self._reload()
            except Exception as exc:  # a database outage must not stop the bundled pairs being served
                logger.warning(
                    "replay: cannot re-read the uploaded pairs (keeping %d): %s", len(self._reloaded), exc
                )
                return
            self._reloaded = {d.symbol: d for d in (frame_symbol_data(p, f) for p, f in frames.items())}

    def symbols(self) -> dict[str, SymbolData]:
        """Every symbol served now: ``store`` and the reloadable pairs (re-read every :data:`RELOAD_EVERY_S`)."""
        self._reload_now(RELOAD_EVERY_S)
        return {**self._reloaded, **self.store}

    def lookup(self, symbol: str) -> SymbolData:
        """``symbol``'s data (any case), re-reading the reloadable pairs first when it is not known (yet);
        Binance's "Invalid symbol." when it is not served."""
        symbol = symbol.upper()
        found = self.store.get(symbol) or self._reloaded.get(symbol)
        if found is None and self._reload is not None:
            self._reload_now(RELOAD_MIN_GAP_S)
            found = self._reloaded.get(symbol)
        if found is None:
            raise BinanceError(-1121, "Invalid symbol.")
        return found

    def server_time(self) -> int:
        """Epoch ms "now": the market clock's when the server replays one, else the wall clock's."""
        if self.clock is None:
            return int(time.time() * 1000)
        return int(self.clock.now().timestamp() * 1000)

    @property
    def url(self) -> str:
        """``http://host:port`` (the address actually bound)."""
        host, port = self.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        """What to set as ``MUR_BINANCE_API_URL`` (python-binance's ``API_URL``)."""
        return f"{self.url}/api"


def make_server(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    pairs: Iterable[str] | None = None,
    handler_class: type[ReplayHandler] = ReplayHandler,
    synthetic: int = 0,
    clock: MarketClock | None = None,
    reload: Callable[[], Mapping[str, pd.DataFrame]] | None = None,
) -> ReplayServer:
    """Bind a replay server over the bundled ``pairs`` (default: all), the first ``synthetic`` synthetic
    pairs (``syn001_usdt`` …, :mod:`mur.data.synthetic`) and, re-read while it runs, the typed candles by pair
    that ``reload`` returns (the pairs an admin uploaded, :func:`mur.data.uploaded.uploaded_candles`); ``port=0`` picks a free port. With a market
    ``clock`` (:mod:`mur.clock`), ``/api/v3/time`` is market now and only candles closed by then exist.

    Raises ``OSError`` when the address cannot be bound. Call ``serve_forever()`` to start answering (or use
    :func:`running_replay_server`).
    """
    from mur.data import bundled_pairs, load_synthetic, synthetic_pairs

    loaded = [load_symbol_data(pair) for pair in (pairs if pairs is not None else bundled_pairs())]
    loaded += [frame_symbol_data(pair, load_synthetic(pair)) for pair in synthetic_pairs(synthetic)]
    return ReplayServer((host, port), {data.symbol: data for data in loaded}, handler_class, clock, reload)


@contextmanager
def running_replay_server(**options: Any) -> Iterator[ReplayServer]:
    """A replay server (:func:`make_server`'s keyword arguments) serving in a background thread for the
    ``with`` block (for tests and scripts)."""
    with make_server(**options) as server:  # closes its socket at the end
        thread = threading.Thread(target=server.serve_forever, args=(0.1,), name="mur-replay", daemon=True)
        thread.start()
        try:
            yield server
        finally:
            server.shutdown()
            thread.join(timeout=5)
