"""Ray jobs → Ray Train (DDP, 2 CPU workers) → ONNX → MLflow registry (Postgres + S3) → promotion gate.

Real services only (started or reused by the ``services`` fixture). Every test uses a private registry
prefix so the developer's own ``mur-*`` models are never touched.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from mur.errors import JobError
from mur.settings import Settings

pytestmark = [pytest.mark.services, pytest.mark.timeout(1500)]

WINDOW_END = "2025-06-01T00:00:00Z"
FAST = {"epochs": 3, "hidden_size": 8}


@pytest.fixture(scope="module")
def job_settings(services: Settings) -> Settings:
    """The running stack's settings with a private registry prefix and a short training window."""
    prefix = f"t{uuid.uuid4().hex[:6]}-mur-"
    return services.model_copy(update={"registry_prefix": prefix, "train_days": 45, "num_layers": 1})


def submit(settings: Settings, pair: str, **kw) -> dict:
    from mur.jobs import submit_training
    from mur.pipeline import parse_time

    lines: list[str] = []
    result = submit_training(
        settings,
        pair,
        end=parse_time(kw.pop("end", WINDOW_END)),
        num_workers=kw.pop("num_workers", 2),
        log=lines.append,
        timeout_s=900,
        **kw,
    )
    result["_logs"] = lines
    return result


@pytest.fixture(scope="module")
def first_job(job_settings: Settings) -> dict:
    return submit(job_settings, "btc_usdt", **FAST)


def test_first_job_registers_a_champion(first_job: dict, job_settings: Settings) -> None:
    from mur.registry import CHAMPION, configure, model_name

    assert first_job["version"] == 1
    assert first_job["alias"] == CHAMPION
    assert "first model" in first_job["reason"]
    assert any("gate:" in line for line in first_job["_logs"]), "gate decision must be in the job log"
    client = configure(job_settings)
    v = client.get_model_version_by_alias(model_name("btc_usdt", job_settings.registry_prefix), CHAMPION)
    assert v.version == "1"
    assert v.tags["data_window_end"] == WINDOW_END
    assert v.tags["gate_alias"] == CHAMPION
    run = client.get_run(v.run_id)
    assert run.data.tags["git_commit"] and run.data.params["num_workers"] == "2"
    assert {"model_mae", "persistence_mae", "linear_mae", "skill"} <= set(run.data.metrics)
    assert len(client.get_metric_history(v.run_id, "val_loss")) >= 1  # per-epoch metrics


def test_champion_loads_from_registry_and_reproduces_logged_mae(
    first_job: dict, job_settings: Settings
) -> None:
    import mlflow.onnx

    from mur.export import load_session, run_session
    from mur.pipeline import load_candles, parse_time, prepare
    from mur.registry import champion_uri, configure

    configure(job_settings)
    model = mlflow.onnx.load_model(champion_uri("btc_usdt", job_settings.registry_prefix))
    session = load_session(model.SerializeToString())
    candles, _, _ = load_candles(job_settings, "btc_usdt", end=parse_time(WINDOW_END))
    ds = prepare(job_settings, candles)
    x, y = ds.x[ds.split.test], ds.y[ds.split.test]
    mae = float(np.mean(np.abs(run_session(session, x) - y)))
    assert mae == pytest.approx(first_job["metrics"]["model"]["mae"], rel=1e-6)


def test_artifacts_live_in_the_s3_bucket(first_job: dict, job_settings: Settings) -> None:
    from urllib.parse import urlparse

    from minio import Minio

    url = urlparse(job_settings.s3_endpoint_url)
    client = Minio(
        url.netloc, job_settings.s3_access_key, job_settings.s3_secret_key, secure=url.scheme == "https"
    )
    keys = [o.object_name for o in client.list_objects(job_settings.s3_bucket, recursive=True)]
    from mur.registry import configure, model_name

    version = configure(job_settings).get_model_version(
        model_name("btc_usdt", job_settings.registry_prefix), str(first_job["version"])
    )
    model_id = version.source.rsplit("/", 1)[-1]  # MLflow 3: models:/m-<id>, stored under models/m-<id>/
    assert any(model_id in k and k.endswith("model.onnx") for k in keys), keys[:20]
    assert any(first_job["run_id"] in k and k.endswith("feature_spec.json") for k in keys)


def test_worse_model_becomes_challenger_with_reason(first_job: dict, job_settings: Settings) -> None:
    from mur.registry import CHALLENGER, CHAMPION, configure, model_name

    # a deliberately bad model: one epoch at a learning rate that wrecks the weights
    worse = submit(job_settings, "btc_usdt", epochs=1, hidden_size=2, num_workers=1, learning_rate=5.0)
    assert worse["version"] == 2
    assert worse["alias"] == CHALLENGER, worse["reason"]
    assert "champion MAE" in worse["reason"] or "below the floor" in worse["reason"]
    client = configure(job_settings)
    name = model_name("btc_usdt", job_settings.registry_prefix)
    assert client.get_model_version_by_alias(name, CHAMPION).version == "1"
    assert client.get_model_version(name, "2").tags["gate_reason"] == worse["reason"]


def test_same_window_is_reused_not_retrained(first_job: dict, job_settings: Settings) -> None:
    again = submit(job_settings, "btc_usdt", **FAST)
    assert again["version"] == first_job["version"] and again.get("reused") is True


def test_worker_failure_resumes_from_checkpoint(job_settings: Settings) -> None:
    result = submit(job_settings, "eth_usdt", fail_at_epoch=2, no_reuse=True, **FAST)
    logs = "\n".join(result["_logs"])
    assert "injected failure at epoch 2" in logs
    assert "resumed from checkpoint at epoch 1" in logs
    assert result["version"] >= 1 and result["alias"] in ("champion", "challenger")


@pytest.mark.parametrize(
    ("pair", "end", "message"),
    [("doge_usdt", WINDOW_END, "doge"), ("btc_usdt", "2020-01-01T00:00:00Z", "no candles")],
)
def test_bad_inputs_fail_with_the_jobs_error(
    job_settings: Settings, pair: str, end: str, message: str
) -> None:
    with pytest.raises(JobError, match=message):
        submit(job_settings, pair, end=end, **FAST)


def test_unreachable_ray_is_a_clear_error(job_settings: Settings) -> None:
    from mur.jobs import submit_training

    dead = job_settings.model_copy(update={"ray_address": "http://127.0.0.1:1"})
    with pytest.raises(JobError, match="cannot reach the Ray head"):
        submit_training(dead, "btc_usdt", stream_logs=False)
