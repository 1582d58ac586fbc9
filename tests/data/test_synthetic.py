"""Synthetic pairs (mur/data/synthetic.py): deterministic, consistent candles, offered only when configured,
and served identically by the replay server."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from devstack.replay import running_replay_server
from mur.data import (
    BinanceMarketData,
    BundledMarketData,
    get_market_data,
    load_bundled,
    load_synthetic,
    synthetic_pairs,
    validate_candles,
)
from mur.data.synthetic import is_synthetic, synthetic_base
from mur.errors import UnknownPairError
from mur.settings import Settings


def test_names_and_default_off() -> None:
    assert synthetic_pairs(3) == ["syn001_usdt", "syn002_usdt", "syn003_usdt"]
    assert is_synthetic("syn042_usdt") and not is_synthetic("btc_usdt") and not is_synthetic("syn000_usdt")
    archive = get_market_data(Settings(synthetic_pairs=0)).archive.archive  # type: ignore[attr-defined]
    assert isinstance(archive, BundledMarketData)  # the clock's archive is the bundled data plus the uploads
    assert "syn001_usdt" not in get_market_data(Settings()).pairs()


def test_synthetic_candles_are_deterministic_consistent_and_distinct() -> None:
    source = get_market_data(Settings(synthetic_pairs=6))
    assert source.pairs()[-6:] == synthetic_pairs(6)
    one = source.klines("syn001_usdt")
    validate_candles(one, min_rows=1000)
    assert (one["low"] <= one[["open", "close"]].min(axis=1) + 1e-9).all()
    assert (one["high"] >= one[["open", "close"]].max(axis=1) - 1e-9).all()
    pd.testing.assert_frame_equal(one, load_synthetic("syn001_usdt"))  # same every time
    real = load_bundled(synthetic_base("syn001_usdt"))
    assert (one["timestamp"].to_numpy() == real["timestamp"].to_numpy()).all()  # the real series' hours
    assert not np.allclose(one["close"].to_numpy(), real["close"].to_numpy())  # but not its prices
    six = source.klines("syn006_usdt")  # same base series as syn001, another shuffle and scale
    assert synthetic_base("syn006_usdt") == synthetic_base("syn001_usdt")
    assert not np.allclose(one["close"].to_numpy(), six["close"].to_numpy())
    end = source.data_range("syn001_usdt")[1]
    window = source.klines("syn001_usdt", start=end - pd.Timedelta(hours=23), end=end + pd.Timedelta(hours=1))
    assert len(window) == 24
    with pytest.raises(UnknownPairError):
        source.klines("syn007_usdt")  # beyond the configured count


def test_replay_server_serves_the_same_synthetic_candles() -> None:
    source = get_market_data(Settings(synthetic_pairs=2))
    end = source.data_range("syn002_usdt")[1]
    start = end - pd.Timedelta(hours=47)
    with running_replay_server(pairs=["btc_usdt"], synthetic=2) as server:
        client = BinanceMarketData(Settings(market_data="binance", binance_api_url=server.api_url))
        got = client.klines("syn002_usdt", start=start, end=end + pd.Timedelta(hours=1))
    want = source.klines("syn002_usdt", start=start, end=end + pd.Timedelta(hours=1))
    assert len(got) == len(want) == 48
    assert np.allclose(got["close"].to_numpy(), want["close"].to_numpy(), rtol=1e-8)
