"""Ray jobs → Ray Train (DDP, 2 CPU workers) → ONNX → MLflow registry (Postgres + S3) → promotion gate.

Real services only (started or reused by the ``services`` fixture). Every test uses a private registry
prefix so the developer's own ``mur-*`` models are never touched.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import numpy as np
import pytest
from ray_checkpoints import RAY_TRAIN_SNAPSHOT, registered_checkpoint

from mur.contracts import MetricsDocument, TrainingResult
from mur.errors import JobError
from mur.settings import Settings
from mur.training.loop import LocalFit

pytestmark = [pytest.mark.services, pytest.mark.timeout(1500)]

WINDOW_END = "2025-06-01T00:00:00Z"
FAST = {"epochs": 3, "hidden_size": 8}


@pytest.fixture(scope="module")
def job_settings(services: Settings) -> Settings:
    """The running stack's settings with a private registry prefix and a short training window."""
    prefix = f"t{uuid.uuid4().hex[:6]}-mur-"
    return services.replace(registry_prefix=prefix, train_days=60, num_layers=1)


class Submitted(NamedTuple):
    """A job's parsed result line and the log lines it streamed."""

    result: TrainingResult
    logs: list[str]


def submit(settings: Settings, pair: str, lines: list[str] | None = None, **kw: object) -> Submitted:
    """Submit a training job and follow it; its log lines are appended to ``lines`` as they come."""
    from mur.orchestration.job_submission import submit_training
    from mur.timeutil import parse_time

    lines = [] if lines is None else lines
    result = submit_training(
        settings,
        pair,
        end=parse_time(str(kw.pop("end", WINDOW_END))),
        num_workers=int(str(kw.pop("num_workers", 2))),
        log=lines.append,
        timeout_s=900,
        **kw,
    )
    return Submitted(result, lines)


@pytest.fixture(scope="module")
def first_job(job_settings: Settings) -> Submitted:
    return submit(job_settings, "btc_usdt", **FAST)


@pytest.mark.service_start
def test_first_job_registers_a_champion(first_job: Submitted, job_settings: Settings) -> None:
    from mur.registry import CHAMPION, configure, model_name

    result = first_job.result
    assert result.version == 1 and result.job_id
    assert result.alias == CHAMPION
    assert "first qualifying version" in result.reason and result.gate_rule == "first"
    assert any("gate:" in line for line in first_job.logs), "gate decision must be in the job log"
    client = configure(job_settings)
    v = client.get_model_version_by_alias(
        model_name("btc_usdt", job_settings.registry.registry_prefix), CHAMPION
    )
    assert v.version == "1"
    assert v.tags["data_window_end"] == WINDOW_END
    assert v.tags["gate_alias"] == CHAMPION
    run = client.get_run(v.run_id)
    assert run.data.tags["git_commit"] and run.data.params["num_workers"] == "2"
    from datetime import datetime

    assert run.data.tags["market_time"] == v.tags["market_time"]  # MLflow's own times are wall-clock
    assert datetime.fromisoformat(v.tags["market_time"]).tzinfo is not None
    assert {"model_mae", "persistence_mae", "linear_mae", "skill"} <= set(run.data.metrics)
    assert len(client.get_metric_history(v.run_id, "val_loss")) >= 1  # per-epoch metrics
    # one metrics document: the job's result line, the run's metrics.json and the version's tags agree
    import mlflow

    logged = MetricsDocument.model_validate(mlflow.artifacts.load_dict(f"runs:/{v.run_id}/metrics.json"))
    assert logged == result.metrics and logged.num_workers == 2 and logged.epochs_run == 3
    from_tags = MetricsDocument.from_version_tags(v.tags)
    assert from_tags is not None and from_tags.model == logged.model and from_tags.skill == logged.skill


