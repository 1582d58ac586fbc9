"""A backfill cannot derail the hourly schedule: Airflow's own backfill and next-run code (the API's
``_create_backfill``, the DAG processor's ``update_dag_parsing_results_in_db``) on the test metadata DB, with
``mur_training`` on the market-hour timetable and the market at 2024-11-04 07:06 (the issue's replay).

Before the fix a backfill over 2025 dates was accepted, its runs waited for the wall time the market reaches
them, and the DAG processor took the latest backfill run as the reference of the next run: the next run moved to
that wall time and hourly training stopped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mur.settings import PROJECT_ROOT, get_settings

pytestmark = pytest.mark.fast

MARKET_NOW = datetime(2024, 11, 4, 7, 6, tzinfo=UTC)
LATEST_CLOSED = datetime(2024, 11, 4, 6, tzinfo=UTC)  # the open time of the last market hour that closed
DAG_ID = "mur_training"


@pytest.fixture
def market_dag(airflow_db: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``mur_training`` parsed on the market timetable, the clock running from MARKET_NOW, written to the DB
    the way the DAG processor does; its runs and backfills removed afterwards."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("MUR_TRAIN_SCHEDULE", "market")
    monkeypatch.setenv("MUR_CLOCK_START", MARKET_NOW.isoformat())
    monkeypatch.setenv("MUR_CLOCK_ORIGIN", repr(time.time()))
    monkeypatch.setenv("MUR_CLOCK_SPEED", "1")
    get_settings.cache_clear()
    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "mur_training.py"), bundle_path=PROJECT_ROOT / "dags")
    assert not bag.import_errors, bag.import_errors
    assert type(bag.dags[DAG_ID].timetable).__name__ == "MarketHourlyTimetable"
    try:
        yield bag
    finally:
        _clear_runs()
        get_settings.cache_clear()


def _clear_runs() -> None:
    from airflow.models.backfill import Backfill, BackfillDagRun
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    with create_session() as session:
        session.execute(delete(BackfillDagRun))
        session.execute(delete(DagRun).where(DagRun.dag_id == DAG_ID))
        session.execute(delete(Backfill).where(Backfill.dag_id == DAG_ID))


def reparse(bag: Any) -> tuple[datetime, datetime]:
    """What the DAG processor does after each parse (recompute the next run from the latest scheduled or
    backfill run); the DAG's next run: (logical date, wall time it is created after)."""
    from airflow.dag_processing.dagbag import sync_bag_to_db
    from airflow.models.dag import DagModel
    from airflow.models.dagbundle import DagBundleModel
    from airflow.utils.session import create_session

    with create_session() as session:
        if session.get(DagBundleModel, "dags-folder") is None:
            session.add(DagBundleModel(name="dags-folder"))
    sync_bag_to_db(bag, "dags-folder", None)
    with create_session() as session:
        model = session.get(DagModel, DAG_ID)
        assert model is not None and model.next_dagrun is not None
        assert model.next_dagrun_create_after is not None
        return model.next_dagrun, model.next_dagrun_create_after


def backfill(start: datetime, end: datetime) -> Any:
    from airflow.models.backfill import ReprocessBehavior, _create_backfill

    return _create_backfill(
        dag_id=DAG_ID,
        from_date=start,
        to_date=end,
        max_active_runs=1,
        reverse=False,
        dag_run_conf={"pairs": ["btc_usdt"]},
        triggering_user_name="test",
        reprocess_behavior=ReprocessBehavior.NONE,
    )


