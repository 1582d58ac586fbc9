"""The training DAG trains the pair catalogue as it stands when a run starts: a pair an admin uploaded as CSV
(mur/data/catalogue.py) is in the next run's ``list_pairs`` (one mapped ``train_pair`` each), a removed one is
not; parsing the DAG file never reads the database."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pair_csv import pair_csv_text

from mur.data.catalogue import add_csv_pair, remove_pair
from mur.db import Database
from mur.settings import PROJECT_ROOT, Settings, get_settings

pytestmark = pytest.mark.pg


@pytest.fixture
def catalogue_env(
    pg_database_factory: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    """The process's settings (what the task reads) on a fresh migrated database, one configured pair."""
    settings = pg_database_factory()
    monkeypatch.setenv("MUR_PG_DATABASE", settings.db.pg_database)
    monkeypatch.setenv("MUR_PAIRS", "btc_usdt")
    monkeypatch.setenv("MUR_PAIR_MIN_HISTORY_HOURS", "200")
    monkeypatch.setenv("MUR_MARKET_DATA", "bundled")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def run_list_pairs(dag: Any, params: dict[str, Any] | None = None) -> list[str]:
    """The DAG's own ``list_pairs`` callable, run in a task context as the worker runs it."""
    from airflow.sdk.execution_time.context import set_current_context

    task = dag.get_task("list_pairs")
    with set_current_context({"params": params or {}}):  # type: ignore[arg-type]
        return list(task.python_callable())


def test_a_csv_pair_uploaded_is_in_the_next_runs_pair_list(catalogue_env: Settings, monkeypatch: Any) -> None:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("MUR_PG_PORT", "9")  # nothing listens there: parsing must not need the database
    get_settings.cache_clear()
    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "mur_training.py"))
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags["mur_training"]
    monkeypatch.delenv("MUR_PG_PORT")
    get_settings.cache_clear()

    assert run_list_pairs(dag) == ["btc_usdt"]
    with Database(catalogue_env, maxconn=1) as db:
        upload = io.BytesIO(pair_csv_text(300).encode())
        add_csv_pair(catalogue_env, db, "DOGEUSDT", upload, name="doge.csv", added_by="admin")
        assert run_list_pairs(dag) == ["btc_usdt", "doge_usdt"]  # the next run maps one train_pair on it
        assert run_list_pairs(dag, {"pairs": ["eth_usdt"]}) == ["eth_usdt"]  # the trigger form still wins
        remove_pair(catalogue_env, db, "doge_usdt", removed_by="admin")
        assert run_list_pairs(dag) == ["btc_usdt"]


@pytest.mark.services
@pytest.mark.airflow
@pytest.mark.timeout(1800)
@pytest.mark.service_start
def test_the_next_run_trains_the_uploaded_pair_on_ray(
    services: Settings, airflow_db: Any, pg_database_factory: Callable[..., Settings], monkeypatch: Any
) -> None:
    """The whole way: a CSV pair uploaded, then a run with no pairs given trains it in a real Ray job (which
    reads the candles from PostgreSQL) and registers its version in MLflow."""
    import secrets
    from datetime import timedelta

    from pair_csv import START
    from test_training_dag import TINY, iso, load_dag, task_states, versions_for_window, xcom

    from mur.db.pairs import mark_removed

    monkeypatch.setenv("MUR_PG_DATABASE", pg_database_factory().db.pg_database)  # the job inherits MUR_*
    monkeypatch.setenv("MUR_PAIR_MIN_HISTORY_HOURS", "200")
    get_settings.cache_clear()
    settings = get_settings()
    pair = f"t{secrets.token_hex(3)}_usdt"
    with Database(settings, maxconn=1) as db:
        upload = io.BytesIO(pair_csv_text(1600).encode())
        add_csv_pair(settings, db, pair, upload, name="upload.csv", added_by="admin")
        for configured in settings.general.pairs:  # this run trains the uploaded pair alone
            mark_removed(db, pair=configured, removed_by="test")
    try:
        dr = load_dag().test(logical_date=START + timedelta(hours=1500), run_conf=dict(TINY))
        assert str(dr.state) == "success", task_states(dr)
        [result] = xcom(dr, "train_pair")
        assert result["pair"] == pair and result["alias"] in ("champion", "challenger")
        assert result["data_window_end"] == iso(dr.data_interval_end)
        [version] = versions_for_window(settings, pair, dr.data_interval_end)
        assert int(version.version) == result["version"]
    finally:
        get_settings.cache_clear()
