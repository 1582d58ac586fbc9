"""Unit tests for mur.data: windows, validation, user CSVs, gap filling, sources, pairs."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mur.data import (
    KLINE_COLUMNS,
    BinanceMarketData,
    BundledMarketData,
    ClockedMarketData,
    MarketData,
    get_market_data,
    load_bundled,
    load_candles_csv,
    missing_hours,
    regularize_hourly,
    validate_candles,
)
from mur.data.candles import typed_klines_frame
from mur.data.uploaded import UploadedPairs
from mur.errors import DataValidationError, MarketDataError, UnknownPairError
from mur.pairs import pair_to_symbol, symbol_to_pair
from mur.settings import Settings

T0_MS = 1_704_067_200_000  # 2024-01-01 00:00 UTC
HOUR_MS = 3_600_000


def make_candles(n: int = 6, *, skip: tuple[int, ...] = (), start_ms: int = T0_MS) -> pd.DataFrame:
    """A typed frame of ``n`` hourly candles (closes 100, 101, …), leaving out the hours in ``skip``."""
    hours = [h for h in range(n) if h not in skip]
    ts = [start_ms + h * HOUR_MS for h in hours]
    close = [100.0 + h for h in hours]
    raw = pd.DataFrame(
        {
            "timestamp": ts,
            "open": [c - 0.5 for c in close],
            "high": [c + 1 for c in close],
            "low": [c - 1 for c in close],
            "close": close,
            "volume": [10.0] * len(ts),
            "close_time": [t + HOUR_MS - 1 for t in ts],
            "quote_av": [1000.0] * len(ts),
            "trades": [7] * len(ts),
            "tb_base_av": [5.0] * len(ts),
            "tb_quote_av": [500.0] * len(ts),
            "ignore": [0] * len(ts),
        }
    )
    return typed_klines_frame(raw)


# --- pairs -----------------------------------------------------------------------------------------
def test_pair_symbol_round_trip() -> None:
    assert pair_to_symbol("btc_usdt") == "BTCUSDT"
    assert pair_to_symbol("ETH/USDT") == "ETHUSDT"
    assert symbol_to_pair("BTCUSDT") == "btc_usdt"
    assert symbol_to_pair("ETHBTC") == "eth_btc"
    assert symbol_to_pair("USDCUSDT") == "usdc_usdt"
    assert symbol_to_pair(pair_to_symbol("sol_usdt")) == "sol_usdt"


@pytest.mark.parametrize("bad", ["btcusdt", "btc_", "_usdt", "btc usdt", "b_usdt", ""])
def test_pair_to_symbol_rejects_bad_format(bad: str) -> None:
    with pytest.raises(UnknownPairError, match="expected BASE_QUOTE such as 'btc_usdt'"):
        pair_to_symbol(bad)


@pytest.mark.parametrize("bad", ["BTCXYZ", "USDT", "BTC-USDT", ""])
def test_symbol_to_pair_rejects_unsplittable(bad: str) -> None:
    with pytest.raises(UnknownPairError, match="invalid symbol"):
        symbol_to_pair(bad)


# --- bundled source and window semantics ---------------------------------------------------------
def test_window_is_half_open() -> None:
    source = BundledMarketData()
    start, end = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 5, tzinfo=UTC)
    df = source.klines("btc_usdt", start, end)
    assert len(df) == 5
    assert df["timestamp"].iloc[0] == pd.Timestamp(start)
    assert df["timestamp"].iloc[-1] == pd.Timestamp("2024-01-01 04:00", tz="UTC")
    assert (df["timestamp"] < pd.Timestamp(end)).all()
    assert list(df.index) == list(range(5))
    assert tuple(df.columns) == KLINE_COLUMNS


def test_window_accepts_naive_as_utc_and_other_offsets() -> None:
    source = BundledMarketData()
    aware = source.klines("eth_usdt", datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC))
    naive = source.klines("eth_usdt", datetime(2024, 3, 1), datetime(2024, 3, 2))
    plus2 = timezone(timedelta(hours=2))
    shifted = source.klines(
        "eth_usdt", datetime(2024, 3, 1, 2, tzinfo=plus2), datetime(2024, 3, 2, 2, tzinfo=plus2)
    )
    pd.testing.assert_frame_equal(aware, naive)
    pd.testing.assert_frame_equal(aware, shifted)
    assert len(aware) == 24


def test_open_ended_windows() -> None:
    source = BundledMarketData()
    head = source.klines("sol_usdt", end=datetime(2024, 1, 1, 3, tzinfo=UTC))
    tail = source.klines("sol_usdt", start=datetime(2025, 12, 31, 22, tzinfo=UTC))
    assert list(head["timestamp"].dt.hour) == [0, 1, 2]
    assert list(tail["timestamp"].dt.hour) == [22, 23]
    first, last = source.data_range("sol_usdt")
    assert (first, last) == (head["timestamp"].iloc[0], tail["timestamp"].iloc[-1])


def test_empty_window_is_a_clear_error() -> None:
    source = BundledMarketData()
    with pytest.raises(MarketDataError, match=r"no candles for btc_usdt between 2030-01-01 00:00 UTC and"):
        source.klines("btc_usdt", datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 2, 1, tzinfo=UTC))
    with pytest.raises(MarketDataError, match="is not before end"):
        source.klines("btc_usdt", datetime(2024, 1, 2, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))


def test_unknown_pair() -> None:
    source = BundledMarketData()
    with pytest.raises(UnknownPairError, match="unknown pair 'doge_usdt'.*btc_usdt"):
        source.klines("doge_usdt")
    with pytest.raises(UnknownPairError):
        load_bundled("not a pair")


def test_load_bundled_returns_independent_copies() -> None:
    first = load_bundled("bnb_usdt")
    first.loc[0, "close"] = -1.0
    assert load_bundled("bnb_usdt").loc[0, "close"] > 0


def test_factory_and_protocol() -> None:
    bundled = get_market_data(Settings(market_data="bundled"))
    binance = get_market_data(Settings(market_data="binance", binance_api_url="http://127.0.0.1:9/api"))
    assert isinstance(bundled, ClockedMarketData) and isinstance(bundled, MarketData)
    # the recorded history, seen through the clock: the bundled data, then the pairs an admin uploaded
    assert isinstance(bundled.archive, UploadedPairs)
    assert isinstance(bundled.archive.archive, BundledMarketData)
    assert isinstance(binance, BinanceMarketData) and isinstance(binance, MarketData)
    assert "client" not in vars(binance)  # no client (and no network) until the first request


def test_binance_pairs_are_the_trading_symbols_that_split() -> None:
    """``pairs`` keeps trading symbols with a known quote asset, as canonical pairs (sorted, once each)."""
    binance = BinanceMarketData(Settings(market_data="binance"))
    listed = [("ETHUSDT", "TRADING"), ("BTCUSDT", "TRADING"), ("BTCUSDT", "TRADING"), ("ETHBTC", "BREAK")]
    listed += [("XYZ", "TRADING"), ("FOOBARQQQ", "TRADING"), ("A" * 21 + "USDT", "TRADING")]
    info = {"symbols": [{"symbol": symbol, "status": status} for symbol, status in listed]}
    binance.__dict__["client"] = type("Client", (), {"get_exchange_info": staticmethod(lambda: info)})()
    assert binance.pairs() == ["btc_usdt", "eth_usdt"]


# --- validate_candles ----------------------------------------------------------------------------
def test_validate_accepts_good_candles() -> None:
    validate_candles(make_candles(5), min_rows=5)


def test_validate_nan_names_column_and_time() -> None:
    df = make_candles(5)
    df.loc[2, "close"] = np.nan
    with pytest.raises(DataValidationError, match=r"column 'close' has NaN at 2024-01-01 02:00 UTC"):
        validate_candles(df)


def test_validate_inf() -> None:
    df = make_candles(5)
    df.loc[3, "volume"] = np.inf
    with pytest.raises(DataValidationError, match=r"column 'volume' has inf at 2024-01-01 03:00 UTC"):
        validate_candles(df)


@pytest.mark.parametrize("value", [0.0, -3.0])
def test_validate_non_positive_price(value: float) -> None:
    df = make_candles(5)
    df.loc[1, "low"] = value
    with pytest.raises(DataValidationError, match=r"non-positive low price .* at 2024-01-01 01:00 UTC"):
        validate_candles(df)


def test_validate_too_few_rows() -> None:
    with pytest.raises(DataValidationError, match=r"^need at least 10 candles, got 4$"):
        validate_candles(make_candles(4), min_rows=10)


def test_validate_duplicate_and_unsorted() -> None:
    df = make_candles(4)
    dup = pd.concat([df, df.iloc[[3]]], ignore_index=True)
    with pytest.raises(DataValidationError, match=r"duplicate timestamp 2024-01-01 03:00 UTC"):
        validate_candles(dup)
    unsorted = df.iloc[[0, 2, 1, 3]].reset_index(drop=True)
    with pytest.raises(DataValidationError, match=r"not sorted: 2024-01-01 01:00 UTC \(row 2\)"):
        validate_candles(unsorted)


def test_validate_missing_column() -> None:
    with pytest.raises(DataValidationError, match="missing column\\(s\\): volume"):
        validate_candles(make_candles(3).drop(columns=["volume"]))


# --- load_candles_csv ----------------------------------------------------------------------------
def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "candles.csv"
    path.write_text(text)
    return path


def test_csv_with_ms_timestamps(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "timestamp,open,high,low,close,volume\n"
        f"{T0_MS},100,101,99,100.5,12.5\n"
        f"{T0_MS + HOUR_MS},100.5,102,100,101,8\n",
    )
    df = load_candles_csv(path)
    assert tuple(df.columns) == KLINE_COLUMNS
    assert df.dtypes.equals(load_bundled("btc_usdt").dtypes)
    assert df["timestamp"].iloc[1] == pd.Timestamp("2024-01-01 01:00", tz="UTC")
    assert df["close_time"].iloc[0] == pd.Timestamp(T0_MS + HOUR_MS - 1, unit="ms", tz="UTC")
    assert df["close"].tolist() == [100.5, 101.0]
    assert df[["quote_av", "tb_base_av", "tb_quote_av"]].eq(0).all().all()
    assert df["trades"].tolist() == [0, 0]


def test_csv_with_iso_timestamps_sorted_to_utc(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "Timestamp, Open, High, Low, Close, Volume, trades, extra\n"
        "2024-01-01T03:00:00+02:00,100.5,102,100,101,8,5,x\n"  # = 01:00 UTC
        "2024-01-01T00:00:00Z,100,101,99,100.5,12.5,3,y\n",
    )
    df = load_candles_csv(path)
    assert list(df["timestamp"]) == [
        pd.Timestamp("2024-01-01 00:00", tz="UTC"),
        pd.Timestamp("2024-01-01 01:00", tz="UTC"),
    ]
    assert df["trades"].tolist() == [3, 5]
    assert "extra" not in df.columns
    assert str(df["timestamp"].dtype) == "datetime64[ns, UTC]"


def test_csv_missing_column_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, f"timestamp,open,high,low,close\n{T0_MS},1,2,0.5,1.5\n")
    with pytest.raises(DataValidationError, match=r"missing column\(s\): volume \(need timestamp, open"):
        load_candles_csv(path)


def test_csv_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="candles CSV not found"):
        load_candles_csv(tmp_path / "nope.csv")
    seconds = _write(tmp_path, "timestamp,open,high,low,close,volume\n1704067200,1,2,0.5,1.5,3\n")
    with pytest.raises(DataValidationError, match="look like epoch seconds"):
        load_candles_csv(seconds)
    garbage_time = _write(tmp_path, "timestamp,open,high,low,close,volume\nyesterday,1,2,0.5,1.5,3\n")
    with pytest.raises(DataValidationError, match=r"'yesterday' at line 2 .* neither epoch milliseconds nor"):
        load_candles_csv(garbage_time)
    garbage_price = _write(tmp_path, f"timestamp,open,high,low,close,volume\n{T0_MS},1,2,0.5,abc,3\n")
    with pytest.raises(DataValidationError, match=r"column 'close' has non-numeric value 'abc' at line 2"):
        load_candles_csv(garbage_price)


def test_csv_is_validated(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        f"timestamp,open,high,low,close,volume\n{T0_MS},1,2,0.5,1.5,3\n{T0_MS + HOUR_MS},1,2,0,1.5,3\n",
    )
    with pytest.raises(DataValidationError, match="non-positive low price 0 at 2024-01-01 01:00 UTC"):
        load_candles_csv(path)
    empty_cell = _write(tmp_path, f"timestamp,open,high,low,close,volume\n{T0_MS},1,2,0.5,,3\n")
    with pytest.raises(DataValidationError, match="column 'close' has NaN at 2024-01-01 00:00 UTC"):
        load_candles_csv(empty_cell)


# --- gaps ----------------------------------------------------------------------------------------
def test_regularize_fills_missing_hours(caplog: pytest.LogCaptureFixture) -> None:
    df = make_candles(7, skip=(2, 3, 5))
    with caplog.at_level(logging.WARNING, logger="mur.data.candles"):
        out, filled = regularize_hourly(df, label="test_pair")
    expected = [pd.Timestamp(T0_MS + h * HOUR_MS, unit="ms", tz="UTC") for h in (2, 3, 5)]
    assert filled == expected == missing_hours(df)
    assert len(out) == 7 and out["timestamp"].diff().iloc[1:].eq(pd.Timedelta(hours=1)).all()
    assert out.dtypes.equals(df.dtypes)
    gap = out.set_index("timestamp").loc[expected]
    assert gap["close"].tolist() == [101.0, 101.0, 104.0]  # previous real close, carried forward
    assert (gap[["open", "high", "low"]].to_numpy() == gap[["close"]].to_numpy()).all()
    assert gap[["volume", "quote_av", "trades", "tb_base_av", "tb_quote_av"]].eq(0).all().all()
    assert (gap["close_time"] - gap.index == pd.Timedelta(milliseconds=HOUR_MS - 1)).all()
    kept = out[~out["timestamp"].isin(expected)].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, df.reset_index(drop=True))
    assert "test_pair: forward-filled 3 missing hour(s): 2024-01-01 02:00 UTC" in caplog.text
    validate_candles(out)


def test_regularize_without_gaps_is_identity() -> None:
    df = make_candles(5)
    out, filled = regularize_hourly(df)
    assert filled == []
    pd.testing.assert_frame_equal(out, df)


def test_regularize_rejects_off_grid_and_unsorted() -> None:
    df = make_candles(3)
    df.loc[1, "timestamp"] += pd.Timedelta(minutes=30)
    with pytest.raises(DataValidationError, match="2024-01-01 01:30 UTC is not on a whole hour"):
        regularize_hourly(df)
    with pytest.raises(DataValidationError, match="not sorted"):
        regularize_hourly(make_candles(3).iloc[::-1].reset_index(drop=True))


# --- CLI -----------------------------------------------------------------------------------------
def test_cli_show_bundled_prints_table_and_gap_summary(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mur.commands import data as data_cmd
    from mur.settings import get_settings

    monkeypatch.setenv("MUR_MARKET_DATA", "bundled")
    get_settings.cache_clear()
    try:
        data_cmd.show("btc_usdt", start="2023-03-24", end="2023-03-25", tail=2)
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr().out
    assert "2023-03-24 23:00" in out and "2023-03-24 21:00" not in out
    assert "range: 2023-03-24 00:00 UTC to 2023-03-24 23:00 UTC (23 candles)" in out
    assert "gaps: 1 missing hour(s): 2023-03-24 13:00 UTC" in out
    assert "zero-volume candles: 1 (2023-03-24 12:00 UTC)" in out


def test_cli_show_errors_are_mur_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    import typer

    from mur.commands import data as data_cmd
    from mur.settings import get_settings

    monkeypatch.setenv("MUR_MARKET_DATA", "bundled")
    get_settings.cache_clear()
    try:
        with pytest.raises(UnknownPairError):
            data_cmd.show("doge_usdt", start=None, end=None, tail=3)
        with pytest.raises(typer.BadParameter, match="not an ISO-8601"):
            data_cmd.show("btc_usdt", start="soon", end=None, tail=3)
    finally:
        get_settings.cache_clear()
