"""Framework-free serving logic (mur.serving, mur.model.inference): candle validation, the market cache,
error mapping, the forecast body."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from mur.clock import MarketClock
from mur.data import BundledMarketData
from mur.db import QuotaResult
from mur.errors import (
    AuthError,
    DatabaseError,
    DataValidationError,
    ForbiddenError,
    MarketDataError,
    ModelError,
    ModelNotLoadedError,
    UnknownPairError,
)
from mur.model.inference import forecast_body, window_from_candles
from mur.pairs import normalize_pair
from mur.serving.http import DATABASE_UNAVAILABLE, QuotaExhaustedError, bearer_token, expected, http_error
from mur.serving.market_cache import MarketCache
from mur.serving.payload import candles_from_payload, candles_to_payload
from mur.settings import Settings

SEQ = 4
START = datetime(2025, 1, 1, tzinfo=UTC)


def rows(n: int = SEQ, start: datetime = START) -> list[dict]:
    return [
        {
            "timestamp": int((start + timedelta(hours=i)).timestamp() * 1000),
            "open": 100.0 + i,
            "high": 102.0 + i,
            "low": 99.0 + i,
            "close": 101.0 + i,
            "volume": 5.0,
        }
        for i in range(n)
    ]


def test_valid_candles_become_the_typed_frame_and_a_window() -> None:
    frame = candles_from_payload(rows(), SEQ)
    assert list(frame["close"]) == [101.0, 102.0, 103.0, 104.0]
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    window = window_from_candles(frame, SEQ)
    assert window.shape == (SEQ, 9) and window.dtype == np.float32
    iso_rows = [{**r, "timestamp": pd.Timestamp(r["timestamp"], unit="ms").isoformat()} for r in rows()]
    assert candles_from_payload(iso_rows, SEQ)["timestamp"].equals(frame["timestamp"])
    assert candles_to_payload(frame) == rows()  # what a client sends back is what came in


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r[:-1], "need exactly 4 candles"),
        (lambda r: [*r, r[-1]], "need exactly 4 candles"),
        (lambda r: [r[0], r[2], r[1], r[3]], "ascending and hourly"),
        (lambda r: [r[0], r[1], r[1], r[3]], "ascending and hourly"),
        (lambda r: [{**r[0], "timestamp": r[0]["timestamp"] + 60_000}, *r[1:]], "whole hour"),
        (lambda r: [*r[:2], {**r[2], "close": float("nan")}, r[3]], "close: Input should be a finite number"),
        (lambda r: [*r[:2], {**r[2], "high": float("inf")}, r[3]], "high: Input should be a finite number"),
        (
            lambda r: [*r[:2], {**r[2], "low": 0.0}, r[3]],
            "low: Input should be greater than or equal to 0.00000001",
        ),
        (lambda r: [*r[:2], {**r[2], "open": -1.0}, r[3]], "open: Input should be greater than or equal"),
        (lambda r: [*r[:2], {**r[2], "close": "abc"}, r[3]], "close: Input should be a valid number"),
        (lambda r: [*r[:2], {k: v for k, v in r[2].items() if k != "open"}, r[3]], "2.open: Field required"),
        (lambda r: [{**r[0], "timestamp": 1735689600}, *r[1:]], "greater than or equal to 1230768000000"),
        (lambda r: [{**r[0], "timestamp": "yesterday"}, *r[1:]], "cannot parse"),
        (lambda r: [*r[:3], {**r[3], "volume": -2}], "volume: Input should be greater than or equal to 0"),
        (lambda r: [{**r[0], "timestamp": 10**14}, *r[1:]], "less than 4102444800000"),
        (lambda r: [{**r[0], "timestamp": 10**400}, *r[1:]], "less than 4102444800000"),
        (lambda r: [{**r[0], "timestamp": "2262-04-11T23:00:00Z"}, *r[1:]], "out of range"),
        (lambda r: [{**r[0], "timestamp": "now"}, *r[1:]], "cannot parse"),
        (
            lambda r: [*r[:2], {**r[2], "close": 1e300, "high": 1e300}, r[3]],
            "less than or equal to 100000000",
        ),
        (
            lambda r: [*r[:2], {**r[2], "open": 1e-50, "low": 1e-50}, r[3]],
            "greater than or equal to 0.00000001",
        ),
        (lambda r: [*r[:2], {**r[2], "close": 10**400}, r[3]], "close: Input should be a valid number"),
        (lambda r: [*r[:2], {**r[2], "high": 100.5}, r[3]], "'high' is below"),
        (lambda r: [*r[:2], {**r[2], "low": 103.0, "high": 300.0}, r[3]], "'low' is above"),
        (lambda r: [*r[:3], {**r[3], "volume": 1e300}], "less than or equal to 1000000000000000000"),
    ],
)
def test_invalid_candles_are_rejected_precisely(mutate, message: str) -> None:
    with pytest.raises(DataValidationError, match=message):
        candles_from_payload(mutate(rows()), SEQ)


def test_pairs_and_bearer_tokens() -> None:
    assert normalize_pair("BTC-USDT") == normalize_pair("btc_usdt") == "btc_usdt"
    with pytest.raises(UnknownPairError):
        normalize_pair("../etc")
    assert bearer_token("Bearer mur_abc") == "mur_abc"
    assert bearer_token("bearer   mur_abc ") == "mur_abc"
    for bad in (None, "", "Basic eDp5", "Bearer "):
        with pytest.raises(AuthError):
            bearer_token(bad)


def test_errors_map_to_statuses_and_json() -> None:
    reset = datetime(2030, 1, 1, tzinfo=UTC)
    status, body, headers = http_error(QuotaExhaustedError(QuotaResult(False, 50, 50, reset)))
    assert status == 429 and body["error"] == "quota_exhausted" and body["reset_at"] == "2030-01-01T00:00:00Z"
    assert body["limit"] == 50 and int(headers["Retry-After"]) > 0 and headers["X-RateLimit-Remaining"] == "0"
    assert http_error(AuthError("x"))[:2] == (401, {"error": "unauthorized", "message": "x"})
    assert http_error(AuthError("x"))[2]["WWW-Authenticate"] == "Bearer"
    assert http_error(ForbiddenError("x"))[0] == 403
    assert http_error(UnknownPairError("x"))[0] == 404
    assert http_error(DataValidationError("x"))[0] == 422
    assert http_error(ModelNotLoadedError("x"))[0] == 503
    assert http_error(MarketDataError("x"))[0] == 503


def test_forecast_body() -> None:
    body = forecast_body("btc_usdt", prediction=110.0, last_close=100.0, candle_time=START, model_version=3)
    assert body["candle_time"] == "2025-01-01T00:00:00Z" and body["target_time"] == "2025-01-01T01:00:00Z"
    assert math.isclose(body["change_pct"], 10.0) and body["model_version"] == 3
    for unusable in (math.nan, math.inf, 0.0, -1.0):  # never a body JSON cannot carry, or a -100 % forecast
        with pytest.raises(ModelError, match="no usable forecast"):
            forecast_body("btc_usdt", prediction=unusable, last_close=100.0, candle_time=START)


def test_database_errors_are_generic_and_other_failures_are_internal_errors() -> None:
    """Item 13: the client never learns PostgreSQL's user, host, port or database; item 6: an unexpected
    error in a forecaster crosses the handle as a MurError answered 500, its trace left in the log."""
    exc = DatabaseError("cannot connect to PostgreSQL postgres@db.internal:5432/mur: connection refused")
    status, body, _ = http_error(exc)
    assert status == 503 and body == {"error": "database_unavailable", "message": DATABASE_UNAVAILABLE}
    internal = expected(OverflowError("int too large"), "btc_usdt")
    assert http_error(internal)[:2] == (
        500,
        {"error": "internal_error", "message": "internal error (OverflowError)"},
    )
    invalid = DataValidationError("candle 1: bad")
    assert expected(invalid) is invalid and http_error(invalid)[0] == 422


def test_market_cache_uses_the_bundled_data_end_and_a_replay_clock() -> None:
    settings = Settings(market_data="bundled")
    source = BundledMarketData()
    last_open = source.data_range("btc_usdt")[1]
    cache = MarketCache(settings, ["btc_usdt"], source=source, history_hours=48)
    assert cache.refresh() == {}
    snap = cache.snapshot("btc_usdt")
    assert snap.candle_time == last_open.to_pydatetime() and len(snap.candles) == 48
    assert snap.window(24).shape == (24, 9)
    assert snap.window(24) is snap.window(24)  # computed once per refresh

    anchor = (last_open - pd.Timedelta(days=10) + pd.Timedelta(minutes=30)).to_pydatetime()
    replay = MarketCache(
        settings, ["btc_usdt"], source=source, clock=MarketClock(start=anchor, origin=time.time(), speed=0.0)
    )
    replay.refresh()
    # the candle that opened at anchor-floor is still open at anchor (:30): the last closed one is an hour earlier
    expected = (last_open - pd.Timedelta(days=10) - pd.Timedelta(hours=1)).to_pydatetime()
    assert replay.snapshot("btc_usdt").candle_time == expected


def test_market_cache_keeps_the_last_snapshot_when_a_refresh_fails() -> None:
    class Flaky(BundledMarketData):
        fail = False

        def klines(self, pair, start=None, end=None):  # type: ignore[override]
            if self.fail:
                raise MarketDataError("exchange down")
            return super().klines(pair, start, end)

    source = Flaky()
    cache = MarketCache(Settings(market_data="bundled"), ["eth_usdt"], source=source, history_hours=30)
    cache.refresh()
    before = cache.snapshot("eth_usdt")
    source.fail = True
    assert cache.refresh() == {}  # nothing new can have closed (the bundled clock stands still): no fetch
    assert "exchange down" in cache.refresh(force=True)["eth_usdt"]
    assert cache.snapshot("eth_usdt") is before
    assert "exchange down" in cache.status("eth_usdt")["error"]
    with pytest.raises(MarketDataError, match="no market data"):
        MarketCache(Settings(), ["sol_usdt"], source=source).snapshot("sol_usdt")


def test_loading_a_model_of_the_settings_window_refetches_no_other_pair() -> None:
    """The cache's default history already holds what a model of these settings reads (its window and a day):
    a model's load (``ensure``) fetches its own pair only, never every cached pair again."""

    class Counting(BundledMarketData):
        fetched: list[str] = []

        def klines(self, pair, start=None, end=None):  # type: ignore[override]
            self.fetched.append(pair)
            return super().klines(pair, start, end)

    settings = Settings(_env_file=None, market_data="bundled", context_len=200)
    source = Counting()
    cache = MarketCache(settings, ["btc_usdt", "eth_usdt"], source=source)
    cache.refresh()
    source.fetched.clear()
    cache.ensure("sol_usdt", settings.model.context_len + 24)
    assert source.fetched == ["sol_usdt"] and cache.history_hours == 2 * (200 + 24)
    assert len(cache.snapshot("sol_usdt").candles) == cache.history_hours
