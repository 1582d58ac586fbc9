"""What a forecast answer adds: its times said plainly (market time, :mod:`mur.clock`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any


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
