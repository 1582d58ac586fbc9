"""Monitoring's retraining request (mur.monitoring.task.request_retraining) against a stand-in of Airflow's REST
API: a pair whose retraining is already queued or running gets that run, not a second one (on a busy cluster
each drift alert of a cooldown would otherwise queue another training of the same pair); any other pair gets a
run of its own."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from json_stand_in import JsonStandIn, Request

from mur.monitoring.task import request_retraining
from mur.settings import Settings

pytestmark = pytest.mark.fast

RUNS = "/api/v2/dags/mur_training/dagRuns"
HOUR = datetime(2024, 8, 5, 11, tzinfo=UTC)


def test_a_retraining_under_way_is_reused_and_another_pair_gets_its_own_run() -> None:
    active = [
        {"dag_run_id": "scheduled__1", "conf": {}},  # a scheduled run names no pairs
        {"dag_run_id": "manual__btc", "conf": {"pairs": ["btc_usdt"], "end": "2024-08-05T07:00:00Z"}},
    ]

    def route(request: Request) -> tuple[int, Any]:
        if request.path == "/auth/token":
            return 201, {"access_token": "jwt"}
        if request.method == "GET" and request.path.split("?")[0] == RUNS:
            return 200, {"dag_runs": active}
        if request.method == "POST" and request.path == RUNS:
            return 200, {"dag_run_id": "manual__new", "state": "queued"}
        return 404, {"detail": "Not Found"}

    airflow = JsonStandIn(route)
    try:
        settings = Settings(airflow_url=airflow.url, airflow_password="pw")
        assert request_retraining(settings, "btc_usdt", HOUR, "drift") == "manual__btc"
        assert not [r for r in airflow.requests if r.method == "POST" and r.path == RUNS]
        listed = next(r.path for r in airflow.requests if r.method == "GET")
        assert "state=queued" in listed and "state=running" in listed  # only the active runs are asked for

        assert request_retraining(settings, "eth_usdt", HOUR, "drift") == "manual__new"
        [posted] = [r for r in airflow.requests if r.method == "POST" and r.path == RUNS]
        assert posted.body["conf"] == {"pairs": ["eth_usdt"], "end": "2024-08-05T11:00:00Z"}
    finally:
        airflow.close()


@pytest.mark.parametrize(
    ("error", "level"),
    [
        ("RESOURCE_DOES_NOT_EXIST: Registered Model with name=mur-btc_usdt not found", logging.INFO),
        ("API request to endpoint /api/2.0/mlflow/... failed: Connection refused", logging.WARNING),
        ("RESOURCE_DOES_NOT_EXIST: Model Version (name=mur-btc_usdt, version=3) not found", logging.WARNING),
    ],
)
def test_a_pair_with_no_registered_model_is_no_warning_when_its_shadows_are_reviewed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, error: str, level: int
) -> None:
    """The first market hour's monitoring run comes before any model is registered: that is no warning (a
    registry that does not answer still is one)."""
    from mur.monitoring import shadows, task
    from mur.serving import champions

    def refuse(*_args: object) -> list[Any]:
        raise RuntimeError(error)

    monkeypatch.setattr(champions, "registry_client", lambda settings: object())
    monkeypatch.setattr(shadows, "review_shadows", refuse)
    with caplog.at_level(logging.INFO, logger=task.__name__):
        assert task._shadows(Settings(), None, "btc_usdt", HOUR) == []
    assert [r.levelno for r in caplog.records] == [level]
