"""``mur airflow trigger|backfill`` as a user runs them (the console script in a subprocess) against a local
stand-in of Airflow's REST API: dates after market now are refused before Airflow is asked, a range that ends
after it is clamped with a warning, ``--list`` and ``--cancel`` use the backfill endpoints, errors are one
line without a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from json_stand_in import JsonStandIn, Request

pytestmark = pytest.mark.fast

MUR = str(Path(sys.executable).parent / "mur")
MARKET_NOW = "2024-11-04T07:06:00Z"  # frozen: the 06:00 hour is the last that closed


AIRFLOW_ANSWERS: dict[tuple[str, str], tuple[int, Any]] = {
    ("POST", "/auth/token"): (201, {"access_token": "jwt"}),
    ("POST", "/api/v2/backfills/dry_run"): (
        200,
        {"backfills": [{"logical_date": "2024-10-01T00:00:00Z"}], "total_entries": 1},
    ),
    ("POST", "/api/v2/backfills"): (200, {"id": 7, "dag_id": "mur_training"}),
    ("GET", "/api/v2/backfills"): (
        200,
        {
            "backfills": [
                {
                    "id": 7,
                    "dag_id": "mur_training",
                    "from_date": "2024-10-01T00:00:00Z",
                    "to_date": "2024-10-01T03:00:00Z",
                    "is_paused": False,
                    "completed_at": None,
                    "created_at": "2026-11-23T14:00:00Z",
                    "dag_run_conf": {"pairs": ["btc_usdt"]},
                }
            ],
            "total_entries": 1,
        },
    ),
    ("PUT", "/api/v2/backfills/7/cancel"): (200, {"id": 7, "dag_id": "mur_training"}),
    ("PUT", "/api/v2/backfills/6/cancel"): (409, {"detail": "Backfill is already completed."}),
}
"""Airflow's ``/auth/token`` and ``/api/v2`` backfill endpoints, as canned answers."""


def airflow_route(request: Request) -> tuple[int, Any]:
    return AIRFLOW_ANSWERS.get((request.method, request.path.split("?")[0]), (404, {"detail": "Not Found"}))


def api_requests(stand_in: JsonStandIn) -> list[tuple[str, str, Any]]:
    return [(r.method, r.path, r.body) for r in stand_in.requests if r.path.startswith("/api/v2")]


@pytest.fixture
def airflow() -> Iterator[JsonStandIn]:
    stand_in = JsonStandIn(airflow_route)
    try:
        yield stand_in
    finally:
        stand_in.close()


