"""Every market hour: resolve the track record, compute each pair's monitoring report, alert on drift.

    monitor (all pairs: resolve forecasts → rolling skill/coverage → input drift → report → alert + retrain)

Configuration only: the task imports :mod:`mur.monitoring.task` when it runs and passes it the settings it
creates then (``get_settings()``), as the failure callback does when it runs. The schedule is the market clock
(:class:`~mur.orchestration.timetable.MarketHourlyTimetable`: every ``3600 / MUR_CLOCK_SPEED`` wall seconds
offline, hourly with live data); a crossed threshold sends a Discord alert and triggers ``mur_training`` for
that pair through Airflow's REST API (``docs/monitoring.md``).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, get_current_context, task

from mur.orchestration import MONITORING_DAG_ID, dag_arguments
from mur.orchestration.tasks import schedule_for
from mur.settings import get_settings

settings = get_settings()


@dag(
    dag_id=MONITORING_DAG_ID,
    description="Track record resolution, rolling skill/coverage and drift per pair → alerts and retraining",
    schedule=schedule_for(settings.airflow.train_schedule),
    max_active_runs=1,
    tags=["mur", "monitoring"],
    doc_md=__doc__,
    **dag_arguments(run_alert=False, retries=1, retry_delay=timedelta(seconds=20)),
)
def mur_monitoring() -> None:
    @task(execution_timeout=timedelta(minutes=10))
    def monitor() -> dict:
        """Monitor every pair of the catalogue (configured + added by an admin - removed) at the run's market
        hour (its data interval end)."""
        from mur.monitoring.task import run_monitoring
        from mur.orchestration.tasks import catalogue_pairs, task_emit, training_end

        settings = get_settings()
        context = get_current_context()
        run_after = getattr(context.get("dag_run"), "run_after", None)
        hour = training_end(settings, context.get("data_interval_end"), None, run_after)
        pairs = catalogue_pairs(settings)
        return run_monitoring(settings, market_hour=hour, pairs=pairs, say=task_emit(context))

    monitor()


mur_monitoring()
