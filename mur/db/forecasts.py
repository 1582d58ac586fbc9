"""The forecast track record: what each model version predicted for each hour and horizon (the median and
its range), and what happened."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import sql
from psycopg.rows import class_row

from mur.db.pool import Database, columns, fetch_one
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
    horizon_hours: int = 1
    lower: float | None = None
    upper: float | None = None
    level: float | None = None
    """Nominal coverage of ``[lower, upper]`` (None: a point forecast without a range)."""

    @property
    def inside(self) -> bool | None:
        """Whether the actual close fell inside the range (None until resolved, or without a range)."""
        if self.actual is None or self.lower is None or self.upper is None:
            return None
        return self.lower <= self.actual <= self.upper


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
    horizon_hours: int = 1,
    lower: float | None = None,
    upper: float | None = None,
    level: float | None = None,
    calibration_scale: float | None = None,
    calibration_generation: str | None = None,
) -> Forecast:
    """Store (or refresh) a forecast; keyed on (pair, model_version, target_time, horizon_hours), so
    retries are safe. ``lower``/``upper``/``level`` are its range (all three or none). A refresh keeps the
    first ``made_at``: the track record scores the first forecast served for a target
    (:func:`scored_forecasts`). ``calibration_scale``/``_generation``: the online scale the range was served
    with (None: the graph's own range; :mod:`mur.db.calibration`), stored with the range it goes with."""
    band = (lower, upper, level)
    if any(v is None for v in band) and any(v is not None for v in band):
        raise InvalidInputError("lower, upper and level go together")
    values = [predicted, last_close, *(v for v in band if v is not None)]
    if not all(math.isfinite(float(v)) for v in values):
        raise InvalidInputError("predicted, last_close and the range must be finite numbers")
    if lower is not None and upper is not None and lower > upper:
        raise InvalidInputError(f"the range is upside down: lower {lower} > upper {upper}")
    if int(horizon_hours) < 1:
        raise InvalidInputError(f"horizon_hours must be at least 1, got {horizon_hours}")
    with db.cursor(class_row(Forecast)) as cur:
        cur.execute(
            sql.SQL("""
            INSERT INTO forecasts (pair, model_version, made_at, target_time, predicted, last_close,
                                   horizon_hours, lower, upper, level, calibration_scale, calibration_generation)
            VALUES (%(pair)s, %(model_version)s, COALESCE(%(made_at)s, now()), %(target_time)s,
                    %(predicted)s, %(last_close)s, %(horizon_hours)s, %(lower)s, %(upper)s, %(level)s,
                    %(scale)s, %(generation)s)
            ON CONFLICT ON CONSTRAINT forecasts_pair_model_target_key DO UPDATE
                SET predicted = EXCLUDED.predicted, last_close = EXCLUDED.last_close,
                    made_at = LEAST(forecasts.made_at, EXCLUDED.made_at),
                    lower = EXCLUDED.lower, upper = EXCLUDED.upper, level = EXCLUDED.level,
                    calibration_scale = EXCLUDED.calibration_scale,
                    calibration_generation = EXCLUDED.calibration_generation
            RETURNING {}
            """).format(columns(Forecast)),
            {
                "pair": normalize_pair(pair),
                "model_version": str(model_version),
                "made_at": _utc(made_at) if made_at is not None else None,
                "target_time": _utc(target_time),
                "predicted": float(predicted),
                "last_close": float(last_close),
                "horizon_hours": int(horizon_hours),
                "lower": None if lower is None else float(lower),
                "upper": None if upper is None else float(upper),
                "level": None if level is None else float(level),
                "scale": None if calibration_scale is None else float(calibration_scale),
                "generation": calibration_generation,
            },
        )
        return fetch_one(cur)


def record_forecast_body(
    db: Database, body: dict[str, Any], *, model_version: str | None = None, made_at: datetime | None = None
) -> list[Forecast]:
    """Store every horizon of a forecast body (``forecast``/``target_time`` and its ``horizons``); a body
    without horizons stores the 1 h point forecast alone. ``made_at``: market now (:mod:`mur.clock`; default:
    the database's clock). A body whose ``calibration`` says the online scale was applied
    (:mod:`mur.serving.calibration`) stores each range's scale and generation with it."""
    from mur.timeutil import parse_time

    version = str(model_version if model_version is not None else body["model_version"])
    common: dict[str, Any] = {
        "pair": body["pair"],
        "model_version": version,
        "last_close": float(body["last_close"]),
        "made_at": made_at,
    }
    bands = body.get("horizons") or []
    if not bands:
        target = _utc(parse_time(body["target_time"]))
        return [record_forecast(db, target_time=target, predicted=float(body["forecast"]), **common)]
    generation, scales = _served_scales(body)
    return [
        record_forecast(
            db,
            target_time=_utc(parse_time(band["target_time"])),
            predicted=float(band["median"]),
            horizon_hours=int(band["hours"]),
            lower=float(band["lower"]),
            upper=float(band["upper"]),
            level=float(band["level"]),
            calibration_scale=scales.get(int(band["hours"])),
            calibration_generation=generation,
            **common,
        )
        for band in bands
    ]


def _served_scales(body: dict[str, Any]) -> tuple[str | None, dict[int, float]]:
    """The generation and per-horizon scale a body's ranges were served with (``(None, {})`` unless its
    ``calibration`` method is ``online``: the graph's ranges, scale 1)."""
    calibration = body.get("calibration") or {}
    if calibration.get("method") != "online" or not calibration.get("generation"):
        return None, {}
    return str(calibration["generation"]), {
        int(h["hours"]): float(h["scale"]) for h in calibration.get("horizons") or []
    }


def fill_actuals(db: Database, *, pair: str, candles: Iterable[tuple[datetime, float]]) -> int:
    """Set ``actual`` from ``(time, close)`` pairs (e.g. ``zip(df.index, df["close"])``) for forecasts whose
    ``target_time`` matches; returns how many forecasts were updated. Known actuals are kept; non-finite
    closes are skipped.
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
            WHERE f.pair = %(pair)s AND f.target_time = c.target_time AND f.actual IS NULL
            """,
            {"times": times, "closes": closes, "pair": normalize_pair(pair)},
        )
        return cur.rowcount


