"""A live Airflow cannot be derailed by a market-future date: the four components under the supervisor on
private ports with a throwaway PostgreSQL metadata DB, ``mur_training`` on the market-hour timetable with the
market at 2024-11-04 07:06 (the issue's replay). No S3, MLflow or Ray: no run is let to train
(``USE_JOB_SCHEDULE=False``, the DAG stays paused, the past backfill is cancelled).

``mur airflow backfill`` refuses 2025 dates before Airflow is asked; Airflow's own REST API refuses them too
(the backfill creates no run, a trigger answers 400 with the message); after a backfill in the market's past
the DAG processor re-parses the DAG and its next run is unchanged.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mur.errors import ServiceAnswerError
from mur.orchestration.airflow_client import AirflowClient
from mur.settings import Settings
from mur.waiting import wait_until

pytestmark = [pytest.mark.airflow, pytest.mark.timeout(1200)]

DAG_ID = "mur_training"
MARKET_START = "2024-11-04T07:06:00Z"
MUR = str(Path(sys.executable).parent / "mur")


def _port_range_free(base: int) -> bool:
    from devstack.airflow import ports

    for port in [base, *ports(Settings(airflow_port=base)).values()]:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


@pytest.fixture
def market_airflow(
    stack_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Settings, dict[str, str]]]:
    """The Airflow components on private ports, the market clock at MARKET_START running at speed 1; yields
    their settings and the environment a ``mur`` command needs to reach them."""
    import psycopg
    from psycopg import sql

    from devstack import supervisor as svc
    from devstack.services import stack_services

    port = next((p for p in random.sample(range(20000, 40000, 10), 50) if _port_range_free(p)), None)
    assert port is not None, "no free port range for Airflow"
    settings = stack_settings.replace(
        runtime_dir=tmp_path / "runtime",
        airflow_port=port,
        airflow_url=f"http://127.0.0.1:{port}",
        airflow_database=f"airflow_dates_{uuid.uuid4().hex[:8]}",
        airflow_password="test-password-1",
    )
    clock = {"MUR_CLOCK_START": MARKET_START, "MUR_CLOCK_ORIGIN": repr(time.time()), "MUR_CLOCK_SPEED": "1"}
    for name, value in {**clock, "MUR_TRAIN_SCHEDULE": "market"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE", "False"
    )  # the timetable, but no scheduled runs
    registry = {name: s for name, s in stack_services(settings).items() if name.startswith("airflow-")}
    cli_env = {k: v for k, v in os.environ.items() if not k.startswith(("MUR_", "AIRFLOW"))}
    cli_env |= clock | {
        "MUR_RUNTIME_DIR": str(settings.general.runtime_dir),
        "MUR_AIRFLOW_URL": settings.airflow.airflow_url,
        "MUR_AIRFLOW_PASSWORD": "test-password-1",
    }
    names = list(registry)
    try:
        svc.up(settings, names, services=registry, progress=print)
        yield settings, cli_env
    finally:
        svc.down(settings, names, services=registry, progress=print)
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(settings.db.airflow_database)
        )
        with psycopg.connect(settings.db.dsn("postgres"), autocommit=True) as admin:
            admin.execute(drop)


def wait_for(what: str, probe: Any, timeout_s: float = 300) -> Any:
    """Poll ``probe()`` until it returns something truthy (an exception counts as not yet)."""
    return wait_until(probe, what=what, timeout_s=timeout_s, interval_s=2, retry_on=(Exception,))


def mur(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MUR, *args], env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.service_start
def test_a_market_future_backfill_is_refused_and_the_next_run_is_unchanged(
    market_airflow: tuple[Settings, dict[str, str]],
) -> None:
    settings, env = market_airflow
    client = AirflowClient.from_settings(settings)
    try:
        dag = wait_for("the DAG processor registers mur_training", lambda: client.dag(DAG_ID), timeout_s=600)
        assert client.import_errors() == []
        assert dag["timetable_summary"] == "market hourly (x1)"
        next_run = dag["next_dagrun_logical_date"]
        assert next_run.startswith("2024-11-04T06:00:00"), dag  # the last closed market hour

        # the CLI refuses before asking Airflow
        refused = mur(env, "airflow", "backfill", "--from", "2025-06-01T00:00", "--to", "2025-06-01T03:00")
        assert refused.returncode == 1
        assert "--from 2025-06-01T00:00Z lies after market now (2024-11-04T07:" in refused.stderr
        assert "Traceback" not in refused.stderr
        # Airflow's own REST API (the UI's backfill dialog and trigger form use it): no run, a clear 4xx
        body = client.backfill_body(DAG_ID, "2025-06-01T00:00:00Z", "2025-06-01T03:00:00Z")
        with pytest.raises(ServiceAnswerError) as no_runs:
            client.create_backfill(body)
        assert no_runs.value.status == 422 and "No runs to create" in str(no_runs.value)
        with pytest.raises(ServiceAnswerError) as future_trigger:
            client.trigger(DAG_ID, {}, logical_date="2025-06-01T00:00:00Z")
        assert future_trigger.value.status == 400 and "lies after market now" in str(future_trigger.value)
        assert client.backfills(DAG_ID) == []

        # a backfill in the market's past is created; listed; cancelled (nothing trains in this test)
        created = mur(env, "airflow", "backfill", "--from", "2024-10-01T00:00", "--to", "2024-10-01T01:00")
        assert created.returncode == 0, created.stderr
        assert "2 run(s), market hours 2024-10-01T00:00Z .. 2024-10-01T01:00Z" in created.stdout
        [backfill] = client.backfills(DAG_ID)
        # run ids name market time, not the wall time of their creation (the timetable's generate_run_id)
        runs = client.dag_runs(DAG_ID)
        assert sorted(r["dag_run_id"] for r in runs if r["run_type"] == "backfill") == [
            "backfill__2024-10-01T00:00:00+00:00",
            "backfill__2024-10-01T01:00:00+00:00",
        ]
        typed = client.trigger(DAG_ID, {}, logical_date="2024-10-02T00:00:00Z")  # paused: it never runs
        assert typed.run_id.startswith("manual__2024-10-02T00:00:00+00:00_"), typed.run_id
        assert client.trigger(DAG_ID, {}).run_id.startswith("manual__2024-11-04T07:")  # no date: market now
        listed = mur(env, "airflow", "backfill", "--list")
        assert listed.returncode == 0 and f"│ {backfill['id']} " in listed.stdout, listed.stdout
        cancelled = mur(env, "airflow", "backfill", "--cancel", str(backfill["id"]))
        assert cancelled.returncode == 0, cancelled.stderr
        assert client.backfills(DAG_ID)[0]["completed_at"] is not None

        # the DAG processor parses the file again and recomputes the next run from the latest runs
        parsed_before = datetime.now(UTC)

        def reparsed() -> dict[str, Any] | None:
            current = client.dag(DAG_ID)
            parsed = datetime.fromisoformat(str(current.get("last_parsed_time")).replace("Z", "+00:00"))
            return current if parsed > parsed_before else None

        after = wait_for("the DAG processor re-parses mur_training", reparsed, timeout_s=240)
        assert after["next_dagrun_logical_date"] == next_run, after
    finally:
        client.close()
