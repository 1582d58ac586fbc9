"""Online calibration state in PostgreSQL (``sql/0008_online_calibration.sql``): one quantile tracker per
(pair, horizon, generation) of :mod:`mur.evaluation.online_conformal`, stepped by the track record's
resolved forecasts.

* serving: :func:`load_calibration` (through :class:`mur.serving.calibration.OnlineScales`: 1 where no tracker
  exists yet); each stored forecast keeps the scale its range was served with (``record_forecast_body``);
* monitoring (every market hour): :func:`update_from_resolved` steps every tracker of a pair (the
  generations of :func:`served_generations`) with the forecasts resolved since the last call, each exactly
  once (``online_calibration_steps`` records it);
* views: :func:`calibration_summary` (scale, coverage with and without it, interval skill of the scale).

**Which forecasts step a tracker**: the scored forecast of each (pair, target time, horizon), the first one
served (earliest ``made_at``, then lowest id: the rule of ``sql/0007_scored_forecasts.sql``), with a range
and a known close before the market hour, served for this generation or before online calibration
(``calibration_generation`` NULL: the graph's range, scale 1). Steps are taken in target-time order, i.e. by
resolution time: a 24 h forecast steps its tracker 24 hours after it was served.

**A new champion carries the state over.** Champions change every few market hours (hourly retraining on a
window one hour later, :doc:`docs/monitoring.md`) with the same recipe and nearly the same validation span,
so they share the miscalibration the scale corrects (the regime after the validation span); starting each
one at 1 would reset the scale before a single 24 h outcome of it resolved. The tracker is keyed by
**generation** instead (quantile levels + offline calibration recipe,
:func:`mur.evaluation.online_conformal.generation_for`): a new recipe or other levels start fresh at 1,
and the old generation's state stays (a rollback resumes it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from mur.clock import as_utc
from mur.db.pool import Database, advisory_xact_lock
from mur.evaluation.online_conformal import OnlineParams, OnlineState, Outcome, scale_band, step
from mur.pairs import normalize_pair

LOOKBACK = timedelta(days=30)
"""How far back (target time) :func:`update_from_resolved` looks for forecasts not yet stepped."""
LOCK_SPACE = 0x6F63  # "oc": online_calibration's key space of the two-key advisory locks


@dataclass(frozen=True)
class CalibrationRecord:
    """One stored tracker and its running counts."""

    pair: str
    horizon_hours: int
    generation: str
    level: float
    state: OnlineState
    last_target_time: datetime | None = None
    updated_at: datetime | None = None

    @property
    def scale(self) -> float:
        return self.state.scale

    def summary(self) -> dict[str, Any]:
        """JSON-ready: the scale, coverage with and without it, mean Winkler scores (log-price percent)
        and the scale's interval skill ``1 - W_scaled / W_graph`` on the same resolved forecasts."""
        s = self.state
        n = s.resolved
        w, wb = (s.winkler_sum / n, s.winkler_base_sum / n) if n else (None, None)
        return {
            "horizon_hours": self.horizon_hours,
            "generation": self.generation,
            "level": self.level,
            "scale": s.scale,
            "resolved": n,
            "coverage": s.coverage,
            "coverage_without_scale": s.coverage_base,
            "winkler": w,
            "winkler_without_scale": wb,
            "skill_vs_without_scale": (1.0 - w / wb) if w is not None and wb else None,
            "last_target_time": None if self.last_target_time is None else self.last_target_time.isoformat(),
        }


def _record(row: dict[str, Any]) -> CalibrationRecord:
    state = OnlineState(**{name: row[name] for name in OnlineState.__dataclass_fields__})
    fields = {name: row[name] for name in CalibrationRecord.__dataclass_fields__ if name != "state"}
    return CalibrationRecord(**fields, state=state)


def load_calibration(
    db: Database, *, pair: str, generation: str | None = None
) -> dict[int, CalibrationRecord]:
    """The stored trackers of ``pair`` (one generation, or the most recently updated one), by horizon."""
    with db.cursor() as cur:
        return _load(cur, normalize_pair(pair), generation)


def _load(cur: Any, pair: str, generation: str | None) -> dict[int, CalibrationRecord]:
    """:func:`load_calibration` in ``cur``'s transaction (``pair`` normalized)."""
    cur.execute(
        """
        SELECT pair, horizon_hours, generation, level, log_scale, integral, resolved, covered, covered_base, winkler_sum, winkler_base_sum, last_target_time, updated_at
        FROM online_calibration
        WHERE pair = %(pair)s
          AND generation = COALESCE(%(generation)s::text, (
              SELECT generation FROM online_calibration WHERE pair = %(pair)s
              ORDER BY updated_at DESC, generation LIMIT 1))
        ORDER BY horizon_hours
        """,
        {"pair": pair, "generation": generation},
    )
    return {int(row["horizon_hours"]): _record(row) for row in cur.fetchall()}


def _upsert(cur: Any, record: CalibrationRecord) -> None:
    cur.execute(
        """
        INSERT INTO online_calibration (pair, horizon_hours, generation, level, log_scale, integral, resolved, covered, covered_base, winkler_sum, winkler_base_sum,
                                        last_target_time, updated_at)
        VALUES (%(pair)s, %(horizon)s, %(generation)s, %(level)s, %(log_scale)s, %(integral)s, %(resolved)s,
                %(covered)s, %(covered_base)s, %(winkler_sum)s, %(winkler_base_sum)s, %(last)s, now())
        ON CONFLICT (pair, horizon_hours, generation) DO UPDATE
            SET level = EXCLUDED.level, log_scale = EXCLUDED.log_scale, integral = EXCLUDED.integral,
                resolved = EXCLUDED.resolved, covered = EXCLUDED.covered, covered_base = EXCLUDED.covered_base,
                winkler_sum = EXCLUDED.winkler_sum, winkler_base_sum = EXCLUDED.winkler_base_sum,
                last_target_time = EXCLUDED.last_target_time, updated_at = now()
        """,
        {
            "pair": normalize_pair(record.pair),
            "horizon": int(record.horizon_hours),
            "generation": record.generation,
            "level": float(record.level),
            "last": None if record.last_target_time is None else as_utc(record.last_target_time),
            **asdict(record.state),
        },
    )