def test_a_market_future_backfill_is_refused_and_the_next_run_is_unchanged(market_dag: Any) -> None:
    from airflow.models.backfill import NoBackfillRunsToCreate

    next_run, create_after = reparse(market_dag)
    assert next_run == LATEST_CLOSED
    assert create_after.timestamp() < time.time() + 60  # due now, not at some far wall time

    # the README's old example: 2025-06-01 lies after market now, no market hour of it has closed
    with pytest.raises(NoBackfillRunsToCreate):
        backfill(datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 6, 1, 3, tzinfo=UTC))
    assert reparse(market_dag)[0] == next_run

    # a range in the market's past: four hourly runs, and the next run stays where it was
    created = backfill(datetime(2024, 10, 1, tzinfo=UTC), datetime(2024, 10, 1, 3, tzinfo=UTC))
    runs = _runs()
    assert [(r.run_type, r.logical_date) for r in runs] == [
        ("backfill", datetime(2024, 10, 1, h, tzinfo=UTC)) for h in range(4)
    ]
    assert [r.run_id for r in runs] == [f"backfill__2024-10-01T0{h}:00:00+00:00" for h in range(4)]
    assert all(r.run_after.timestamp() < time.time() for r in runs)  # runnable now, not in 2027
    assert created.id is not None
    assert reparse(market_dag)[0] == next_run

    # a range that straddles market now keeps only the hours that have closed
    _clear_runs()
    backfill(LATEST_CLOSED - timedelta(hours=1), datetime(2025, 6, 1, tzinfo=UTC))
    assert [r.logical_date for r in _runs()] == [LATEST_CLOSED - timedelta(hours=1), LATEST_CLOSED]
    # the latest closed hour has its (backfill) run: the schedule goes on with the open hour, due when the
    # market reaches 08:00 (54 wall minutes at speed 1), not at a far wall time
    following, due = reparse(market_dag)
    assert following == LATEST_CLOSED + timedelta(hours=1)
    assert 0 < due.timestamp() - time.time() <= 54 * 60


def test_a_run_left_in_the_market_future_does_not_move_the_next_run(market_dag: Any) -> None:
    """A backfill run for an unclosed market hour (created before the fix, or by a replay restarted from an
    earlier start) is the latest by logical date; the DAG processor takes it as the reference."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    next_run, _ = reparse(market_dag)
    future = datetime(2025, 6, 1, 3, tzinfo=UTC)
    with create_session() as session:
        session.add(
            DagRun(
                dag_id=DAG_ID,
                run_id=f"backfill__{future.isoformat()}",
                logical_date=future,
                data_interval=(future, future + timedelta(hours=1)),
                run_after=future + timedelta(days=800),
                run_type=DagRunType.BACKFILL_JOB,
                triggered_by=DagRunTriggeredByType.BACKFILL,
                state=DagRunState.SUCCESS,
            )
        )
    again, create_after = reparse(market_dag)
    assert again == next_run == LATEST_CLOSED
    assert create_after.timestamp() < time.time() + 60


def test_run_ids_name_the_market_hour(market_dag: Any) -> None:
    """Scheduled and manual run ids name the market hour, not the wall time the run was created at."""
    from airflow.timetables.base import DataInterval
    from airflow.utils.types import DagRunType
    from pendulum import instance

    timetable = market_dag.dags[DAG_ID].timetable
    hour = DataInterval(instance(LATEST_CLOSED), instance(LATEST_CLOSED + timedelta(hours=1)))
    wall = instance(datetime.now(UTC))
    scheduled = timetable.generate_run_id(run_type=DagRunType.SCHEDULED, run_after=wall, data_interval=hour)
    assert scheduled == "scheduled__2024-11-04T06:00:00+00:00"
    # a manual run: the market time it trains up to (its logical date), with Airflow's random tail
    manual = timetable.generate_run_id(run_type=DagRunType.MANUAL, run_after=wall, data_interval=hour)
    assert manual.startswith("manual__2024-11-04T07:00:00+00:00_")
    # no logical date: the market time of the trigger
    assert timetable.generate_run_id(
        run_type=DagRunType.MANUAL, run_after=wall, data_interval=None
    ).startswith("manual__2024-11-04T07:")


def _runs() -> list[Any]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        runs = session.scalars(
            select(DagRun).where(DagRun.dag_id == DAG_ID).order_by(DagRun.logical_date)
        ).all()
        session.expunge_all()
        return list(runs)
