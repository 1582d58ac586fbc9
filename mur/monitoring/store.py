"""Monitoring reports and alerts in PostgreSQL (``sql/0005_monitoring.sql``): written by the monitoring task,
read by the API, the dashboard and the ``/metrics`` gauges."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from mur.db.pool import Database, fetch_one
from mur.monitoring.report import MonitoringReport
from mur.pairs import normalize_pair
from mur.timeutil import parse_time


@dataclass(frozen=True)
class AlertRow:
    """One alert raised by monitoring (``retrain_run_id``: the training run it requested, if any)."""

    id: int
    pair: str
    as_of: datetime
    created_at: datetime
    kinds: list[str]
    message: str
    delivered: bool
    retrain_run_id: str | None


def save_report(db: Database, report: MonitoringReport) -> None:
    """Store (or replace) the report of ``report.pair`` at ``report.as_of``."""
    with db.cursor() as cur:
        cur.execute(
            """
            INSERT INTO monitoring_reports (pair, as_of, champion_version, status, n_resolved, skill, coverage,
                                            report)
            VALUES (%(pair)s, %(as_of)s, %(version)s, %(status)s, %(n)s, %(skill)s, %(coverage)s, %(report)s)
            ON CONFLICT ON CONSTRAINT monitoring_reports_pair_as_of_key DO UPDATE
                SET champion_version = EXCLUDED.champion_version, status = EXCLUDED.status,
                    n_resolved = EXCLUDED.n_resolved, skill = EXCLUDED.skill, coverage = EXCLUDED.coverage,
                    report = EXCLUDED.report, computed_at = now()
            """,
            {
                "pair": normalize_pair(report.pair),
                "as_of": parse_time(report.as_of),
                "version": report.champion_version,
                "status": report.status,
                "n": report.n_resolved,
                "skill": report.skill,
                "coverage": report.coverage,
                "report": json.dumps(report.model_dump(mode="json")),
            },
        )


def latest_report(db: Database, pair: str) -> MonitoringReport | None:
    """The newest report of ``pair`` (None before the first monitoring run)."""
    return next(iter(report_history(db, pair, limit=1)), None)


def latest_reports(db: Database) -> dict[str, MonitoringReport]:
    """The newest report of every pair that has one."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT DISTINCT ON (pair) pair, report FROM monitoring_reports ORDER BY pair, as_of DESC"
        )
        return {row["pair"]: MonitoringReport.model_validate(row["report"]) for row in cur.fetchall()}


def report_history(db: Database, pair: str, *, limit: int = 500) -> list[MonitoringReport]:
    """The latest ``limit`` reports of ``pair``, oldest first (for charts over market time)."""
    with db.cursor() as cur:
        cur.execute(
            """
            SELECT report FROM (
                SELECT as_of, report FROM monitoring_reports WHERE pair = %(pair)s
                ORDER BY as_of DESC LIMIT %(limit)s
            ) latest ORDER BY as_of
            """,
            {"pair": normalize_pair(pair), "limit": max(int(limit), 0)},
        )
        return [MonitoringReport.model_validate(row["report"]) for row in cur.fetchall()]


def record_alert(
    db: Database,
    *,
    pair: str,
    as_of: datetime,
    kinds: list[str],
    message: str,
    delivered: bool,
    retrain_run_id: str | None,
) -> AlertRow:
    """Store an alert that monitoring raised (whether Discord took it, which retraining it requested)."""
    with db.cursor() as cur:
        cur.execute(
            """
            INSERT INTO monitoring_alerts (pair, as_of, kinds, message, delivered, retrain_run_id)
            VALUES (%(pair)s, %(as_of)s, %(kinds)s, %(message)s, %(delivered)s, %(run)s)
            RETURNING id, pair, as_of, created_at, kinds, message, delivered, retrain_run_id
            """,
            {
                "pair": normalize_pair(pair),
                "as_of": as_of,
                "kinds": list(kinds),
                "message": message,
                "delivered": delivered,
                "run": retrain_run_id,
            },
        )
        return AlertRow(**fetch_one(cur))


def latest_alerts(db: Database, pair: str | None = None, *, limit: int = 50) -> list[AlertRow]:
    """The newest alerts (of one pair, or all), newest first."""
    with db.cursor() as cur:
        cur.execute(
            """
            SELECT id, pair, as_of, created_at, kinds, message, delivered, retrain_run_id
            FROM monitoring_alerts WHERE (%(pair)s::text IS NULL OR pair = %(pair)s)
            ORDER BY as_of DESC, id DESC LIMIT %(limit)s
            """,
            {"pair": normalize_pair(pair) if pair else None, "limit": max(int(limit), 0)},
        )
        return [AlertRow(**row) for row in cur.fetchall()]


def forecast_counts(db: Database) -> dict[str, tuple[int, int]]:
    """Per pair: (forecasts recorded, forecasts resolved), every horizon, one per (target time, horizon): the
    forecasts the track record scores (``scored_forecasts``, mur/monitoring/track_record.py)."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT pair, count(*) AS n, count(actual) AS resolved FROM scored_forecasts GROUP BY pair "
            "ORDER BY pair"
        )
        return {row["pair"]: (int(row["n"]), int(row["resolved"])) for row in cur.fetchall()}
