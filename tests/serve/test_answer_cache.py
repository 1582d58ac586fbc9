"""The API's answer cache of the latest forecasts (``ApiService._latest``): a good answer of a multiplexed pair is
shared for ``serve_answer_ttl_s`` seconds, only within its model id and its market hour; failures, dedicated
pairs (no model id) and a zero TTL are never cached. In-process, with a stand-in forecaster: no services."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from mur.clock import MarketClock
from mur.errors import ModelNotLoadedError
from mur.serving.contract import ForecastOut
from mur.settings import Settings
from serve_app.service import ApiService


@dataclass
class CountingForecaster:
    """Answers a forecast of ``calls`` by version ``model_key``'s (or raises ModelNotLoadedError when not
    ``ok``); ``model_key`` is what the ingress's router gives it."""

    model_key: str | None = "btc_usdt@3"
    ok: bool = True
    calls: int = 0
    delay_s: float = 0.0

    async def forecast_latest(self) -> ForecastOut:
        self.calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if not self.ok:
            raise ModelNotLoadedError("loading")
        hour = datetime(2025, 6, 1, 12, tzinfo=UTC)
        version = int((self.model_key or "btc_usdt@0").rpartition("@")[2])
        return ForecastOut(
            pair="btc_usdt",
            forecast=float(self.calls),
            last_close=1.0,
            change_pct=0.0,
            candle_time=hour,
            target_time=hour,
            model_version=version,
        )


class NoDatabase:
    """``ApiService`` reads only ``settings`` from its database here (``_latest`` makes no query)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def close(self) -> None:
        pass


def service(ttl_s: float, *, speed: float = 0.0) -> ApiService:
    """An ``ApiService`` with answer TTL ``ttl_s`` on its own market clock (frozen unless ``speed``)."""
    settings = Settings(serve_answer_ttl_s=ttl_s)
    api = ApiService(db=NoDatabase(settings), forecasters={}, registry=None)  # type: ignore[arg-type]
    api.clock = MarketClock(start=datetime(2025, 6, 1, 12, 30, tzinfo=UTC), origin=time.time(), speed=speed)
    return api


async def latest(api: ApiService, forecaster: CountingForecaster, n: int = 1) -> list[Any]:
    """``n`` concurrent latest forecasts (an error, e.g. ModelNotLoadedError, as the answer)."""
    calls = (api._latest("btc_usdt", forecaster) for _ in range(n))
    return list(await asyncio.gather(*calls, return_exceptions=True))


def test_a_good_answer_is_shared_within_its_ttl() -> None:
    api = service(60.0)
    fc = CountingForecaster()

    async def scenario() -> None:
        first = await latest(api, fc)
        again = await latest(api, fc, 5)
        assert fc.calls == 1 and all(a == first[0] for a in again)
        assert api.answer_counts == {"cache": 5, "shared": 0, "forecaster": 1}

    asyncio.run(scenario())
    api.close(wait=False)


def test_a_new_model_id_or_an_expired_answer_asks_the_forecaster_again() -> None:
    api = service(60.0)
    fc = CountingForecaster()

    async def scenario() -> None:
        await latest(api, fc)
        fc.model_key = "btc_usdt@4"  # the router switched to a promoted champion
        promoted = await latest(api, fc)
        assert fc.calls == 2 and promoted[0].model_version == 4
        api._answers["btc_usdt"] = (fc.model_key, 0.0, promoted[0])  # expired
        await latest(api, fc)
        assert fc.calls == 3

    asyncio.run(scenario())
    api.close(wait=False)


@pytest.mark.parametrize(
    ("ttl_s", "forecaster"),
    [
        (0.0, CountingForecaster()),  # cache off
        (60.0, CountingForecaster(ok=False)),  # a failure is never kept
        (60.0, CountingForecaster(model_key=None)),  # a dedicated deployment: no model id to key on
    ],
    ids=["ttl-0", "failure", "dedicated"],
)
def test_what_is_never_cached(ttl_s: float, forecaster: CountingForecaster) -> None:
    api = service(ttl_s)

    async def scenario() -> None:
        for _ in range(3):
            (answer,) = await latest(api, forecaster)
            assert isinstance(answer, ForecastOut if forecaster.ok else ModelNotLoadedError)

    asyncio.run(scenario())
    assert forecaster.calls == 3 and api.answer_counts == {"cache": 0, "shared": 0, "forecaster": 3}
    api.close(wait=False)


def test_concurrent_gets_share_one_call_in_flight() -> None:
    api = service(0.0)
    fc = CountingForecaster(delay_s=0.05)
    answers = asyncio.run(latest(api, fc, 8))
    assert fc.calls == 1 and len({a.forecast for a in answers}) == 1
    assert api.answer_counts == {"cache": 0, "shared": 7, "forecaster": 1}
    api.close(wait=False)


def test_an_answer_never_outlives_its_market_hour() -> None:
    api = service(3600.0, speed=3600.0)  # a market hour per wall second, half of it gone
    fc = CountingForecaster()

    async def scenario() -> None:
        await latest(api, fc)
        assert api._answers["btc_usdt"][1] - time.monotonic() <= 1.0  # the hour's end, long before the TTL
        await asyncio.sleep(api.clock.until_next_hour() + 0.05)
        await latest(api, fc)
        assert fc.calls == 2

    asyncio.run(scenario())
    api.close(wait=False)
