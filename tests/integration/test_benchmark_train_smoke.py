"""``benchmarks/train.py --smoke`` on the stack's Ray head: one pair and a batch of two in one Ray Train run,
in seconds of training, with finite figures, so the training benchmark (epoch compute vs epoch wall, the
epoch overhead ratio, the batch timed end to end) cannot rot."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mur.settings import Settings

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.services, pytest.mark.timeout(900)]


@pytest.mark.service_start
def test_the_training_benchmark_smoke_run_prints_the_epoch_overhead_ratio(
    services: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "train.json"
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/train.py",
            "--smoke",
            "--address",
            f"127.0.0.1:{services.ray.ray_gcs_port}",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ratios = re.findall(r"epoch overhead ratio: ([0-9.]+)", done.stdout)
    assert len(ratios) == 2, done.stdout  # the one-pair run and the batch
    assert all(math.isfinite(float(r)) and float(r) >= 1.0 for r in ratios)
    results = json.loads(out.read_text())
    assert results["smoke"] is True and results["checkpoint_every_epochs"] >= 1
    [single] = results["runs"]
    batch = results["batch"]
    assert single["pairs"] == ["btc_usdt"] and single["num_workers"] == 1
    assert batch["pairs"] == ["btc_usdt", "eth_usdt"] and set(batch["per_pair"]) == set(batch["pairs"])
    for run in (single, batch):
        assert 0 < run["epoch_compute_s"] <= run["epoch_wall_s"] <= run["fit_wall_s"] <= run["end_to_end_s"]
        assert run["epochs_run"] >= len(run["pairs"])
        assert 1 <= run["checkpoints"] <= run["epochs_run"]  # every pair's last epoch at least
