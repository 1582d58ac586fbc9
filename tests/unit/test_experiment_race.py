"""MLflow's ``set_experiment`` race (seen on the stack's first hourly run, two training jobs at once): when
another process creates the experiment between its lookup and its create, MLflow returns the experiment
without making it active, and a plain ``start_run`` lands in "Default" (a run the readers then refuse:
``mur.registry.versions.trained_here``). The trainer, the backtest and tuning therefore start their runs
with the id ``set_experiment`` returned; this checks that such a run lands in the experiment under the race,
and that MLflow still behaves as described (the day it does not, the workaround can go)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service.client import TrackingServiceClient

pytestmark = pytest.mark.fast


def test_a_run_started_with_the_returned_id_lands_in_the_experiment_under_the_race(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    real = TrackingServiceClient.get_experiment_by_name
    raced: list[str] = []

    def another_job_creates_it_first(self: Any, name: str) -> Any:
        if not raced:  # our lookup misses it, then the other job's create wins
            raced.append(name)
            MlflowClient(uri).create_experiment(name)
            return None
        return real(self, name)

    monkeypatch.setattr(TrackingServiceClient, "get_experiment_by_name", another_job_creates_it_first)
    try:
        home = mlflow.set_experiment("make-us-rich-race")
        assert raced and home.name == "make-us-rich-race"
        with mlflow.start_run(experiment_id=home.experiment_id) as run:  # what the trainer does
            pass
        with mlflow.start_run() as plain:  # what it did
            pass
    finally:
        mlflow.set_tracking_uri(before)
    assert run.info.experiment_id == home.experiment_id
    assert plain.info.experiment_id != home.experiment_id  # MLflow's race path: "Default" stays active
