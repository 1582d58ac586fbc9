"""The pair registry in PostgreSQL (mur/db/pairs.py, sql/0009_pairs.sql) and the catalogue over it
(mur/data/catalogue.py): an uploaded pair's candles round-trip through the market data every process reads,
removal keeps the history, re-adding brings the pair back, the table refuses what the rules refuse."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
import pytest
from pair_csv import START, pair_csv_text

from mur.data import get_market_data
from mur.data.catalogue import add_csv_pair, add_exchange_pair, catalogue_entries, pair_catalogue, remove_pair
from mur.db import Database, connect
from mur.db.pairs import get_pair_record, list_pair_records, mark_removed, pair_candle_rows
from mur.errors import DataValidationError, InvalidInputError, UnknownPairError
from mur.settings import Settings

pytestmark = pytest.mark.pg

HOURS = 300


@pytest.fixture
def pair_settings(pg_database_factory: Callable[..., Settings]) -> Settings:
    """A fresh migrated database (the catalogue is global state), two configured pairs, a short minimum."""
    return pg_database_factory().replace(
        pairs=["btc_usdt", "eth_usdt"], pair_min_history_hours=200, market_data="bundled"
    )


@pytest.fixture
def pair_db(pair_settings: Settings) -> Database:
    db = Database(pair_settings, maxconn=2)
    yield db  # type: ignore[misc]
    db.close()


def _upload(settings: Settings, db: Database, pair: str = "doge_usdt", hours: int = HOURS) -> None:
    data = io.BytesIO(pair_csv_text(hours).encode())
    add_csv_pair(settings, db, pair, data, name="doge.csv", added_by="alice")


def test_uploaded_pair_joins_the_catalogue_and_its_candles_reach_the_market_data(
    pair_settings: Settings, pair_db: Database
) -> None:
    _upload(pair_settings, pair_db)
    assert pair_catalogue(pair_settings, pair_db) == ["btc_usdt", "eth_usdt", "doge_usdt"]
    record = get_pair_record(pair_db, pair="doge_usdt")
    assert record is not None and record.source == "csv" and record.active and record.candles == HOURS
    assert record.first_open == START and record.added_by == "alice"

    source = get_market_data(pair_settings)  # what training, the market cache and the dashboard use
    first, last = source.data_range("doge_usdt")
    assert first == START and (last - first).total_seconds() == (HOURS - 1) * 3600
    window = source.klines(
        "doge_usdt", start=datetime(2024, 1, 2, tzinfo=UTC), end=datetime(2024, 1, 3, tzinfo=UTC)
    )
    assert len(window) == 24 and window["timestamp"].iloc[0] == datetime(2024, 1, 2, tzinfo=UTC)
    assert str(window["timestamp"].dtype) == "datetime64[ns, UTC]" and (window["close"] > 0).all()
    with pytest.raises(UnknownPairError, match="no candles were uploaded"):
        source.klines("pepe_usdt")


def test_removal_keeps_the_history_and_re_adding_brings_the_pair_back(
    pair_settings: Settings, pair_db: Database
) -> None:
    _upload(pair_settings, pair_db)
    remove_pair(pair_settings, pair_db, "DOGE-USDT", removed_by="bob")
    remove_pair(pair_settings, pair_db, "eth_usdt", removed_by="bob")  # a configured pair
    assert pair_catalogue(pair_settings, pair_db) == ["btc_usdt"]
    doge = get_pair_record(pair_db, pair="doge_usdt")
    assert doge is not None and not doge.active and doge.removed_by == "bob" and doge.candles == HOURS
    assert len(pair_candle_rows(pair_db, pair="doge_usdt")) == HOURS  # the candles stay
    assert len(get_market_data(pair_settings).klines("doge_usdt")) == HOURS  # readable for its track record
    entries = {e.pair: e.status for e in catalogue_entries(pair_settings, pair_db)}
    assert entries == {"btc_usdt": "active", "eth_usdt": "removed", "doge_usdt": "removed"}
    with pytest.raises(InvalidInputError, match="removed already"):
        remove_pair(pair_settings, pair_db, "doge_usdt", removed_by="bob")

    add_exchange_pair(pair_settings, pair_db, "ETHUSDT", added_by="carol")  # bundled: back from the market
    _upload(pair_settings, pair_db, hours=HOURS + 24)  # a new upload replaces the old candles
    assert pair_catalogue(pair_settings, pair_db) == ["btc_usdt", "eth_usdt", "doge_usdt"]
    assert len(pair_candle_rows(pair_db, pair="doge_usdt")) == HOURS + 24
    with pytest.raises(InvalidInputError, match="in the catalogue already"):
        _upload(pair_settings, pair_db)


def test_adding_refuses_what_the_market_cannot_answer(pair_settings: Settings, pair_db: Database) -> None:
    with pytest.raises(UnknownPairError, match="upload its hourly candles"):
        add_exchange_pair(pair_settings, pair_db, "DOGEUSDT", added_by="alice")
    with pytest.raises(InvalidInputError, match="is bundled"):
        _upload(pair_settings, pair_db, pair="sol_usdt")
    with pytest.raises(InvalidInputError, match="MUR_MARKET_DATA=bundled"):
        _upload(pair_settings.replace(market_data="binance"), pair_db)
    assert list_pair_records(pair_db) == []


def test_the_replay_exchange_serves_an_uploaded_pair_and_live_adding_validates_against_it(
    pair_settings: Settings, pair_db: Database
) -> None:
    """The uploaded candles reach the Binance replay server (``mur data serve``), and with live market data
    (python-binance against that exchange) a symbol is added only when the exchange knows it."""
    from devstack.replay import running_replay_server
    from mur.data import BinanceMarketData
    from mur.data.uploaded import uploaded_candles

    _upload(pair_settings, pair_db)
    frames = uploaded_candles(pair_db)
    assert list(frames) == ["doge_usdt"] and len(frames["doge_usdt"]) == HOURS
    with running_replay_server(pairs=["btc_usdt"], reload=lambda: frames) as server:
        live = pair_settings.replace(
            market_data="binance", binance_api_url=server.api_url, binance_max_retries=0
        )
        served = BinanceMarketData(live).klines("doge_usdt", start=START)
        assert len(served) == HOURS and served["close"].tolist() == frames["doge_usdt"]["close"].tolist()
        remove_pair(pair_settings, pair_db, "doge_usdt", removed_by="bob")
        short = live.replace(pair_min_history_hours=HOURS + 1)
        with pytest.raises(
            DataValidationError, match=f"DOGEUSDT has too little history on the exchange: {HOURS} "
        ):
            add_exchange_pair(short, pair_db, "DOGEUSDT", added_by="carol")
        with pytest.raises(UnknownPairError, match="PEPEUSDT is invalid"):
            add_exchange_pair(live, pair_db, "PEPEUSDT", added_by="carol")
        record = add_exchange_pair(live, pair_db, "DOGEUSDT", added_by="carol")  # checked on the exchange
        assert record.source == "exchange" and record.active and record.first_open == START
    assert pair_catalogue(pair_settings, pair_db) == ["btc_usdt", "eth_usdt", "doge_usdt"]


def test_the_tables_refuse_bad_rows(pair_settings: Settings, pair_db: Database) -> None:
    mark_removed(pair_db, pair="btc_usdt", removed_by="bob")
    with connect(pair_settings) as conn:
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE pairs SET removed_at = NULL WHERE pair = 'btc_usdt'")
        conn.rollback()
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO pairs (pair, source) VALUES ('BAD PAIR', 'exchange')")
        conn.rollback()
        with pytest.raises(psycopg.errors.CheckViolation):  # an uploaded pair without candles
            conn.execute("INSERT INTO pairs (pair, source) VALUES ('abc_usdt', 'csv')")
        conn.rollback()
        conn.execute("INSERT INTO pairs (pair, source, symbol) VALUES ('abc_usdt', 'exchange', 'ABCUSDT')")
        with pytest.raises(psycopg.errors.CheckViolation):  # off the hour
            conn.execute(
                "INSERT INTO pair_candles (pair, open_time, open, high, low, close, volume, close_time) "
                "VALUES ('abc_usdt', '2024-01-01 00:30Z', 1, 1, 1, 1, 0, '2024-01-01 01:29Z')"
            )
        conn.rollback()
        conn.execute("INSERT INTO pairs (pair, source, symbol) VALUES ('abc_usdt', 'exchange', 'ABCUSDT')")
        row = "('abc_usdt', '2024-01-01 00:00Z', 1, 1, 1, 1, 0, '2024-01-01 00:59Z')"
        insert = (
            "INSERT INTO pair_candles (pair, open_time, open, high, low, close, volume, close_time) VALUES "
        )
        conn.execute(insert + row)
        with pytest.raises(psycopg.errors.UniqueViolation):  # one candle an hour
            conn.execute(insert + row)


def test_a_running_replay_exchange_serves_a_pair_uploaded_after_it_started(
    pair_settings: Settings, pair_db: Database
) -> None:
    """``mur data serve`` re-reads the uploaded pairs while it runs: a pair an admin uploads later is served
    at its first request (no restart), and a database outage keeps what was read."""
    from devstack.replay import running_replay_server
    from mur.data import BinanceMarketData
    from mur.data.uploaded import uploaded_candles

    outage = {"on": False}

    def reload() -> dict:
        if outage["on"]:
            raise psycopg.OperationalError("server closed the connection")
        return uploaded_candles(pair_db)

    with running_replay_server(pairs=["btc_usdt"], reload=reload) as server:
        live = pair_settings.replace(
            market_data="binance", binance_api_url=server.api_url, binance_max_retries=0
        )
        assert "DOGEUSDT" not in server.symbols()
        with pytest.raises(UnknownPairError):
            BinanceMarketData(live).klines("doge_usdt", start=START)
        _upload(pair_settings, pair_db)
        server._reloaded_at = float("-inf")  # the unknown-symbol re-read is rate-limited to every 2 s
        served = BinanceMarketData(live).klines("doge_usdt", start=START)
        assert len(served) == HOURS
        outage["on"] = True
        server._reloaded_at = float("-inf")
        assert "DOGEUSDT" in server.symbols() and "BTCUSDT" in server.symbols()  # kept through the outage


def test_data_show_labels_an_uploaded_pair_uploaded(
    pair_settings: Settings, pair_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from mur.cli import app
    from mur.settings import get_settings

    _upload(pair_settings, pair_db)
    monkeypatch.setenv("MUR_PG_DATABASE", pair_settings.db.pg_database)
    monkeypatch.setenv("MUR_MARKET_DATA", "bundled")
    get_settings.cache_clear()
    try:
        uploaded = CliRunner().invoke(app, ["data", "show", "doge_usdt", "--tail", "2"])
        bundled = CliRunner().invoke(app, ["data", "show", "btc_usdt", "--tail", "2"])
    finally:
        get_settings.cache_clear()
    assert uploaded.exit_code == 0 and "doge_usdt 1h candles (uploaded)" in uploaded.stdout, uploaded.output
    assert bundled.exit_code == 0 and "btc_usdt 1h candles (bundled)" in bundled.stdout, bundled.output
