"""Online calibration on the deployed Serve app (issue 24): ``/v1/forecast`` carries ``calibration`` (method,
generation of the champion's ranges, a scale per horizon), and a tracker state seeded in PostgreSQL for that
generation widens the served 24 h range around the same median within the scale cache's period; removing it
brings the graph's range back (the other Serve tests compare the served ranges with onnxruntime's)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from serve_helpers import ServeStack, wait_until

from mur.db import Database
from mur.db import calibration as cal
from mur.evaluation.online_conformal import OnlineState

pytestmark = [pytest.mark.services, pytest.mark.serve]


def log_width(band: dict[str, Any]) -> float:
    return math.log(band["upper"]) - math.log(band["lower"])


def test_the_served_range_carries_the_seeded_scale(serve_stack: ServeStack) -> None:
    stack = serve_stack
    _, token = stack.make_user()
    with stack.client(token) as client, Database(stack.settings, maxconn=1) as db:

        def forecast(scale_24: float) -> dict[str, Any] | None:
            body = client.get(f"/v1/forecast/{stack.pair}").json()
            return body if body["calibration"]["horizons"][-1]["scale"] == pytest.approx(scale_24) else None

        first = wait_until(lambda: forecast(1.0), 120, "a forecast with the graph's ranges")
        calibration = first["calibration"]
        generation = calibration["generation"]
        assert calibration["method"] == "online" and "levels=" in generation and "offline=" in generation
        assert [h["hours"] for h in calibration["horizons"]] == [h["hours"] for h in first["horizons"]]

        state = OnlineState(log_scale=math.log(1.5), resolved=7)
        with db.cursor() as cur:  # the tracker stored as the monitoring step stores it
            cal._upsert(cur, cal.CalibrationRecord(stack.pair, 24, generation, 0.9, state))
        try:
            after = wait_until(lambda: forecast(1.5), 30, "the seeded 24 h scale served")
            assert (
                after["calibration"]["horizons"][-1]["resolved"] == 7 and after["calibration"]["updated_at"]
            )
            assert after["candle_time"] == first["candle_time"]  # the frozen market clock: the same forecast
            old, new = first["horizons"][-1], after["horizons"][-1]
            assert new["median"] == pytest.approx(old["median"], rel=1e-12)
            assert log_width(new) == pytest.approx(1.5 * log_width(old), rel=1e-9)
            assert after["horizons"][:-1] == first["horizons"][:-1]
        finally:
            with db.cursor() as cur:
                cur.execute(
                    "DELETE FROM online_calibration WHERE pair = %s AND generation = %s",
                    (stack.pair, generation),
                )
            wait_until(lambda: forecast(1.0), 30, "the graph's range back")
