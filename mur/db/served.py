"""What the API served at a past market time, read back from the track record (``forecasts``): the answer of
``GET /v1/forecast/{pair}?as_of=T`` and ``mur forecast PAIR --as-of T``.

At market time ``T`` the API answers from the latest candle closed at ``T`` (open time ``floor_hour(T) - 1 h``;
:mod:`mur.clock`), so ``as_of=T`` names that candle and its every horizon as stored when served. One served
answer is one model version's rows for one candle (a horizon's target is the candle's open + its hours). Two
versions served for the candle (the champion moved during that hour): the one served last at or before ``T``,
else the first served after it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from psycopg import sql
from psycopg.rows import class_row

from mur.clock import as_utc, floor_hour
from mur.db.forecasts import Forecast
from mur.db.pool import Database, columns
from mur.pairs import normalize_pair


def served_candle(at: datetime) -> datetime:
    """The open time of the latest candle closed at market time ``at``: what the API forecast from then."""
    return floor_hour(at) - timedelta(hours=1)


def served_forecast(db: Database, *, pair: str, at: datetime) -> list[Forecast]:
    """The rows (one per horizon, shortest first) of the forecast served for ``pair`` at market time ``at``;
    empty when no forecast was served from that candle."""
    at = as_utc(at)
    with db.cursor(class_row(Forecast)) as cur:
        rows: list[Forecast] = cur.execute(
            sql.SQL("""
            SELECT {} FROM forecasts
            WHERE pair = %(pair)s AND target_time > %(candle)s
              AND target_time = %(candle)s + horizon_hours * interval '1 hour'
            ORDER BY made_at > %(at)s, abs(extract(epoch FROM made_at - %(at)s)), horizon_hours
            """).format(columns(Forecast)),
            {"pair": normalize_pair(pair), "candle": served_candle(at), "at": at},
        ).fetchall()
    chosen = [r for r in rows if r.model_version == rows[0].model_version]
    return sorted(chosen, key=lambda r: r.horizon_hours)