def test_champion_loads_from_registry_and_reproduces_logged_mae(
    first_job: Submitted, job_settings: Settings
) -> None:
    import mlflow.onnx

    from mur.model.export import load_session, run_session
    from mur.registry import CHAMPION, configure, model_name
    from mur.timeutil import parse_time
    from mur.training.driver import load_candles, prepare

    configure(job_settings)
    name = model_name("btc_usdt", job_settings.registry.registry_prefix)
    model = mlflow.onnx.load_model(f"models:/{name}@{CHAMPION}")
    session = load_session(model.SerializeToString())
    candles, _, _ = load_candles(job_settings, "btc_usdt", end=parse_time(WINDOW_END))
    ds = prepare(job_settings, candles)
    x, y = ds.x[ds.split.test], ds.y[ds.split.test]
    mae = float(np.mean(np.abs(run_session(session, x) - y)))
    assert first_job.result.metrics is not None
    assert mae == pytest.approx(first_job.result.metrics.model.mae, rel=1e-6)


def test_artifacts_live_in_the_s3_bucket(first_job: Submitted, job_settings: Settings) -> None:
    from urllib.parse import urlparse

    from minio import Minio

    url = urlparse(job_settings.registry.s3_endpoint_url)
    client = Minio(
        url.netloc,
        job_settings.registry.s3_access_key,
        job_settings.registry.s3_secret_key,
        secure=url.scheme == "https",
    )
    keys = [o.object_name for o in client.list_objects(job_settings.registry.s3_bucket, recursive=True)]
    from mur.registry import configure, model_name

    version = configure(job_settings).get_model_version(
        model_name("btc_usdt", job_settings.registry.registry_prefix), str(first_job.result.version)
    )
    model_id = version.source.rsplit("/", 1)[-1]  # MLflow 3: models:/m-<id>, stored under models/m-<id>/
    assert any(model_id in k and k.endswith("model.onnx") for k in keys), keys[:20]
    assert any(str(first_job.result.run_id) in k and k.endswith("feature_spec.json") for k in keys)


class SabotagedFit(LocalFit):
    """The local fit, then the median pushed one spread above the last close: a model known to be worse than
    persistence, registered through the same driver, registry and gate as every training."""

    def key_params(self) -> dict:
        return {"trainer": "sabotaged"}

    def __call__(self, train, val, mcfg, tcfg, *, init_weights=None):  # type: ignore[no-untyped-def]
        import torch

        outcome = super().__call__(train, val, mcfg, tcfg, init_weights=init_weights)
        with torch.no_grad():
            outcome.model.head.bias[: len(mcfg.horizons)] = 1.0
        return outcome


def test_worse_model_becomes_challenger_with_reason(first_job: Submitted, job_settings: Settings) -> None:
    from mur.registry import CHALLENGER, CHAMPION, configure, model_name
    from mur.timeutil import parse_time
    from mur.training.driver import train_and_register

    worse = train_and_register(
        job_settings, "btc_usdt", fit=SabotagedFit(), end=parse_time(WINDOW_END), epochs=1, hidden_size=4
    )
    assert worse.version == 2 and worse.metrics is not None and worse.metrics.skill < 0
    assert worse.alias == CHALLENGER, worse.reason
    assert worse.gate_rule in ("persistence", "interval", "floor", "coverage", "point-guard"), worse.reason
    client = configure(job_settings)
    name = model_name("btc_usdt", job_settings.registry.registry_prefix)
    assert client.get_model_version_by_alias(name, CHAMPION).version == "1"
    tags = client.get_model_version(name, "2").tags
    assert tags["gate_reason"] == worse.reason and tags["gate_rule"] == worse.gate_rule
    assert tags["kind"] == "manual" and tags["as_of"] == worse.data_window.end
    assert 0 <= float(tags["dm_p_worse"]) < 0.05


def test_a_diverged_training_never_registers_broken_weights(
    first_job: Submitted, job_settings: Settings
) -> None:
    """A learning rate that wrecks the weights: the driver still exports a finite, valid model (the best weights
    seen, at worst the data-fitted start) and the gate decides on its real scores. The fit runs in this
    process: the Ray worker loop keeps the same weights of a diverged item (tests/unit/test_epoch_loop.py)."""
    from mur.timeutil import parse_time
    from mur.training.driver import train_and_register

    diverged = train_and_register(
        job_settings, "btc_usdt", fit=LocalFit(), end=parse_time(WINDOW_END), epochs=2, hidden_size=2,
        learning_rate=5.0,
    )  # fmt: skip
    assert diverged.version is not None and diverged.metrics is not None, diverged.error
    doc = diverged.metrics
    assert np.isfinite([doc.model.mae, doc.skill]).all() and doc.horizons is not None
    assert all(0 < h.interval.coverage <= 1 for h in doc.horizons)
    assert diverged.gate_rule and diverged.reason


