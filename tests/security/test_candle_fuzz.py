"""A hypothesis fuzz of ``POST /v1/forecast/{pair}``: whatever the candles, the answer is a JSON body (never
plain text, never NaN), a 200 or a documented 4xx, and only a 200 uses quota."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from api_fakes import PAIR, SEQ, Api, auth
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

START = datetime(2025, 1, 1, tzinfo=UTC)

extreme_floats = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),  # 1e300, 5e-324, -0.0 ...
    st.sampled_from([1e-8, 1e8, 3.5e38, 1e-50, 1e300, 0.0, -1.0]),
    st.floats(min_value=1.0, max_value=1e5),  # plausible prices: some windows pass
)
timestamps = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20),
    st.sampled_from([10**400, 10**14, 2**63, -(2**63) - 1]),
    st.text(max_size=30),
    st.sampled_from(["2262-04-11T23:00:00Z", "+275760-09-13", "now", "1677-09-21T00:12:43Z", ""]),
    st.none(),
    st.booleans(),
)


def _hourly(start_ms: int, n: int) -> list[int]:
    return [start_ms + i * 3_600_000 for i in range(n)]


@st.composite
def candle_lists(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Mostly well-formed windows with fuzzed values, sometimes wholly random candles."""
    n = draw(st.sampled_from([SEQ, SEQ, SEQ, 0, 1, SEQ + 1]))
    hourly = draw(st.booleans())
    base = int((START + timedelta(hours=draw(st.integers(0, 10_000)))).timestamp() * 1000)
    stamps = _hourly(base, n) if hourly else [draw(timestamps) for _ in range(n)]
    candles = []
    for ts in stamps:
        price = draw(st.one_of(st.floats(min_value=1.0, max_value=1e5), extreme_floats))
        candle: dict[str, Any] = {
            "timestamp": ts,
            "open": price,
            "high": draw(st.one_of(st.just(price * 1.01), extreme_floats)),
            "low": draw(st.one_of(st.just(price * 0.99), extreme_floats)),
            "close": price,
        }
        if draw(st.booleans()):
            candle["volume"] = draw(extreme_floats)
        candles.append(candle)
    return candles


def _strict_json(text: str) -> Any:
    def no_constant(name: str) -> Any:
        raise AssertionError(f"non-standard JSON constant {name} in {text[:200]}")

    return json.loads(text, parse_constant=no_constant)


def test_fuzzed_candles_always_get_json_and_only_successes_are_charged(api: Api) -> None:
    user_id, token = api.user(quota=1_000_000)
    outcomes: dict[int, int] = {}

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(candles=candle_lists(), nan_field=st.sampled_from([None, "open", "close", "volume"]))
    def post(candles: list[dict[str, Any]], nan_field: str | None) -> None:
        body = json.dumps({"candles": candles})  # Python writes NaN/Infinity for those floats
        if nan_field and candles:
            body = body.replace(f'"{nan_field}": ', f'"{nan_field}": NaN, "x_{nan_field}": ', 1)
        before = api.usage(user_id)
        response = api.client.post(
            f"/v1/forecast/{PAIR}",
            content=body.encode(),
            headers={**auth(token), "content-type": "application/json"},
        )
        assert response.headers["content-type"].startswith("application/json"), response.text
        answer = _strict_json(response.text)
        assert response.status_code in (200, 400, 413, 422), (response.status_code, answer)
        charged = api.usage(user_id) - before
        if response.status_code == 200:
            assert charged == 1 and math.isfinite(answer["forecast"]) and answer["forecast"] > 0
        else:
            assert charged == 0 and answer["error"] and answer["message"], answer
        outcomes[response.status_code] = outcomes.get(response.status_code, 0) + 1

    post()
    assert outcomes.get(200) and outcomes.get(422), outcomes  # both sides of the validation were reached
