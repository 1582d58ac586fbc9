"""The online scale at serving (mur/serving/calibration.py): a forecast body's ranges widened or narrowed in log
price around an unchanged median, the answer's ``calibration`` saying which scale each horizon got (1 where no
state exists yet, or with the setting off), the scales read at most once per cache period, and a state that
cannot be read answered with the graph's ranges, said so."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from mur.evaluation.online_conformal import OnlineState, generation_for
from mur.serving.calibration import OnlineScales, ServedCalibration, apply_scales, graph_calibration

pytestmark = pytest.mark.fast

LEVELS = (0.05, 0.25, 0.5, 0.75, 0.95)
GEN = generation_for(LEVELS)


def body() -> dict[str, Any]:
    """A Forecaster's body: the graph's ranges at 1, 4 and 24 h and its ``calibration`` stub."""
    bands = [
        {"hours": 1, "target_time": "2025-06-01T13:00:00Z", "median": 100.0, "lower": 98.0, "upper": 103.0},
        {"hours": 4, "target_time": "2025-06-01T16:00:00Z", "median": 101.0, "lower": 95.0, "upper": 106.0},
        {"hours": 24, "target_time": "2025-06-02T12:00:00Z", "median": 102.0, "lower": 85.0, "upper": 120.0},
    ]
    return {
        "pair": "btc_usdt",
        "forecast": 100.0,
        "last_close": 99.5,
        "horizons": [b | {"level": 0.9} for b in bands],
        "calibration": graph_calibration([1, 4, 24], LEVELS),
    }


def log_half_widths(band: dict[str, Any]) -> tuple[float, float]:
    m = math.log(band["median"])
    return m - math.log(band["lower"]), math.log(band["upper"]) - m


def test_the_forecaster_names_the_generation_and_the_graph_range() -> None:
    stub = ServedCalibration.model_validate(body()["calibration"])
    assert stub.method == "graph" and stub.generation == GEN and stub.updated_at is None
    assert [(h.hours, h.scale, h.resolved) for h in stub.horizons] == [(1, 1.0, 0), (4, 1.0, 0), (24, 1.0, 0)]
    assert graph_calibration([1], LEVELS, "other-recipe")["generation"] != GEN  # a new recipe: a new tracker


def test_scales_multiply_the_log_distances_from_the_median() -> None:
    original = body()
    scaled = apply_scales(original, "online", {1: (1.5, 40), 24: (0.8, 12)}, "2025-06-01T12:05:00Z")
    assert original == body()  # the input (the API's cached answer) is never changed
    for before, after, scale in zip(original["horizons"], scaled["horizons"], (1.5, 1.0, 0.8), strict=True):
        assert after["median"] == before["median"] and after["target_time"] == before["target_time"]
        for b, a in zip(log_half_widths(before), log_half_widths(after), strict=True):
            assert a == pytest.approx(scale * b, rel=1e-12)
    assert scaled["forecast"] == original["forecast"]
    got = ServedCalibration.model_validate(scaled["calibration"])
    assert got.method == "online" and got.generation == GEN and got.updated_at == "2025-06-01T12:05:00Z"
    assert [(h.hours, h.scale, h.resolved) for h in got.horizons] == [
        (1, 1.5, 40),
        (4, 1.0, 0),
        (24, 0.8, 12),
    ]
    assert "no state yet" in got.note  # 4 h has no tracker: scale 1, and the answer says so


def test_off_leaves_the_graph_range_and_says_so() -> None:
    off = apply_scales(body(), "off", {1: (2.0, 5)})
    assert off["horizons"] == body()["horizons"]
    got = ServedCalibration.model_validate(off["calibration"])
    assert got.method == "off" and all(h.scale == 1.0 for h in got.horizons)
    assert "MUR_ONLINE_CALIBRATION=false" in got.note


@dataclass
class Tracker:
    """What :func:`mur.db.calibration.load_calibration` returns per horizon (the fields serving reads)."""

    scale: float
    state: OnlineState
    updated_at: datetime | None


def test_the_scales_are_read_once_per_cache_period_and_a_failed_read_serves_scale_one() -> None:
    reads: list[tuple[str, str]] = []
    failing = False

    async def read(pair: str, generation: str) -> dict[int, Tracker]:
        reads.append((pair, generation))
        if failing:
            raise TimeoutError("no answer from PostgreSQL")
        stamp = datetime(2025, 6, 1, 12, 5, tzinfo=UTC)
        return {24: Tracker(1.25, OnlineState(log_scale=math.log(1.25), resolved=30), stamp)}

    async def run() -> None:
        nonlocal failing
        cached = OnlineScales(enabled=True, ttl_s=3600, read=read)
        first, second = await cached.calibrate(body()), await cached.calibrate(body())
        assert first == second and reads == [("btc_usdt", GEN)]  # one read for both requests
        cal = first["calibration"]
        assert cal["method"] == "online" and cal["updated_at"] == "2025-06-01T12:05:00Z"
        assert [h["scale"] for h in cal["horizons"]] == [1.0, 1.0, 1.25]

        uncached = OnlineScales(enabled=True, ttl_s=0, read=read)
        failing = True
        fallback = await uncached.calibrate(body())
        assert (
            fallback["calibration"]["method"] == "unavailable" and fallback["horizons"] == body()["horizons"]
        )
        assert len(reads) == 2

        off = await OnlineScales(enabled=False, ttl_s=60, read=read).calibrate(body())
        assert off["calibration"]["method"] == "off" and len(reads) == 2  # off: no read at all
        point = {k: v for k, v in body().items() if k not in ("horizons", "calibration")}
        assert await cached.calibrate(point) == point  # a point-only model has no range to scale

    asyncio.run(run())