def list_forecasts(
    db: Database,
    *,
    pair: str,
    limit: int = 100,
    model_version: str | None = None,
    horizon_hours: int | None = None,
) -> list[Forecast]:
    """The latest ``limit`` forecasts of ``pair`` (optionally one model version, one horizon), newest
    target first."""
    with db.cursor(class_row(Forecast)) as cur:
        return cur.execute(
            sql.SQL("""
            SELECT {} FROM forecasts
            WHERE pair = %(pair)s AND (%(model_version)s::text IS NULL OR model_version = %(model_version)s)
              AND (%(horizon)s::int IS NULL OR horizon_hours = %(horizon)s)
            ORDER BY target_time DESC, made_at DESC
            LIMIT %(limit)s
            """).format(columns(Forecast)),
            {
                "pair": normalize_pair(pair),
                "model_version": model_version,
                "horizon": horizon_hours,
                "limit": max(int(limit), 0),
            },
        ).fetchall()


# --- the one scoring definition -----------------------------------------------------------------------------
SCORED_VIEW_DOC = (
    "the first forecast served for a (pair, target time, horizon): earliest made_at, then lowest id, "
    "with its model version (sql/0007_scored_forecasts.sql)"
)


@dataclass(frozen=True)
class ScoredCounts:
    """How many targets (pair, target time, horizon) the track record holds, by state at a market hour."""

    resolved: int
    """Target candle closed before the market hour and its close known: scored."""
    waiting: int
    """Target candle not closed at the market hour: waiting for it."""
    overdue: int
    """Target candle closed, but its close is not known yet (a gap in the data, or not resolved yet)."""

    @property
    def pending(self) -> int:
        """Not resolved yet: waiting for the candle, or overdue."""
        return self.waiting + self.overdue

    @property
    def total(self) -> int:
        return self.resolved + self.pending