def mur(tmp_path: Path, airflow_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MUR_", "AIRFLOW"))}
    env |= {
        "MUR_RUNTIME_DIR": str(tmp_path / "runtime"),
        "MUR_CLOCK_START": MARKET_NOW,
        "MUR_CLOCK_SPEED": "0",
        "MUR_CLOCK_ORIGIN": "1700000000",
        "MUR_AIRFLOW_URL": airflow_url,
        "MUR_AIRFLOW_PASSWORD": "pw-for-the-stand-in",
    }
    return subprocess.run([MUR, *args], env=env, capture_output=True, text=True, timeout=120)


def test_a_market_future_backfill_is_refused_before_airflow_is_asked(
    tmp_path: Path, airflow: JsonStandIn
) -> None:
    done = mur(
        tmp_path, airflow.url, "airflow", "backfill", "--from", "2025-06-01T00:00", "--to", "2025-06-01T03:00"
    )
    assert done.returncode == 1
    assert "error: --from 2025-06-01T00:00Z lies after market now (2024-11-04T07:06Z)" in done.stderr
    assert "pick dates up to 2024-11-04T06:00Z" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert airflow.requests == []  # nothing reached Airflow


def test_a_market_future_trigger_is_refused(tmp_path: Path, airflow: JsonStandIn) -> None:
    for option in ("--end", "--logical-date"):
        done = mur(tmp_path, airflow.url, "airflow", "trigger", option, "2025-06-01T00:00:00Z")
        assert done.returncode == 1, done.stdout
        assert f"error: {option} 2025-06-01T00:00Z lies after market now (2024-11-04T07:06Z)" in done.stderr
        assert "Traceback" not in done.stderr
    assert airflow.requests == []


def test_a_past_backfill_goes_to_the_rest_api_and_a_straddling_one_is_clamped(
    tmp_path: Path, airflow: JsonStandIn
) -> None:
    done = mur(
        tmp_path, airflow.url, "airflow", "backfill", "--from", "2024-10-01", "--to", "2024-10-01T03:00",
        "--pair", "btc_usdt", "--epochs", "2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (
        "backfill 7 of mur_training: 1 run(s), market hours 2024-10-01T00:00Z .. 2024-10-01T03:00Z"
        in done.stdout
    )
    assert "mur airflow backfill --cancel 7" in done.stdout
    dry, create = api_requests(airflow)
    assert (dry[0], dry[1], create[0], create[1]) == (
        "POST",
        "/api/v2/backfills/dry_run",
        "POST",
        "/api/v2/backfills",
    )
    assert create[2] == {
        "dag_id": "mur_training",
        "from_date": "2024-10-01T00:00:00+00:00",
        "to_date": "2024-10-01T03:00:00+00:00",
        "dag_run_conf": {"pairs": ["btc_usdt"], "epochs": 2},
        "max_active_runs": 1,
        "reprocess_behavior": "none",
    }
    assert "warning" not in done.stderr

    airflow.requests.clear()
    clamped = mur(
        tmp_path, airflow.url, "airflow", "backfill", "--from", "2024-11-04T03:00", "--to", "2025-06-01"
    )
    assert clamped.returncode == 0, clamped.stderr
    assert "warning: --to 2025-06-01T00:00Z lies after market now" in clamped.stderr
    assert "stops at 2024-11-04T06:00Z" in clamped.stderr
    (_, _, body) = api_requests(airflow)[-1]
    assert body["to_date"] == "2024-11-04T06:00:00+00:00"


def test_backfill_list_and_cancel(tmp_path: Path, airflow: JsonStandIn) -> None:
    listed = mur(tmp_path, airflow.url, "airflow", "backfill", "--list")
    assert listed.returncode == 0, listed.stderr
    assert "backfills of mur_training" in listed.stdout
    row = next(line for line in listed.stdout.splitlines() if " 7 " in line)
    assert "2024-10-01T00:00" in row and "running" in row and "btc_usdt" in row
    method, path, _ = api_requests(airflow)[-1]
    assert method == "GET" and path.startswith("/api/v2/backfills?") and "dag_id=mur_training" in path

    cancelled = mur(tmp_path, airflow.url, "airflow", "backfill", "--cancel", "7")
    assert cancelled.returncode == 0, cancelled.stderr
    assert "cancelled backfill 7 of mur_training" in cancelled.stdout
    assert api_requests(airflow)[-1][:2] == ("PUT", "/api/v2/backfills/7/cancel")

    again = mur(tmp_path, airflow.url, "airflow", "backfill", "--cancel", "6")
    assert again.returncode == 1
    assert "409: Backfill is already completed." in again.stderr and "Traceback" not in again.stderr


def test_backfill_without_dates_says_what_to_give(tmp_path: Path, airflow: JsonStandIn) -> None:
    done = mur(tmp_path, airflow.url, "airflow", "backfill", "--from", "2024-10-01")
    assert done.returncode == 1 and "give --from and --to" in done.stderr
    assert airflow.requests == []


def test_trigger_wait_shows_each_task_state_as_it_changes_the_run_queued_ahead_too(tmp_path: Path) -> None:
    runs = "/api/v2/dags/mur_training/dagRuns"
    polls = {"manual__1": 0}

    def route(request: Request) -> tuple[int, Any]:
        path = request.path.split("?")[0]
        if path == "/auth/token" or request.method == "PATCH":
            return 201, {"access_token": "jwt"}
        if path == runs:  # POST: the trigger; GET: the active runs
            if request.method == "POST":
                return 200, {"dag_run_id": "manual__1", "state": "queued"}
            return 200, {"dag_runs": [{"dag_run_id": "scheduled__1"}, {"dag_run_id": "manual__1"}]}
        run_id = path.removeprefix(runs + "/").removesuffix("/taskInstances")
        done = polls["manual__1"] > 1
        if path.endswith("/taskInstances"):
            state = "success" if done else ("up_for_retry" if run_id == "scheduled__1" else "deferred")
            return 200, {"task_instances": [{"task_id": "train_batch", "map_index": 0, "state": state}]}
        polls[run_id] = polls.get(run_id, 0) + 1
        return 200, {"state": "success" if done else "running"}

    stand_in = JsonStandIn(route)
    try:
        done = mur(tmp_path, stand_in.url, "airflow", "trigger", "--pair", "btc_usdt", "--wait")
    finally:
        stand_in.close()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for line in (
        "  triggered run: train_batch[0] deferred",
        "  scheduled run: train_batch[0] up_for_retry",
        "  triggered run: train_batch[0] success",
        "run manual__1: success",
    ):
        assert line in lines, done.stdout
