"""Issue 26: the GPU path end to end on one GPU. One pair trained through ``RayFit(use_gpu=True)`` with one
worker (NCCL process group, the model and every collective on ``cuda``), its checkpoint read back by the
driver on the CPU, calibrated and exported to ONNX as :func:`mur.training.driver.finish_training` does, and
the ONNX graph checked against torch. Marker ``gpu``: skipped where ``torch.cuda.is_available()`` is False
(tests/conftest.py), never in the fast tier. It starts a private local Ray (the GPU it finds) and needs no
other service.

    .venv/bin/pytest tests/gpu -m gpu
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mur.settings import Settings

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(900)]
PAIR = "btc_usdt"


@pytest.fixture(scope="module")
def gpu_ray() -> Iterator[float]:
    """A private Ray head on this machine with the GPUs it detects; yields their number."""
    import ray

    ray.init(address="local", num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=True)
    try:
        yield float(ray.cluster_resources().get("GPU", 0.0))
    finally:
        ray.shutdown()


def test_one_pair_trains_on_one_gpu_worker_and_its_onnx_export_matches_torch(
    gpu_ray: float, tmp_path: Path
) -> None:
    from mur.model.export import export_onnx, validate_against_torch
    from mur.training.driver import calibrate, evaluate_onnx, load_candles, prepare
    from mur.training.loop import FitItem
    from mur.training.params import model_config, train_config
    from mur.training.ray_fit import RayFit

    assert gpu_ray >= 1, "Ray sees no GPU although torch does"
    settings = Settings(
        train_days=90, epochs=3, hidden_size=16, num_layers=1, runtime_dir=tmp_path, ray_storage_path=None
    )
    lines: list[str] = []
    fit = RayFit.from_settings(settings, num_workers=1, use_gpu=True, emit=lines.append)
    assert fit.scaling.use_gpu and fit.scaling.num_workers == 1
    candles, _, _ = load_candles(settings, PAIR)
    ds = prepare(settings, candles)
    mcfg, tcfg = model_config(settings), train_config(settings)

    item = FitItem(PAIR, ds.model_arrays("train"), ds.model_arrays("val"), mcfg, tcfg)
    [outcome] = fit.fit_many([item], run_name=f"gpu-{uuid.uuid4().hex[:8]}")
    assert not isinstance(outcome, Exception), outcome

    assert any("use_gpu=True" in line for line in lines)
    assert 1 <= len(outcome.history) <= 3 and outcome.details["num_workers"] == 1
    assert all(str(row["device"]).startswith("cuda") for row in outcome.history), outcome.history
    assert all(math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"]) for row in outcome.history)
    assert all(p.device.type == "cpu" for p in outcome.model.parameters()), "the driver reads it on the CPU"

    x_test = ds.x[ds.split.test]
    wrapper = calibrate(outcome.model, ds)
    onnx_path = export_onnx(wrapper, tmp_path / "model.onnx", x_test[:64])  # raises on a mismatch
    worst = validate_against_torch(onnx_path, wrapper, x_test[:512])  # raises beyond rtol 1e-3
    assert math.isfinite(worst)
    evaluation = evaluate_onnx(onnx_path, ds, mcfg.rnn_len)
    assert math.isfinite(float(evaluation["model"]["mae"])), evaluation["model"]  # type: ignore[index]