# One pair's targets in [since, until) (None: unbounded), one horizon or all: the parameters of _range_params.
_IN_RANGE = sql.SQL("""pair = %(pair)s
              AND (%(horizon)s::int IS NULL OR horizon_hours = %(horizon)s)
              AND (%(since)s::timestamptz IS NULL OR target_time >= %(since)s)
              AND (%(until)s::timestamptz IS NULL OR target_time < %(until)s)""")


def _range_params(
    pair: str, horizon_hours: int | None, since: datetime | None, until: datetime | None
) -> dict[str, Any]:
    return {
        "pair": normalize_pair(pair),
        "horizon": None if horizon_hours is None else int(horizon_hours),
        "since": None if since is None else _utc(since),
        "until": None if until is None else _utc(until),
    }


def scored_forecasts(
    db: Database,
    *,
    pair: str,
    market_hour: datetime | None = None,
    resolved: bool | None = None,
    horizon_hours: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
) -> list[Forecast]:
    """The forecasts the track record scores: one per (target time, horizon), :data:`SCORED_VIEW_DOC`.

    ``since``/``until``: targets in ``[since, until)`` (market time); ``resolved=True``: only those scored at
    ``market_hour`` (candle closed before it and close known), ``False``: only the others (needs
    ``market_hour``), None: all. Newest target first (then horizon), at most ``limit``."""
    if resolved is not None and market_hour is None:
        raise InvalidInputError("resolved=True/False needs the market hour")
    params = _range_params(pair, horizon_hours, since, until) | {
        "hour": None if market_hour is None else _utc(market_hour),
        "resolved": resolved,
        "limit": None if limit is None else max(int(limit), 0),
    }
    with db.cursor(class_row(Forecast)) as cur:
        return cur.execute(
            sql.SQL("""
            SELECT {} FROM scored_forecasts
            WHERE {} AND (%(resolved)s::boolean IS NULL
                          OR (actual IS NOT NULL AND target_time < %(hour)s) = %(resolved)s)
            ORDER BY target_time DESC, horizon_hours
            LIMIT %(limit)s
            """).format(columns(Forecast), _IN_RANGE),
            params,
        ).fetchall()


