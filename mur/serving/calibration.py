"""Online calibration at serving: each horizon's range widened or narrowed by the pair's online conformal scale
(:mod:`mur.evaluation.online_conformal`; the state in PostgreSQL, :mod:`mur.db.calibration`), and the
``calibration`` object of a forecast answer that says which scale was applied.

The Forecaster answers the graph's own ranges with a ``calibration`` of method ``graph`` naming the tracker's
generation (:func:`graph_calibration`); the API applies the scales (:meth:`OnlineScales.calibrate`, read from
PostgreSQL at most every ``MUR_ONLINE_CALIBRATION_CACHE_S``) before it answers and records the forecast, so the
track record keeps the range as served with the scale it carried (``forecasts.calibration_scale``): the
monitoring task's update judges each outcome against the range that was served (delayed feedback,
docs/forecasts.md).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from mur.evaluation.online_conformal import generation_for, scale_band
from mur.serving.contract import HorizonScale, Method, ServedCalibration

log = logging.getLogger(__name__)
__all__ = ["HorizonScale", "Method", "OnlineScales", "ServedCalibration", "apply_scales", "graph_calibration"]
NOTES: dict[str, str] = {
    "online": "each range's distances from the median (log price) times the horizon's online scale",
    "off": "online calibration is off (MUR_ONLINE_CALIBRATION=false): the graph's own ranges",
    "graph": "the graph's own ranges (no online scale applied)",
    "unavailable": "the online scales could not be read: the graph's own ranges (scale 1)",
}
NO_STATE = "; scale 1 (no state yet) where resolved is 0"


def graph_calibration(
    horizons: Sequence[int], levels: Sequence[float], recipe: str | None = None
) -> dict[str, Any]:
    """The Forecaster's ``calibration``: the graph's own ranges (scale 1) and the generation whose tracker
    corrects them."""
    return ServedCalibration(
        method="graph",
        generation=generation_for(levels, recipe),
        horizons=[HorizonScale(hours=int(h)) for h in horizons],
        note=NOTES["graph"],
    ).model_dump()


def apply_scales(
    body: Mapping[str, Any],
    method: Method,
    scales: Mapping[int, tuple[float, int]] | None = None,
    updated_at: str | None = None,
) -> dict[str, Any]:
    """A copy of the forecast ``body`` whose horizons' ranges carry ``scales`` (``{hours: (scale, resolved)}``,
    scale 1 for a horizon without one) and whose ``calibration`` says so. The median (and ``forecast``) stay."""
    out = dict(body)
    scales = scales or {}
    bands, applied = [], []
    for band in out.get("horizons") or []:
        hours = int(band["hours"])
        scale, resolved = scales.get(hours, (1.0, 0)) if method == "online" else (1.0, 0)
        if not (math.isfinite(scale) and scale > 0):
            scale, resolved = 1.0, 0
        new = dict(band)
        if scale != 1.0:
            new["lower"], new["upper"] = scale_band(band["median"], band["lower"], band["upper"], scale)
        bands.append(new)
        applied.append(HorizonScale(hours=hours, scale=scale, resolved=resolved))
    out["horizons"] = bands
    previous = out.get("calibration") or {}
    note = NOTES[method] + (NO_STATE if method == "online" and any(a.resolved == 0 for a in applied) else "")
    out["calibration"] = ServedCalibration(
        method=method,
        generation=previous.get("generation"),
        updated_at=updated_at,
        horizons=applied,
        note=note,
    ).model_dump()
    return out


Reader = Callable[[str, str], Awaitable[Mapping[int, Any]]]
"""``read(pair, generation)`` -> the stored trackers by horizon (:func:`mur.db.calibration.load_calibration`)."""


class OnlineScales:
    """The API's view of the online scales: applies them to forecast bodies, reading each (pair, generation)
    from PostgreSQL at most every ``ttl_s`` wall seconds (the scales change once per market hour, when the
    monitoring task steps them), so a request costs no database round trip of its own."""

    def __init__(self, *, enabled: bool, ttl_s: float, read: Reader) -> None:
        self.enabled = enabled
        self.ttl_s = max(float(ttl_s), 0.0)
        self._read = read
        self._cache: dict[tuple[str, str], tuple[float, dict[int, tuple[float, int]], str | None]] = {}

    async def calibrate(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``body`` with the online scales applied (or the reason none is: off, no ranges, unreadable)."""
        calibration = body.get("calibration") or {}
        generation = calibration.get("generation")
        if not body.get("horizons") or not generation:  # a point-only model, or a body without a generation
            return dict(body)
        if not self.enabled:
            return apply_scales(body, "off")
        pair = str(body["pair"])
        try:
            scales, updated_at = await self._scales(pair, str(generation))
        except Exception as exc:  # a forecast is still worth answering with the graph's range
            log.warning("online calibration of %s unavailable: %s", pair, exc)
            return apply_scales(body, "unavailable")
        return apply_scales(body, "online", scales, updated_at)

    async def _scales(self, pair: str, generation: str) -> tuple[dict[int, tuple[float, int]], str | None]:
        key = (pair, generation)
        cached = self._cache.get(key)
        now = time.monotonic()
        if cached is not None and now < cached[0]:
            return cached[1], cached[2]
        records = await self._read(pair, generation)
        scales = {int(h): (float(r.scale), int(r.state.resolved)) for h, r in records.items()}
        stamps = [r.updated_at for r in records.values() if r.updated_at is not None]
        updated_at = max(stamps).isoformat().replace("+00:00", "Z") if stamps else None
        self._cache[key] = (now + self.ttl_s, scales, updated_at)
        return scales, updated_at