def test_same_window_is_reused_not_retrained(first_job: Submitted, job_settings: Settings) -> None:
    again = submit(job_settings, "btc_usdt", **FAST).result
    assert again.version == first_job.result.version and again.reused is True
    assert again.metrics is not None and first_job.result.metrics is not None
    assert again.metrics.model == first_job.result.metrics.model  # rebuilt from the version's tags


def actors(settings: Settings, class_name: str, **state: str) -> list[dict[str, object]]:
    """This cluster's actors of ``class_name`` (the state API, with the token; ``state="ALIVE"`` the live ones
    only): never another stack's on the same machine."""
    keys, values = ["class_name", *state], [class_name, *state.values()]
    response = httpx.get(
        settings.ray.ray_address.rstrip("/") + "/api/v0/actors",
        params={
            "detail": "true",
            "filter_keys": keys,
            "filter_predicates": ["="] * len(keys),
            "filter_values": values,
        },
        headers=settings.ray.headers(),
        timeout=10,
    )
    response.raise_for_status()
    return list(response.json()["data"]["result"]["result"])


def test_a_training_run_starts_only_the_actors_it_uses(first_job: Submitted, job_settings: Settings) -> None:
    """No actor a run here never uses: Ray Train's preemption watcher is off on the local stack (no spot node on
    one machine, ``devstack.services.RAY_ONE_MACHINE``), the trainer leaves out the dataset manager and the
    placement group cleaner (``mur.training.ray_fit.lean_trainer``)."""
    from mur.orchestration.job_submission import client_for

    assert first_job.result.job_id is not None
    job = str(client_for(job_settings).get_job_info(first_job.result.job_id).job_id)  # this run's: a reused
    assert actors(job_settings, "TrainController", job_id=job), "the state API lists the run's controller"
    for unused in ("PreemptionWatcher", "DatasetManager", "PlacementGroupCleaner"):  # stack keeps older ones
        assert actors(job_settings, unused, job_id=job) == [], unused


def train_worker_pids(settings: Settings) -> list[int]:
    """This cluster's Ray Train worker processes alive now (the state API, with the token): never another
    stack's on the same machine."""
    return [int(str(r["pid"])) for r in actors(settings, "RayTrainWorker", state="ALIVE") if r.get("pid")]


def test_a_killed_worker_resumes_from_checkpoint(job_settings: Settings, tmp_path: Path) -> None:
    """A Ray Train worker killed (SIGKILL) once the run's first checkpoint is written: Ray Train restarts the
    worker group, which resumes from the checkpoint with the epochs so far, and the job still registers."""
    from mur.waiting import wait_until

    storage = tmp_path / "ray-results"  # the run's own: its first checkpoint is this test's signal
    settings = job_settings.replace(ray_storage_path=str(storage), patience=1000)
    epochs, outcome, lines = 20, dict[str, Any](), list[str]()  # killed after epoch 2-4 (seen: 3)

    def run() -> None:
        try:
            outcome["job"] = submit(
                settings, "eth_usdt", lines, no_reuse=True, epochs=epochs, hidden_size=8, poll_s=0.5
            )
        except Exception as exc:  # reported below
            outcome["error"] = exc

    def this_runs_workers() -> list[int]:  # alive, and printing into this job's log (not a stale group's)
        printing = set(re.findall(r"RayTrainWorker pid=(\d+)", "\n".join(list(lines))))
        return [pid for pid in train_worker_pids(settings) if str(pid) in printing]

    job = threading.Thread(target=run, daemon=True)
    job.start()
    wait_until(  # registered by Ray Train's controller, not only written: else a restart starts afresh
        lambda: (
            any(registered_checkpoint(p.read_text()) for p in storage.rglob(RAY_TRAIN_SNAPSHOT))
            or not job.is_alive()
        ),
        what="the run's first registered checkpoint",
        timeout_s=600,
    )
    pids = wait_until(
        lambda: this_runs_workers() or not job.is_alive(), what="this run's workers", timeout_s=60
    )
    assert job.is_alive(), f"the training ended before a worker could be killed: {outcome}"
    os.kill(pids[0], signal.SIGKILL)
    job.join(timeout=900)
    assert not job.is_alive() and "error" not in outcome, outcome.get("error")
    result, logs = outcome["job"]
    resumed = re.search(r"resumed from checkpoint at epoch (\d+)", "\n".join(logs))
    assert resumed and 1 <= int(resumed.group(1)) < epochs - 1, (pids, logs[-20:])
    assert result.metrics is not None and result.metrics.epochs_run == epochs  # none lost, none twice
    assert result.version is not None and result.version >= 1
    assert result.alias in ("champion", "challenger")
    assert not list(storage.iterdir()), "a finished run's checkpoints are removed"