def scored_counts(
    db: Database,
    *,
    pair: str,
    market_hour: datetime,
    horizon_hours: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> ScoredCounts:
    """Resolved / waiting / overdue targets of ``pair`` at ``market_hour`` (one horizon or all; targets in
    ``[since, until)``), counted over :func:`scored_forecasts`' rows: every view counts the same."""
    params = _range_params(pair, horizon_hours, since, until) | {"hour": _utc(market_hour)}
    with db.cursor(class_row(ScoredCounts)) as cur:
        cur.execute(
            sql.SQL("""
            SELECT count(*) FILTER (WHERE target_time < %(hour)s AND actual IS NOT NULL) AS resolved,
                   count(*) FILTER (WHERE target_time >= %(hour)s) AS waiting,
                   count(*) FILTER (WHERE target_time < %(hour)s AND actual IS NULL) AS overdue
            FROM scored_forecasts WHERE {}
            """).format(_IN_RANGE),
            params,
        )
        return fetch_one(cur)


def record_shadow_body(db: Database, body: dict[str, Any], made_at: datetime) -> int:
    """Store a shadow version's forecast body, one row per horizon with a range; the first one computed for
    a (version, target, horizon) stays (it is the one scored). Returns how many rows were new."""
    from mur.timeutil import parse_time

    rows = [
        {
            "pair": normalize_pair(body["pair"]),
            "version": int(body["model_version"]),
            "target": _utc(parse_time(band["target_time"])),
            "hours": int(band["hours"]),
            "made_at": _utc(made_at),
            **{k: float(band[k]) for k in ("median", "lower", "upper", "level")},
            "last_close": float(body["last_close"]),
        }
        for band in body.get("horizons") or []
    ]
    with db.cursor() as cur:
        cur.executemany(
            """
            INSERT INTO shadow_forecasts (pair, model_version, target_time, horizon_hours, made_at, predicted,
                                          lower, upper, level, last_close)
            VALUES (%(pair)s, %(version)s, %(target)s, %(hours)s, %(made_at)s, %(median)s, %(lower)s,
                    %(upper)s, %(level)s, %(last_close)s)
            ON CONFLICT DO NOTHING
            """,
            rows,
        )
        return max(0, cur.rowcount)


def shadow_pairs(db: Database, *, pair: str, version: int, until: datetime) -> list[dict[str, Any]]:
    """A shadow version's resolved forecasts beside the served ones of the same targets (the first served of
    each target and horizon, :func:`scored_forecasts`), resolved before ``until``: per row ``hours``, ``y``,
    ``last_close``, the shadow's ``s_lower/s_median/s_upper`` and the served ``c_lower/c_median/c_upper``,
    ``level``."""
    with db.cursor() as cur:
        return cur.execute(
            """
            SELECT s.horizon_hours AS hours, c.actual AS y, c.last_close, s.level,
                   s.lower AS s_lower, s.predicted AS s_median, s.upper AS s_upper,
                   c.lower AS c_lower, c.predicted AS c_median, c.upper AS c_upper
            FROM shadow_forecasts s
            JOIN scored_forecasts c USING (pair, target_time, horizon_hours)
            WHERE s.pair = %(pair)s AND s.model_version = %(version)s AND c.actual IS NOT NULL
              AND c.lower IS NOT NULL AND c.level = s.level AND s.target_time < %(until)s
              AND c.model_version <> s.model_version::text
            ORDER BY s.horizon_hours, s.target_time
            """,
            {"pair": normalize_pair(pair), "version": int(version), "until": _utc(until)},
        ).fetchall()


def record_backtest(db: Database, rows: Iterable[dict[str, Any]]) -> int:
    """Store a version's backtest forecasts (sql/0013_backtest_forecasts.sql; keys ``pair``, ``version``,
    ``target``, ``hours``, ``made_at``, ``median``, ``lower``, ``upper``, ``level``, ``last_close``,
    ``actual``); a (pair, version, target, horizon) already stored is kept. Returns how many rows were new."""
    with db.cursor() as cur:
        cur.executemany(
            """
            INSERT INTO backtest_forecasts (pair, model_version, target_time, horizon_hours, made_at, predicted,
                                            lower, upper, level, last_close, actual)
            VALUES (%(pair)s, %(version)s, %(target)s, %(hours)s, %(made_at)s, %(median)s, %(lower)s,
                    %(upper)s, %(level)s, %(last_close)s, %(actual)s)
            ON CONFLICT DO NOTHING
            """,
            list(rows),
        )
        return max(0, cur.rowcount)


def backtest_forecasts(
    db: Database,
    *,
    pair: str,
    version: int | None = None,
    horizon_hours: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[Forecast]:
    """The backtest track record of ``pair``: the out-of-sample forecasts of its test span by ``version``
    (default: the newest backtested), targets in ``[since, until)``, newest target first. Only views labelled
    "backtest" read them: never the live scores, calibration, monitoring or alerts."""
    with db.cursor(class_row(Forecast)) as cur:
        return cur.execute(
            sql.SQL("""
            SELECT id, pair, model_version::text AS model_version, made_at, target_time, predicted, last_close,
                   actual, horizon_hours, lower, upper, level
            FROM backtest_forecasts
            WHERE {} AND model_version = COALESCE(
                  %(version)s::int, (SELECT max(model_version) FROM backtest_forecasts WHERE pair = %(pair)s))
            ORDER BY target_time DESC, horizon_hours
            """).format(_IN_RANGE),
            _range_params(pair, horizon_hours, since, until) | {"version": version},
        ).fetchall()
