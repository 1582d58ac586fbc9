"""The Forecast page says how the served ranges were calibrated online: the dashboard client reads the API's
``calibration`` into the same model (mur.serving.calibration.ServedCalibration; a malformed one is dropped,
not an error), and the page turns it into one sentence."""

from __future__ import annotations

from typing import Any

from dash_app.pages.forecast import calibration_text
from mur.serving.calibration import apply_scales, graph_calibration
from mur.serving.client import _calibration

LEVELS = (0.05, 0.5, 0.95)


def served(method: str, scales: dict[int, tuple[float, int]] | None = None) -> dict[str, Any]:
    """The ``calibration`` of an API answer with ranges at 1, 4 and 24 h."""
    bands = [{"hours": h, "median": 100.0, "lower": 95.0, "upper": 105.0} for h in (1, 4, 24)]
    body = {"horizons": bands, "calibration": graph_calibration((1, 4, 24), LEVELS)}
    return apply_scales(body, method, scales)["calibration"]  # type: ignore[arg-type]


def test_the_client_reads_the_api_calibration_and_the_page_says_it() -> None:
    online = _calibration(served("online", {1: (0.97, 300), 24: (1.184, 280)}))
    assert online is not None and online.method == "online"
    assert calibration_text(online) == (
        "Online calibration (from the resolved forecasts) scales the ranges around the median: "
        "×0.97 at 1 h, ×1.00 at 4 h, ×1.18 at 24 h."
    )
    assert "no resolved forecast yet" in calibration_text(_calibration(served("online")))
    assert "MUR_ONLINE_CALIBRATION=false" in calibration_text(_calibration(served("off")))
    assert "could not be read" in calibration_text(_calibration(served("unavailable")))
    assert _calibration({"method": "something else"}) is None and _calibration(None) is None
    assert calibration_text(None) == "The model's own ranges (no online calibration reported)."
