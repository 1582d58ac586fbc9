"""What a forecast answer must be, and what it adds: finite throughout (an answer JSON cannot carry is never
charged), and its times said plainly (market time, :mod:`mur.clock`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from mur.errors import ModelError


def require_finite(body: Mapping[str, Any]) -> None:
    """A forecast body must be finite throughout (:func:`mur.model.inference.forecast_body` checks it too;
    this guards the charge against any forecaster that does not)."""
    for key in ("forecast", "last_close", "change_pct"):
        value = body.get(key)
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise ModelError(f"the model gave no usable forecast ({key}={value!r})")
    for band in body.get("horizons") or []:
        for key in ("median", "lower", "upper"):
            value = band.get(key)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ModelError(f"the model gave no usable forecast range ({key}={value!r})")


def with_times(body: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The forecast body with its times said plainly (fields of :class:`mur.serving.contract.ForecastOut`;
    market time, :mod:`mur.clock`): ``as_of`` (market now), ``close_time`` (when the forecast candle closes:
    ``target_time`` + 1 h) and, when the forecaster says which candles the model was trained on
    (``model_trained_until``), the model's age ``model_age_hours`` (market hours from that last training
    candle to now)."""
    from mur.timeutil import HOUR, iso, parse_time

    out = dict(body)
    out["as_of"] = iso(now)
    target = parse_time(out.get("target_time"))
    if target is not None:
        out["close_time"] = iso(target + HOUR)
    bands = []
    for band in out.get("horizons") or []:
        band_target = parse_time(band.get("target_time")) if isinstance(band, Mapping) else None
        bands.append(band if band_target is None else {**band, "close_time": iso(band_target + HOUR)})
    if bands:
        out["horizons"] = bands
    trained = parse_time(out.get("model_trained_until"))
    out["model_age_hours"] = None if trained is None else round(max(0.0, (now - trained) / HOUR), 2)
    return out