def test_local_fit_registers_through_the_same_driver(job_settings: Settings) -> None:
    """``train_and_register`` with the local fit: same registry path, own idempotency key (trainer=local)."""
    from mur.registry import CHAMPION
    from mur.timeutil import parse_time
    from mur.training.driver import train_and_register
    from mur.training.loop import LocalFit

    settings = job_settings.replace(train_days=60)
    end = parse_time(WINDOW_END)
    first = train_and_register(settings, "xrp_usdt", fit=LocalFit(), end=end, epochs=1, hidden_size=4)
    assert first.version == 1 and first.alias == CHAMPION and not first.reused
    assert first.metrics is not None and first.metrics.num_workers is None and first.metrics.epochs_run == 1
    again = train_and_register(
        settings, "xrp_usdt", fit=LocalFit(), end=end, reuse_existing=True, epochs=1, hidden_size=4
    )
    assert again.version == 1 and again.reused


def test_an_hourly_run_warm_starts_from_the_champion_and_a_backfill_never_does(
    job_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 15: a scheduled run fine-tunes the champion's recurrent weights (fewer epochs); a backfill, a
    window whose test span the champion trained on, and a lineage whose last full training is too old train
    fully; the choice is on the version's tags and the weights artefact is plain arrays. A warm start leaves
    no copy of the weights in the temp dir."""
    import tempfile
    from datetime import timedelta

    import mlflow

    from mur.registry.client import configure
    from mur.registry.names import WEIGHTS_ARTIFACT
    from mur.timeutil import parse_time
    from mur.training.driver import train_and_register
    from mur.training.loop import LocalFit
    from mur.training.warm_start import load_weights

    settings = job_settings.replace(warm_start_epochs=2, full_retrain_hours=24)
    client = configure(settings)
    pair, end = "sol_usdt", parse_time(WINDOW_END)
    assert end is not None

    def run(at: timedelta, kind: str) -> dict[str, str]:
        result = train_and_register(
            settings, pair, fit=LocalFit(), end=end + at, kind=kind, epochs=6, patience=10, hidden_size=4
        )
        version = client.get_model_version(result.model_name, str(result.version))
        return {**version.tags, "epochs_run": str(result.metrics.epochs_run), "run_id": version.run_id}

    first = run(timedelta(0), "scheduled")
    assert first["training_mode"] == "full" and "no champion" in first["training_reason"]
    assert first["full_window_end"] == first["data_window_end"] and first["epochs_run"] == "6"
    weights = mlflow.artifacts.download_artifacts(
        run_id=first["run_id"], artifact_path=WEIGHTS_ARTIFACT, dst_path=str(tmp_path)
    )
    arrays = load_weights(weights)  # np.load(allow_pickle=False): no pickle in the artefact
    assert arrays and all(k.startswith(("rnn.", "head.")) for k in arrays)
    # the start of the lineage is the champion whatever the gate said of a 6-epoch model (setup, not a check)
    client.set_registered_model_alias(f"{settings.registry.registry_prefix}{pair}", "champion", "1")

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # the warm start's download goes there, then away
    hourly = run(timedelta(hours=1), "scheduled")
    assert hourly["training_mode"] == "warm", hourly["training_reason"]
    assert not list(temp.rglob(WEIGHTS_ARTIFACT)), sorted(map(str, temp.rglob("*")))
    assert hourly["warm_start_from"] == "1" and hourly["full_window_end"] == first["data_window_end"]
    assert int(hourly["epochs_run"]) <= 2

    backfill = run(timedelta(days=-3), "backfill")
    assert backfill["training_mode"] == "full" and "backfill" in backfill["training_reason"]
    older = run(timedelta(days=-3), "scheduled")  # the champion saw this window's test span
    assert older["training_mode"] == "full" and "inside this test span" in older["training_reason"]
    later = run(timedelta(hours=25), "scheduled")
    assert later["training_mode"] == "full" and "MUR_FULL_RETRAIN_HOURS" in later["training_reason"]


def test_bad_inputs_fail_with_the_jobs_error(job_settings: Settings) -> None:
    """A job whose driver fails: its error is the JobError's message. (An unknown pair fails in the driver as
    well: the batch test below shows its reason, one Ray job fewer here.)"""
    with pytest.raises(JobError, match="no candles"):
        submit(job_settings, "btc_usdt", end="2020-01-01T00:00:00Z", **FAST)


def test_unreachable_ray_is_a_clear_error(job_settings: Settings) -> None:
    from mur.orchestration.job_submission import submit_training

    dead = job_settings.replace(ray_address="http://127.0.0.1:1")
    with pytest.raises(JobError, match="cannot reach the Ray head"):
        submit_training(dead, "btc_usdt", stream_logs=False)


def test_admin_page_lists_versions_with_the_gate_decision(
    job_settings: Settings, pg_database_factory: Callable[..., Settings]
) -> None:
    """The admin page's versions table reads the registry: kind, out-of-sample skill, p-values, rule, reason."""
    import json
    from types import SimpleNamespace

    from dash_app.pages.admin import versions_block
    from mur.data.catalogue import pair_catalogue
    from mur.db import Database
    from mur.timeutil import parse_time
    from mur.training.driver import train_and_register
    from mur.training.loop import LocalFit

    settings = job_settings.replace(train_days=30, pairs=["xrp_usdt"])
    result = train_and_register(
        settings,
        "xrp_usdt",
        fit=LocalFit(),
        end=parse_time(WINDOW_END),
        epochs=1,
        hidden_size=4,
        kind="manual",
    )
    # the page lists the pair catalogue (configured + added by an admin): a migrated database of its own
    db = Database(pg_database_factory(), maxconn=1)
    try:  # DashboardContext.pairs(): the catalogue
        block = versions_block(
            SimpleNamespace(settings=settings, db=db, pairs=lambda: pair_catalogue(settings, db))
        )
    finally:
        db.close()
    html = json.dumps(block.to_plotly_json(), default=str)
    assert f"v{result.version}" in html and "manual" in html and result.reason in html
    assert result.gate_rule and result.gate_rule in html and "DM p worse / better" in html


