"""Checks on the real bundled dataset (mur/data/klines): shape, types, consistency, the known gap."""

from __future__ import annotations

import pandas as pd
import pytest

from mur.data import (
    KLINE_COLUMNS,
    bundled_pairs,
    load_bundled,
    missing_hours,
    regularize_hourly,
    validate_candles,
)

# From mur/data/klines/SOURCES.md: rows, first and last open time (UTC).
EXPECTED = {
    "btc_usdt": (26303, "2023-01-01 00:00", "2025-12-31 23:00"),
    "eth_usdt": (26303, "2023-01-01 00:00", "2025-12-31 23:00"),
    "sol_usdt": (17544, "2024-01-01 00:00", "2025-12-31 23:00"),
    "bnb_usdt": (9457, "2024-05-01 00:00", "2025-05-30 00:00"),
    "xrp_usdt": (9457, "2024-05-01 00:00", "2025-05-30 00:00"),
}
HALT_PAIRS = {"btc_usdt": 28080.0, "eth_usdt": 1789.52}  # close of the 12:00 placeholder
PLACEHOLDER = pd.Timestamp("2023-03-24 12:00", tz="UTC")
MISSING = pd.Timestamp("2023-03-24 13:00", tz="UTC")


def test_bundled_pairs_found_via_package_resources() -> None:
    assert bundled_pairs() == sorted(EXPECTED)


@pytest.mark.parametrize("pair", sorted(EXPECTED))
def test_pair_loads_typed_and_complete(pair: str) -> None:
    df = load_bundled(pair)
    rows, first, last = EXPECTED[pair]
    assert tuple(df.columns) == KLINE_COLUMNS
    assert len(df) == rows
    assert df["timestamp"].iloc[0] == pd.Timestamp(first, tz="UTC")
    assert df["timestamp"].iloc[-1] == pd.Timestamp(last, tz="UTC")
    assert str(df["timestamp"].dtype) == str(df["close_time"].dtype) == "datetime64[ns, UTC]"
    assert all(str(df[c].dtype) == "int64" for c in ("trades", "ignore"))
    floats = [c for c in KLINE_COLUMNS if c not in ("timestamp", "close_time", "trades", "ignore")]
    assert all(str(df[c].dtype) == "float64" for c in floats)
    validate_candles(df, min_rows=rows)


@pytest.mark.parametrize("pair", sorted(EXPECTED))
def test_pair_is_sorted_unique_hourly(pair: str) -> None:
    df = load_bundled(pair)
    ts = df["timestamp"]
    assert ts.is_monotonic_increasing and ts.is_unique
    assert (ts == ts.dt.floor("h")).all()
    steps = ts.diff().iloc[1:].value_counts()
    assert steps.index.min() == pd.Timedelta(hours=1)


@pytest.mark.parametrize("pair", sorted(EXPECTED))
def test_ohlc_consistency(pair: str) -> None:
    df = load_bundled(pair)
    assert (df["high"] >= df[["open", "close"]].max(axis=1)).all()
    assert (df["low"] <= df[["open", "close"]].min(axis=1)).all()
    assert (df[["open", "high", "low", "close"]] > 0).all().all()
    assert (df["tb_base_av"] <= df["volume"]).all()
    assert (df["volume"] >= 0).all() and (df["trades"] >= 0).all()


@pytest.mark.parametrize("pair", sorted(EXPECTED))
def test_close_time_and_zero_volume_only_at_the_halt(pair: str) -> None:
    df = load_bundled(pair)
    irregular = df.loc[
        df["close_time"] - df["timestamp"] != pd.Timedelta(milliseconds=3_599_999), "timestamp"
    ]
    zero_volume = df.loc[df["volume"] == 0, "timestamp"]
    expected = [PLACEHOLDER] if pair in HALT_PAIRS else []
    assert list(irregular) == expected
    assert list(zero_volume) == expected


@pytest.mark.parametrize("pair", sorted(EXPECTED))
def test_known_gap_and_its_fill(pair: str) -> None:
    df = load_bundled(pair)
    expected = [MISSING] if pair in HALT_PAIRS else []
    assert missing_hours(df) == expected
    out, filled = regularize_hourly(df, label=pair)
    assert filled == expected
    assert len(out) == len(df) + len(expected)
    assert out["timestamp"].diff().iloc[1:].eq(pd.Timedelta(hours=1)).all()
    if pair in HALT_PAIRS:
        row = out.set_index("timestamp").loc[MISSING]
        price = HALT_PAIRS[pair]
        assert (row["open"], row["high"], row["low"], row["close"]) == (price, price, price, price)
        assert row["volume"] == 0 and row["trades"] == 0
        assert row["close_time"] == MISSING + pd.Timedelta(milliseconds=3_599_999)