_RESOLVED_NOT_STEPPED = """
WITH scored AS (
    SELECT DISTINCT ON (pair, target_time, horizon_hours)
           id, target_time, horizon_hours, predicted, lower, upper, level, actual, calibration_scale,
           calibration_generation
    FROM forecasts
    WHERE pair = %(pair)s AND target_time >= %(since)s
    ORDER BY pair, target_time, horizon_hours, made_at, id
)
SELECT id, target_time, horizon_hours, predicted, lower, upper, level, actual,
       COALESCE(calibration_scale, 1.0) AS applied_scale
FROM scored s
WHERE s.actual IS NOT NULL AND s.target_time < %(hour)s
  AND s.lower IS NOT NULL AND s.upper IS NOT NULL
  AND s.lower > 0 AND s.predicted > 0 AND s.actual > 0
  AND (s.calibration_generation IS NULL OR s.calibration_generation = %(generation)s)
  AND NOT EXISTS (SELECT 1 FROM online_calibration_steps c WHERE c.forecast_id = s.id)
ORDER BY s.target_time, s.horizon_hours, s.id
"""


def update_from_resolved(
    db: Database,
    *,
    pair: str,
    generation: str,
    market_hour: datetime,
    params: OnlineParams | None = None,
) -> dict[int, CalibrationRecord]:
    """For the monitoring task, every market hour: step ``pair``'s trackers (this generation) with every
    scored forecast resolved before ``market_hour`` and not stepped yet (targets within :data:`LOOKBACK`), in
    resolution order, each exactly once; one transaction (concurrent calls for the same pair and
    generation wait for each other). Returns every tracker of the pair and generation after the update."""
    params = params or OnlineParams()
    pair = normalize_pair(pair)
    hour = as_utc(market_hour)
    with db.cursor() as cur:
        advisory_xact_lock(cur, LOCK_SPACE, f"{pair}:{generation}")
        records = _load(cur, pair, generation)
        cur.execute(
            _RESOLVED_NOT_STEPPED,
            {"pair": pair, "generation": generation, "since": hour - LOOKBACK, "hour": hour},
        )
        steps: list[dict[str, Any]] = []
        for row in cur.fetchall():
            h = int(row["horizon_hours"])
            level = float(row["level"]) if row["level"] is not None else params.level
            rec = records.get(h) or CalibrationRecord(pair, h, generation, level, OnlineState())
            applied = float(row["applied_scale"])
            outcome = Outcome(
                median=float(row["predicted"]),
                lower=float(row["lower"]),
                upper=float(row["upper"]),
                actual=float(row["actual"]),
                applied_scale=applied,
            )
            before = rec.state
            after = step(before, outcome, h, replace(params, level=level))
            records[h] = replace(rec, level=level, state=after, last_target_time=row["target_time"])
            base_lo, base_hi = scale_band(outcome.median, outcome.lower, outcome.upper, 1.0 / applied)
            steps.append(
                row
                | {
                    "pair": pair,
                    "generation": generation,
                    "covered": after.covered > before.covered,
                    "covered_base": base_lo <= outcome.actual <= base_hi,
                    "scale_after": after.scale,
                }
            )
        cur.executemany(
            """
            INSERT INTO online_calibration_steps (forecast_id, pair, horizon_hours, generation, target_time,
                                                  applied_scale, covered, covered_base, scale_after)
            VALUES (%(id)s, %(pair)s, %(horizon_hours)s, %(generation)s, %(target_time)s, %(applied_scale)s,
                    %(covered)s, %(covered_base)s, %(scale_after)s)
            """,
            steps,
        )
        for h in sorted({stepped["horizon_hours"] for stepped in steps}):
            _upsert(cur, records[h])
    return dict(sorted(records.items()))


def served_generations(db: Database, *, pair: str, since: datetime, until: datetime) -> list[str]:
    """The generations ``pair``'s forecasts with targets in ``[since, until)`` were served for (the trackers
    the monitoring task steps), oldest first."""
    with db.cursor() as cur:
        cur.execute(
            """
            SELECT calibration_generation AS generation, min(target_time) AS first
            FROM forecasts
            WHERE pair = %(pair)s AND calibration_generation IS NOT NULL
              AND target_time >= %(since)s AND target_time < %(until)s
            GROUP BY calibration_generation ORDER BY first, generation
            """,
            {"pair": normalize_pair(pair), "since": as_utc(since), "until": as_utc(until)},
        )
        return [str(row["generation"]) for row in cur.fetchall()]


def calibration_summary(db: Database, *, pair: str, generation: str | None = None) -> list[dict[str, Any]]:
    """For ``/v1/monitoring/{pair}`` and the dashboard: per horizon, the current scale and the running
    coverage of the resolved forecasts with it (as served) and without it (the graph's range), their mean
    Winkler scores and the scale's interval skill. Empty before the first resolved forecast."""
    return [r.summary() for r in load_calibration(db, pair=pair, generation=generation).values()]