def test_a_batch_job_trains_its_pairs_on_one_worker_group_and_a_bad_pair_fails_alone(
    job_settings: Settings,
) -> None:
    """Issue 15 #3: ``ray_jobs.train_pair --pairs`` trains every pair of the batch in one Ray Train run (the
    worker group starts once, the same worker processes train each pair); an unknown pair fails alone."""
    from mur.orchestration.job_submission import submit_batch
    from mur.registry import configure, model_name
    from mur.timeutil import parse_time

    lines: list[str] = []
    results = submit_batch(
        job_settings,
        ["sol_usdt", "nope_usdt", "bnb_usdt"],
        end=parse_time("2025-04-01T00:00:00Z"),
        num_workers=2,
        log=lines.append,
        timeout_s=900,
        epochs=2,
        hidden_size=8,
    )
    assert list(results) == ["sol_usdt", "nope_usdt", "bnb_usdt"]
    assert not results["nope_usdt"].ok and "unknown pair" in (results["nope_usdt"].error or "")
    client = configure(job_settings)
    for pair in ("sol_usdt", "bnb_usdt"):
        result = results[pair]
        assert result.ok and result.version and result.job_id and not result.reused, result
        assert result.metrics is not None and result.metrics.epochs_run == 2
        assert result.metrics.model_extra and result.metrics.model_extra["batch_size"] == 2
        version = client.get_model_version(
            model_name(pair, job_settings.registry.registry_prefix), str(result.version)
        )
        assert len(client.get_metric_history(version.run_id, "val_loss")) == 2  # its own epochs only
    assert sum("Started training worker group" in line for line in lines) == 1, "one worker group per batch"
    assert any("fitting 2 pair(s) in one run: sol_usdt, bnb_usdt" in line for line in lines)
