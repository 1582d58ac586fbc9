"""The replay server answers like Binance, so the real python-binance client and BinanceMarketData work on it.

The server runs in-process on an ephemeral port (no network, no services needed).
"""

from __future__ import annotations

import itertools
import logging
import socket
import struct
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest
import requests

from devstack.replay import ReplayHandler, ReplayServer, running_replay_server
from mur.data import BinanceMarketData, BundledMarketData
from mur.errors import MarketDataError, UnknownPairError
from mur.settings import Settings

pytestmark = pytest.mark.timeout(120)
PAIRS = ("btc_usdt", "eth_usdt")


class CountingHandler(ReplayHandler):
    """Counts the klines requests it answers (class attribute; reset by the fixture)."""

    klines_requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        if "/klines" in self.path:
            type(self).klines_requests.append(self.path)
        super().do_GET()


@pytest.fixture(scope="module")
def server() -> Iterator[ReplayServer]:
    with running_replay_server(pairs=PAIRS, handler_class=CountingHandler) as srv:
        yield srv


@pytest.fixture
def counted(server: ReplayServer) -> list[str]:
    CountingHandler.klines_requests = []
    return CountingHandler.klines_requests


def binance_source(api_url: str, **overrides: object) -> BinanceMarketData:
    settings = Settings(
        market_data="binance",
        binance_api_url=api_url,
        binance_api_key=None,
        binance_api_secret=None,
        **{"binance_max_retries": 3, "binance_backoff_s": 0.01, **overrides},
    )
    return BinanceMarketData(settings)


def get(server: ReplayServer, path: str, **params: object) -> requests.Response:
    return requests.get(f"{server.api_url}/v3/{path}", params=params, timeout=10)


# --- python-binance end to end -------------------------------------------------------------------
def test_multi_page_window_matches_bundled(server: ReplayServer, counted: list[str]) -> None:
    start, end = datetime(2023, 2, 1, tzinfo=UTC), datetime(2023, 5, 1, tzinfo=UTC)
    fetched = binance_source(server.api_url).klines("btc_usdt", start, end)
    expected = BundledMarketData().klines("btc_usdt", start, end)
    assert len(expected) == 89 * 24 - 1  # one hour missing on 2023-03-24 (Binance halt)
    pd.testing.assert_frame_equal(fetched, expected)
    # python-binance: one earliest-timestamp probe (startTime=0, limit=1), then 1000 + 1000 + 135 rows.
    queries = [parse_qs(urlsplit(path).query) for path in counted]
    assert len(queries) == 4
    assert (queries[0]["startTime"], queries[0]["limit"]) == (["0"], ["1"])
    assert all(q["limit"] == ["1000"] for q in queries[1:])
    assert queries[-1]["endTime"] == [str(int(end.timestamp() * 1000) - 1)]


def test_window_from_the_beginning(server: ReplayServer) -> None:
    end = datetime(2023, 1, 2, tzinfo=UTC)
    fetched = binance_source(server.api_url).klines("eth_usdt", end=end)
    pd.testing.assert_frame_equal(fetched, BundledMarketData().klines("eth_usdt", end=end))
    assert len(fetched) == 24


def test_unknown_symbol_is_not_retried(server: ReplayServer, counted: list[str]) -> None:
    source = binance_source(server.api_url)
    with pytest.raises(UnknownPairError, match="Binance says symbol DOGEUSDT is invalid"):
        source.klines("doge_usdt", datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC))
    assert len(counted) == 1 and source.retries == 0


def test_empty_answer_is_a_clear_error(server: ReplayServer) -> None:
    with pytest.raises(MarketDataError, match="no candles for btc_usdt between 2030-01-01 00:00 UTC"):
        binance_source(server.api_url).klines("btc_usdt", datetime(2030, 1, 1, tzinfo=UTC))


def test_pairs_and_data_range(server: ReplayServer) -> None:
    source = binance_source(server.api_url)
    assert source.pairs() == list(PAIRS)
    assert source.data_range("eth_usdt") == BundledMarketData().data_range("eth_usdt")


# --- raw HTTP: Binance semantics and error shapes ------------------------------------------------
def test_ping_time_exchange_info(server: ReplayServer) -> None:
    assert get(server, "ping").json() == {}
    assert get(server, "time").json()["serverTime"] > 1_700_000_000_000
    info = get(server, "exchangeInfo").json()
    assert info["timezone"] == "UTC"
    assert [s["symbol"] for s in info["symbols"]] == ["BTCUSDT", "ETHUSDT"]
    one = get(server, "exchangeInfo", symbol="ETHUSDT").json()["symbols"]
    assert [(s["symbol"], s["status"], s["baseAsset"], s["quoteAsset"]) for s in one] == [
        ("ETHUSDT", "TRADING", "ETH", "USDT")
    ]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"symbol": "NOPEUSDT", "interval": "1h"}, -1121),
        ({"symbol": "BTCUSDT", "interval": "5m"}, -1120),
        ({"symbol": "BTCUSDT", "interval": "7x"}, -1120),
        ({"symbol": "BTCUSDT", "interval": "1h", "limit": "abc"}, -1100),
        ({"symbol": "BTCUSDT", "interval": "1h", "startTime": "-5"}, -1100),
        ({"interval": "1h"}, -1102),
        ({"symbol": "BTCUSDT"}, -1102),
        ({"symbol": "BTCUSDT", "interval": "1h", "limit": "1001"}, -1130),
    ],
)
def test_klines_errors_have_binance_shape(server: ReplayServer, params: dict[str, str], code: int) -> None:
    response = get(server, "klines", **params)
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"code", "msg"} and body["code"] == code
    if code == -1121:
        assert body == {"code": -1121, "msg": "Invalid symbol."}


