"""One epoch loop (issue 23 #5): the local fit and the Ray Train worker loop run the same
:func:`mur.training.loop.run_epochs`; on one worker the Ray loop trains exactly what the local fit trains, and a
restarted worker group resumes from its checkpoint with the epochs so far.

The Ray worker loop runs in this process with ``ray.train`` stood in for (one worker, no process group):
its reports and checkpoints are recorded, a checkpoint is handed back as a restarted group's.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mur.training.loop import Arrays, LocalFit, TrainConfig, run_epochs


class Stop(Exception):
    """The worker group dies (after the report that raised it)."""


class FakeTrain:
    """``ray.train`` for one worker in this process: reports recorded, checkpoints copied away."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        import ray
        import ray.train
        import ray.train.torch

        self.tmp, self.reports, self.checkpoints = tmp, list[dict[str, Any]](), list[Any]()
        self.resume_from: Any = None
        self.stop_at: tuple[str, int] | None = None
        context = type("Context", (), {"get_world_rank": lambda _s: 0, "get_world_size": lambda _s: 1})()
        monkeypatch.setattr(ray, "get", lambda ref: ref)
        monkeypatch.setattr(ray.train, "get_context", lambda: context)
        monkeypatch.setattr(ray.train, "get_checkpoint", lambda: self.resume_from)
        monkeypatch.setattr(ray.train, "report", self.report)
        monkeypatch.setattr(ray.train.torch, "prepare_model", lambda model: model)
        monkeypatch.setattr(ray.train.torch, "prepare_data_loader", lambda loader: loader)
        monkeypatch.setattr(ray.train.torch, "get_device", lambda: torch.device("cpu"))

    def report(self, metrics: dict[str, Any], checkpoint: Any = None) -> None:
        import ray.train

        self.reports.append(metrics)
        if checkpoint is not None:
            kept = self.tmp / f"checkpoint_{len(self.checkpoints)}"
            shutil.copytree(checkpoint.path, kept)
            self.checkpoints.append(ray.train.Checkpoint.from_directory(str(kept)))
        if self.stop_at == (metrics["name"], metrics["epoch"]):
            raise Stop

    def final(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The last checkpoint's finished items: best weights and outcome (what the driver reads)."""
        from mur.training.ray_fit import CKPT_FILE, load_checkpoint_state

        with self.checkpoints[-1].as_directory() as d:
            state = load_checkpoint_state(Path(d) / CKPT_FILE)
        return state["done"], state["meta"]["done"]


def synthetic() -> tuple[Any, Arrays, Arrays]:
    from test_intervals import synthetic_candles

    from mur.settings import Settings
    from mur.training.driver import prepare
    from mur.training.params import model_config

    settings = Settings(context_len=48, num_layers=1, hidden_size=4)
    ds = prepare(settings, synthetic_candles(700))
    return model_config(settings), ds.model_arrays("train"), ds.model_arrays("val")


def items(mcfg: Any, train: Arrays, val: Arrays, **tcfgs: TrainConfig) -> list[dict[str, Any]]:
    return [
        {
            "name": n,
            "model": mcfg.to_dict(),
            "train": asdict(t),
            "init_weights": None,
            "arrays": (*train, *val),
        }
        for n, t in tcfgs.items()
    ]


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_ray_worker_loop_on_one_worker_trains_what_the_local_fit_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mur.training.ray_fit import train_loop_per_worker

    mcfg, train, val = synthetic()
    cfgs = {
        "a": TrainConfig(epochs=3, batch_size=64, patience=1, learning_rate=1e-2),
        "b": TrainConfig(epochs=2, batch_size=64, patience=3, learning_rate=3e-2, weight_decay=0.01),
        # diverges at once (val loss NaN): the data-fitted start is kept, never the wrecked weights
        "diverged": TrainConfig(epochs=2, batch_size=64, patience=3, learning_rate=5.0),
    }
    fake = FakeTrain(tmp_path, monkeypatch)
    train_loop_per_worker({"items": items(mcfg, train, val, **cfgs), "checkpoint_every": 2})
    states, outcomes = fake.final()
    for name, tcfg in cfgs.items():
        local = LocalFit()(train, val, mcfg, tcfg)
        assert same(states[name], local.model.state_dict()), name
        assert outcomes[name]["best_epoch"] == local.best_epoch
        rows = outcomes[name]["history"]
        assert np.array_equal(
            [r["val_loss"] for r in rows], [r["val_loss"] for r in local.history], equal_nan=True
        )
        assert all(r["checkpointed"] == (r["epoch"] % 2 == 1 or r is rows[-1]) for r in rows), rows
    assert [r["epoch"] for r in fake.reports if r["name"] == "a"] == list(
        range(len(outcomes["a"]["history"]))
    )
    assert outcomes["diverged"]["best_epoch"] == -1 and not np.isfinite(
        outcomes["diverged"]["history"][0]["val_loss"]
    )
    assert all(torch.isfinite(w).all() for w in states["diverged"].values())


def test_a_restarted_worker_group_resumes_at_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group dies after item ``b``'s epoch 1 (checkpointed); the new group skips the finished item ``a``,
    resumes ``b`` at epoch 2 with the history so far, and ends with every epoch once."""
    from mur.training.ray_fit import train_loop_per_worker

    mcfg, train, val = synthetic()
    config = {
        "items": items(
            mcfg,
            train,
            val,
            a=TrainConfig(epochs=1, batch_size=64, patience=5),
            b=TrainConfig(epochs=4, batch_size=64, patience=10, learning_rate=1e-2),
        ),
        "checkpoint_every": 2,
    }
    fake = FakeTrain(tmp_path, monkeypatch)
    fake.stop_at = ("b", 1)
    with pytest.raises(Stop):
        train_loop_per_worker(config)
    done_a = fake.final()[0]["a"]
    fake.stop_at, fake.resume_from, fake.reports = None, fake.checkpoints[-1], []
    train_loop_per_worker(config)
    assert [(r["name"], r["epoch"]) for r in fake.reports] == [("b", 2), ("b", 3)]
    states, outcomes = fake.final()
    assert same(states["a"], done_a)
    assert [r["epoch"] for r in outcomes["b"]["history"]] == list(range(4))
    assert np.isfinite([r["val_loss"] for r in outcomes["b"]["history"]]).all()


def test_the_loop_stops_early_and_keeps_the_best_weights() -> None:
    """A validation loss that gets worse after epoch 0: two more epochs (patience 2), epoch 0's weights."""
    from mur.training.loop import EarlyStopping, Training, snapshot

    model = torch.nn.Linear(2, 1)
    model.loss = lambda out, target: torch.nn.functional.mse_loss(out.squeeze(-1), target)  # the model's loss
    x, y = torch.randn(32, 2), torch.randn(32)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    losses = iter([1.0, 0.5, 0.7, 0.9, 0.1])  # the start, then epochs 0, 1, 2 (stops), never 3
    t = Training(model, torch.optim.SGD(model.parameters(), lr=0.1), EarlyStopping(2), snapshot(model))
    seen: list[tuple[int, bool]] = []
    kept: dict[str, torch.Tensor] = {}

    def on_epoch(t: Training, row: dict[str, Any], last: bool) -> None:
        seen.append((row["epoch"], last))
        if row["epoch"] == 0:
            kept.update(snapshot(t.model))

    run_epochs(
        t, TrainConfig(epochs=10, patience=2), loader, lambda: next(losses), torch.device("cpu"), on_epoch
    )
    assert seen == [(0, False), (1, False), (2, True)]
    assert t.stopper.best_epoch == 0 and same(t.best_state, kept)
    assert [r["best_val_loss"] for r in t.history] == [0.5, 0.5, 0.5]


def test_the_trainer_starts_none_of_ray_trains_unused_actors() -> None:
    """The runs' trainer leaves out the dataset manager and the placement group cleaner (two processes per
    run; the state API test: tests/integration/test_ray_training.py) and keeps every other default callback:
    a Ray upgrade that renames the hook fails here, not silently."""
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    from mur.training.ray_fit import lean_trainer

    def names(trainer_class: type) -> list[str]:
        trainer = trainer_class(lambda config: None, scaling_config=ScalingConfig(num_workers=1))
        return [type(c).__name__ for c in trainer._create_default_callbacks()]

    default, lean = names(TorchTrainer), names(lean_trainer(TorchTrainer))
    assert {"DatasetsCallback", "PlacementGroupCleanerCallback"} <= set(default)
    assert lean == [n for n in default if n not in ("DatasetsCallback", "PlacementGroupCleanerCallback")]


def test_seeding_turns_deterministic_kernels_on_without_importing_inductor() -> None:
    """``seed_everything`` sets torch's deterministic-kernels switch (warnings only, as before) without
    ``torch.use_deterministic_algorithms``'s import of Inductor (~1 CPU-s per training process, unused here)."""
    import subprocess
    import sys

    probe = (
        "import sys, torch\n"
        "from mur.training.loop import seed_everything\n"
        "seed_everything(0)\n"
        "print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),"
        " 'torch._inductor' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.split() == ["True", "True", "False"], out.stdout + out.stderr
