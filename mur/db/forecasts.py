"""The forecast track record: what each model version predicted for each hour, and what happened."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mur.db.pool import Database, fetch_one
from mur.errors import InvalidInputError
from mur.pairs import normalize_pair


@dataclass(frozen=True)
class Forecast:
    """One forecast of ``pair``'s close at ``target_time`` by ``model_version`` (``actual`` once known)."""

    id: int
    pair: str
    model_version: str
    made_at: datetime
    target_time: datetime
    predicted: float
    last_close: float
    actual: float | None = None


def _forecast(row: dict[str, Any]) -> Forecast:
    return Forecast(**{name: row[name] for name in Forecast.__dataclass_fields__})


def _utc(ts: Any) -> datetime:
    """A datetime from a datetime or pandas Timestamp; naive values are taken as UTC."""
    if hasattr(ts, "to_pydatetime"):
        ts = ts.to_pydatetime()
    if not isinstance(ts, datetime):
        raise InvalidInputError(f"expected a datetime, got {type(ts).__name__}")
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def record_forecast(
    db: Database,
    *,
    pair: str,
    model_version: str,
    target_time: datetime,
    predicted: float,
    last_close: float,
    made_at: datetime | None = None,
) -> Forecast:
    """Store (or refresh) a forecast; keyed on (pair, model_version, target_time), so retries are safe."""
    if not (math.isfinite(predicted) and math.isfinite(last_close)):
        raise InvalidInputError("predicted and last_close must be finite numbers")
    with db.cursor() as cur:
        cur.execute(
            """
            INSERT INTO forecasts (pair, model_version, made_at, target_time, predicted, last_close)
            VALUES (%(pair)s, %(model_version)s, COALESCE(%(made_at)s, now()), %(target_time)s,
                    %(predicted)s, %(last_close)s)
            ON CONFLICT ON CONSTRAINT forecasts_pair_model_target_key DO UPDATE
                SET predicted = EXCLUDED.predicted, last_close = EXCLUDED.last_close, made_at = EXCLUDED.made_at
            RETURNING id, pair, model_version, made_at, target_time, predicted, last_close, actual
            """,
            {
                "pair": normalize_pair(pair),
                "model_version": str(model_version),
                "made_at": _utc(made_at) if made_at is not None else None,
                "target_time": _utc(target_time),
                "predicted": float(predicted),
                "last_close": float(last_close),
            },
        )
        return _forecast(fetch_one(cur))


def fill_actuals(
    db: Database, *, pair: str, candles: Iterable[tuple[datetime, float]], overwrite: bool = False
) -> int:
    """Set ``actual`` from ``(time, close)`` pairs (e.g. ``zip(df.index, df["close"])``) for forecasts whose
    ``target_time`` matches; returns how many forecasts were updated. Known actuals are kept unless
    ``overwrite``; non-finite closes are skipped.
    """
    times: list[datetime] = []
    closes: list[float] = []
    for ts, close in candles:
        value = float(close)
        if math.isfinite(value):
            times.append(_utc(ts))
            closes.append(value)
    if not times:
        return 0
    with db.cursor() as cur:
        cur.execute(
            """
            UPDATE forecasts f SET actual = c.close
            FROM unnest(%(times)s::timestamptz[], %(closes)s::float8[]) AS c(target_time, close)
            WHERE f.pair = %(pair)s AND f.target_time = c.target_time AND (f.actual IS NULL OR %(overwrite)s)
            """,
            {"times": times, "closes": closes, "pair": normalize_pair(pair), "overwrite": overwrite},
        )
        return cur.rowcount


def set_actual(db: Database, *, pair: str, target_time: datetime, actual: float) -> int:
    """Set the observed close for every forecast of ``pair`` at ``target_time``; returns rows updated."""
    return fill_actuals(db, pair=pair, candles=[(target_time, actual)], overwrite=True)


def list_forecasts(
    db: Database, *, pair: str, limit: int = 100, model_version: str | None = None
) -> list[Forecast]:
    """The latest ``limit`` forecasts of ``pair`` (optionally one model version), newest target first."""
    with db.cursor() as cur:
        cur.execute(
            """
            SELECT id, pair, model_version, made_at, target_time, predicted, last_close, actual
            FROM forecasts
            WHERE pair = %(pair)s AND (%(model_version)s::text IS NULL OR model_version = %(model_version)s)
            ORDER BY target_time DESC, made_at DESC
            LIMIT %(limit)s
            """,
            {"pair": normalize_pair(pair), "model_version": model_version, "limit": max(int(limit), 0)},
        )
        return [_forecast(row) for row in cur.fetchall()]