def test_klines_row_format_and_selection(server: ReplayServer) -> None:
    bundled = BundledMarketData().klines("btc_usdt")
    ms = bundled["timestamp"].astype("int64") // 1_000_000
    t0, t5 = int(ms.iloc[0]), int(ms.iloc[5])

    rows = get(server, "klines", symbol="BTCUSDT", interval="1h", startTime=t0, endTime=t5).json()
    assert [r[0] for r in rows] == ms.iloc[:6].tolist()  # both ends inclusive on open time
    first = rows[0]
    assert first[0] == t0 and first[6] == t0 + 3_599_999 and first[11] == "0"
    assert [type(v) for v in first] == [int, str, str, str, str, str, int, str, int, str, str, str]
    assert float(first[4]) == bundled["close"].iloc[0] and first[8] == bundled["trades"].iloc[0]

    default = get(server, "klines", symbol="BTCUSDT", interval="1h", startTime=t0).json()
    assert len(default) == 500
    latest = get(server, "klines", symbol="BTCUSDT", interval="1h", limit=3).json()
    assert [r[0] for r in latest] == ms.iloc[-3:].tolist()
    before = get(server, "klines", symbol="BTCUSDT", interval="1h", endTime=t5 + 1, limit=2).json()
    assert [r[0] for r in before] == ms.iloc[4:6].tolist()
    capped = get(server, "klines", symbol="BTCUSDT", interval="1h", startTime=t0 + 1, limit=2).json()
    assert [r[0] for r in capped] == ms.iloc[1:3].tolist()


# --- retries -------------------------------------------------------------------------------------
def flaky_handler(failures: list[str]) -> tuple[type[ReplayHandler], list[str]]:
    """A handler that fails the first requests as ``failures`` says ('502' or 'reset'), then behaves."""
    seen: list[str] = []
    lock = threading.Lock()
    plan = itertools.chain(failures, itertools.repeat("ok"))

    class Flaky(ReplayHandler):
        def do_GET(self) -> None:  # noqa: N802
            with lock:
                action = next(plan)
                seen.append(action)
            if action == "502":
                self.send_json(502, b"<html>502 Bad Gateway</html>")
            elif action == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
            else:
                super().do_GET()

    return Flaky, seen


def test_retries_transient_failures(caplog: pytest.LogCaptureFixture) -> None:
    handler, seen = flaky_handler(["502", "reset", "502"])
    start, end = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 3, tzinfo=UTC)
    with running_replay_server(pairs=["btc_usdt"], handler_class=handler) as srv:
        source = binance_source(srv.api_url, binance_max_retries=3)
        with caplog.at_level(logging.WARNING, logger="mur.data.binance"):
            fetched = source.klines("btc_usdt", start, end)
    pd.testing.assert_frame_equal(fetched, BundledMarketData().klines("btc_usdt", start, end))
    assert source.retries == 3
    assert seen[:4] == ["502", "reset", "502", "ok"]
    assert caplog.text.count("retry") == 3 and "HTTP 502" in caplog.text


def test_gives_up_after_max_retries() -> None:
    handler, seen = flaky_handler(["502"] * 10)
    with running_replay_server(pairs=["btc_usdt"], handler_class=handler) as srv:
        source = binance_source(srv.api_url, binance_max_retries=2)
        with pytest.raises(MarketDataError, match=r"failed after 3 attempts .*HTTP 502"):
            source.klines("btc_usdt", datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC))
    assert seen == ["502"] * 3 and source.retries == 2


def test_connection_refused_is_retried_then_reported() -> None:
    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source = binance_source(f"http://127.0.0.1:{port}/api", binance_max_retries=1)
    with pytest.raises(MarketDataError, match="failed after 2 attempts .*ConnectionError"):
        source.klines("btc_usdt", datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC))
    assert source.retries == 1


def test_cli_show_through_replay(
    server: ReplayServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mur.commands import data as data_cmd
    from mur.settings import get_settings

    monkeypatch.setenv("MUR_MARKET_DATA", "binance")
    monkeypatch.setenv("MUR_BINANCE_API_URL", server.api_url)
    get_settings.cache_clear()
    try:
        data_cmd.show("eth_usdt", start=None, end="2023-03-25", tail=3)
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr().out
    assert "no --start: showing the last 7 days" in out
    assert "eth_usdt 1h candles (binance)" in out
    assert "range: 2023-03-18 00:00 UTC to 2023-03-24 23:00 UTC (167 candles)" in out
    assert "gaps: 1 missing hour(s): 2023-03-24 13:00 UTC" in out
