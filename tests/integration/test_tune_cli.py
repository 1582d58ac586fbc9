"""``mur tune`` as a user runs it, on the bundled candles with 3 tiny trials and the real MLflow (the shared
services) and PostgreSQL (a private database): it prints the confirmation-span comparison, logs a parent run
with one child run per trial, stores the configuration as version 1, and ``mur train --tuned`` then trains
that configuration. A rerun of the same command restores the finished search: no new trials, no new
version. Ray Tune starts its own local Ray (no dashboard, a free GCS port) beside the stack's, as on a laptop:
without the test stack's Ray token in the environment, behind a token of its own that nothing writes to disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from mur.db import Database
from mur.db.model_configs import config_history
from mur.settings import Settings

pytestmark = [pytest.mark.services, pytest.mark.timeout(1800)]
TINY = {"MUR_EPOCHS": "1", "MUR_TRAIN_DAYS": "30"}


STACK_RAY = ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
"""The test stack's Ray settings: ``mur tune`` runs without them, as on a laptop (its private Ray makes its own)."""


def _mur(env: dict[str, str], *args: str, unset: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mur.cli", *args],
        capture_output=True,
        text=True,
        timeout=1200,
        env={**{k: v for k, v in os.environ.items() if k not in unset}, **env},
    )


@pytest.mark.service_start
def test_mur_tune_logs_trials_stores_a_config_and_mur_train_uses_it(
    services: Settings, pg_database_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    import mlflow

    from mur.registry.client import configure

    db_settings = pg_database_factory()
    (tmp_path / "home").mkdir()
    experiment = f"tune-test-{uuid.uuid4().hex[:8]}"
    env = {
        **TINY,
        "MUR_PG_DATABASE": db_settings.db.pg_database,
        "MUR_RUNTIME_DIR": str(tmp_path / "runtime"),
        "MUR_MLFLOW_EXPERIMENT": experiment,
        "HOME": str(tmp_path / "home"),
    }
    tune_args = ["tune", "btc_usdt", "--trials", "3", "--folds", "2", "--fold-hours", "48"]
    tune_args += ["--confirm-hours", "72", "--train-days", "30", "--epochs", "1", "--activate", "always"]
    proc = _mur(env, *tune_args, unset=STACK_RAY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # its private Ray ran behind a token of the process, not one Ray generated and left in ~/.ray
    assert not (tmp_path / "home" / ".ray" / "auth_token").exists()
    assert "Confirmation span 2025-12-29T00:00:00Z .. 2026-01-01T00:00:00Z" in proc.stdout
    assert "gain ± s.e." in proc.stdout and "model configuration btc_usdt v1: ACTIVE" in proc.stdout

    with Database(db_settings, maxconn=1) as db:
        (stored,) = config_history(db, "btc_usdt")
    assert stored.active and stored.mlflow_run_id and stored.evidence["trials"] == 3
    assert stored.evidence["confirmation"]["n"] == 72 - 23

    client = configure(services)  # with the stack's trainer account (MLflow answers accounts only)
    exp = client.get_experiment_by_name(f"{experiment}-tuning")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("kind") == "tuning"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == stored.mlflow_run_id]
    assert [p.info.run_id for p in parents] == [stored.mlflow_run_id]
    assert len(children) == 3 and sum(c.data.tags["chosen"] == "true" for c in children) == 1
    assert all(c.data.params["arch"] in ("lstm", "gru") for c in children)
    assert "confirm_winkler_gain" in parents[0].data.metrics
    mlflow.set_tracking_uri(services.registry.mlflow_tracking_uri)
    logged = mlflow.artifacts.load_dict(f"runs:/{stored.mlflow_run_id}/tuning.json")
    assert logged["chosen"] == stored.config

    # mur train --tuned trains the stored configuration, whatever the settings' own defaults say
    other = {**env, "MUR_ARCH": "gru" if stored.config["arch"] == "lstm" else "lstm"}
    common = ["train", "btc_usdt", "--end", "2025-06-01T00:00:00Z"]
    tuned = _mur(other, *common, "--tuned", "--out", str(tmp_path / "tuned"))
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    plain = _mur(other, *common, "--out", str(tmp_path / "plain"))
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert json.loads((tmp_path / "tuned" / "metrics.json").read_text())["arch"] == stored.config["arch"]
    assert json.loads((tmp_path / "plain" / "metrics.json").read_text())["arch"] == other["MUR_ARCH"]

    # the finished search is restored: same result, nothing new stored
    again = _mur(env, *tune_args, unset=STACK_RAY)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming" in again.stderr and "model configuration btc_usdt v1:" in again.stdout
    with Database(db_settings, maxconn=1) as db:
        assert len(config_history(db, "btc_usdt")) == 1
    assert len(client.search_runs([exp.experiment_id], "tags.kind = 'tuning'")) == 1
