"""The tuning DAG (dags/mur_tuning.py): manual by default (a schedule from MUR_TUNE_SCHEDULE), one search at a
time, and its task body with the Ray job faked: the entrypoint it submits, the result it returns, the error
it raises when the job failed."""

from __future__ import annotations

import json
import shlex
from typing import Any

import pytest

from mur.errors import JobError
from mur.orchestration import tuning_job
from mur.settings import Settings

pytestmark = pytest.mark.airflow


def test_the_dag_is_manual_bounded_and_mapped(dagbag: Any) -> None:
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    assert dagbag.import_errors == {}
    dag = dagbag.dags["mur_tuning"]
    assert type(dag.timetable).__name__ == "NullTimetable"  # manual: MUR_TUNE_SCHEDULE unset
    assert dag.max_active_runs == 1 and dag.catchup is False
    tune = dag.get_task("tune_pair")
    assert isinstance(tune, MappedOperator)
    assert tune.upstream_task_ids == {"list_pairs"}
    assert tune.max_active_tis_per_dag == 1  # a search takes the cluster's CPUs: one pair at a time
    assert set(dag.params) == {"pairs", "trials"}


def test_weekly_schedule_from_settings() -> None:
    from airflow.sdk import CronDataIntervalTimetable

    from mur.orchestration.tasks import schedule_for

    weekly = schedule_for(Settings(tune_schedule="@weekly").tuning.tune_schedule)
    assert isinstance(weekly, CronDataIntervalTimetable) and weekly.expression == "0 0 * * 0"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The Jobs API and the result store faked: the job's status and logs, and the document it left in S3
    (``result``; the ids it was read by: ``read``)."""
    from mur.orchestration import job_submission as jobs

    state: dict[str, Any] = {"submitted": [], "status": "SUCCEEDED", "logs": "", "result": None, "read": []}

    def submit(settings: Settings, entrypoint: str, sid: str, meta: dict, emit: Any) -> str:
        state["submitted"].append((entrypoint, sid, meta))
        return sid

    monkeypatch.setattr(jobs, "client_for", lambda settings: object())
    monkeypatch.setattr(jobs, "submit_job", submit)
    monkeypatch.setattr(jobs, "follow_job", lambda *a, **k: (state["status"], state["logs"]))
    monkeypatch.setattr(
        jobs,
        "job_result_reader",
        lambda settings: lambda sid: state["read"].append(sid) or state["result"],
    )
    return state


SUMMARY = {"pair": "btc_usdt", "chosen": {"arch": "gru"}, "stored_version": 3, "active": True}


def test_task_submits_the_tuning_job_and_returns_its_result(fake: dict[str, Any]) -> None:
    fake["logs"] = f"[tune] ...\n{json.dumps({'pair': 'x'})}\n"  # the log is never read for the result
    fake["result"] = json.dumps(SUMMARY)
    result = tuning_job.tune_pair_task(Settings(), "BTC_USDT", {"params": {"trials": 6}})
    entrypoint, sid, meta = fake["submitted"][0]
    assert result == {**SUMMARY, "job_id": sid}  # the document left under the id the task picked
    assert shlex.split(entrypoint)[1:] == [
        *("-m", "ray_jobs.tune_pair", "--pair", "btc_usdt", "--submission-id", sid, "--trials", "6")
    ]
    assert sid.startswith("mur-tune-") and meta == {"pair": "btc_usdt", "kind": "tuning"}
    assert fake["read"] == [sid]


def test_a_failed_job_fails_the_task_with_its_error(fake: dict[str, Any]) -> None:
    fake["status"], fake["logs"] = "FAILED", "error: btc_usdt: no trial completed every fold\n"
    with pytest.raises(JobError, match="failed: error: btc_usdt: no trial completed"):
        tuning_job.tune_pair_task(Settings(), "btc_usdt", {})
    fake["status"], fake["logs"] = "SUCCEEDED", "no result here"
    with pytest.raises(JobError, match="it left no result"):
        tuning_job.tune_pair_task(Settings(), "btc_usdt", {})
