"""The track record as the API returns it (``GET /v1/track-record/{pair}``): resolved forecasts, newest
first, and a summary of how they fared against persistence and how often their range held the close."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from mur.db.forecasts import Forecast
from mur.monitoring.compute import pending_count, window_stats
from mur.pairs import normalize_pair
from mur.timeutil import iso

if TYPE_CHECKING:
    from mur.db.pool import Database

MAX_LIMIT = 1000


def _resolved(
    db: Database, pair: str, market_hour: datetime, limit: int, horizon: int | None
) -> list[Forecast]:
    from mur.db.forecasts import _forecast

    with db.cursor() as cur:
        cur.execute(
            """
            SELECT id, pair, model_version, made_at, target_time, predicted, last_close, actual,
                   horizon_hours, lower, upper, level
            FROM forecasts
            WHERE pair = %(pair)s AND actual IS NOT NULL AND target_time < %(hour)s
              AND (%(horizon)s::int IS NULL OR horizon_hours = %(horizon)s)
            ORDER BY target_time DESC, horizon_hours, made_at DESC
            LIMIT %(limit)s
            """,
            {"pair": pair, "hour": market_hour, "horizon": horizon, "limit": limit},
        )
        return [_forecast(row) for row in cur.fetchall()]


def track_record(
    db: Database, pair: str, *, market_hour: datetime, limit: int = 100, horizon: int | None = None
) -> dict[str, Any]:
    """The latest ``limit`` resolved forecasts of ``pair`` (targets closed before ``market_hour``; one
    ``horizon`` or all), a summary overall and per horizon, and how many still wait for their candle."""
    pair = normalize_pair(pair)
    rows = _resolved(db, pair, market_hour, max(1, min(int(limit), MAX_LIMIT)), horizon)
    by_horizon = {
        str(h): window_stats([f for f in rows if f.horizon_hours == h])
        for h in sorted({f.horizon_hours for f in rows})
    }
    return {
        "pair": pair,
        "as_of": iso(market_hour),
        "pending": pending_count(db, pair),
        "resolved": [
            {
                "made_at": iso(f.made_at),
                "target_time": iso(f.target_time),
                "horizon_hours": f.horizon_hours,
                "model_version": f.model_version,
                "predicted": f.predicted,
                "actual": f.actual,
                "last_close": f.last_close,
                "error": f.predicted - f.actual if f.actual is not None else None,
                "persistence_error": f.last_close - f.actual if f.actual is not None else None,
                "lower": f.lower,
                "upper": f.upper,
                "level": f.level,
                "inside": f.inside,
            }
            for f in rows
        ],
        "summary": window_stats(rows) | {"by_horizon": by_horizon},
    }
