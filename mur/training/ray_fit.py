"""Distributed training with Ray Train (DDP): the driver builds configs; the worker loop only trains.

Ray-specific lines are marked ``# [ray]``. The worker loop reads everything from its ``config`` dict (arrays
prepared by the driver, hyper-parameters) and does no I/O set-up of its own; checkpoints hold the model and
optimizer state plus early-stopping state so that a restarted worker group resumes where it stopped.
Same code on CPU (gloo) and GPU (NCCL): only ``use_gpu`` changes. :class:`RayFit` is this module's fit step
for :func:`mur.training.driver.train_and_register` (the Ray job passes it in; this module never imports the
driver).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mur.model.network import ModelConfig
from mur.training.loop import Arrays, FitOutcome, TrainConfig

if TYPE_CHECKING:
    from mur.settings import Settings

log = logging.getLogger(__name__)
CKPT_FILE = "state.pt"
META_FILE = "meta.json"


@dataclass(frozen=True)
class ScalingSettings:
    """How many workers and what each gets."""

    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP wrapper (``prepare_model`` wraps only with more than one worker)."""
    inner = getattr(model, "module", model)
    return inner if isinstance(inner, torch.nn.Module) else model


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Per-worker loop: DDP model, sharded loader, per-epoch report + checkpoint, early stopping."""
    import copy

    import ray.train  # [ray]
    import ray.train.torch  # [ray]
    import torch
    import torch.distributed as dist

    from mur.model.network import build_model
    from mur.training.loop import (
        EarlyStopping,
        eval_loss,
        init_from_data,
        make_loader,
        seed_everything,
        train_epoch,
    )
    from mur.training.warm_start import apply_weights

    mcfg = ModelConfig(**config["model"])
    tcfg = TrainConfig(**config["train"])
    seed_everything(tcfg.seed)
    model: torch.nn.Module = build_model(mcfg, seed=tcfg.seed)
    init_from_data(model, (config["x_train"], config["y_train"]))  # same start on every worker
    apply_weights(model, config.get("init_weights"))  # a warm start: the champion's recurrent correction
    optimizer = torch.optim.Adam(model.parameters(), lr=tcfg.learning_rate)
    stopper = EarlyStopping(tcfg.patience)
    best_state = copy.deepcopy(model.state_dict())
    start_epoch = 0

    checkpoint = ray.train.get_checkpoint()  # [ray] set when restoring after a failure
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / CKPT_FILE, weights_only=True)
            meta = json.loads((Path(d) / META_FILE).read_text())
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        best_state = state["best_model"]
        stopper = EarlyStopping(tcfg.patience, meta["best_loss"], meta["best_epoch"], meta["bad_epochs"])
        start_epoch = meta["epoch"] + 1
        print(
            f"[worker {ray.train.get_context().get_world_rank()}] resumed from checkpoint at epoch {meta['epoch']}"
        )

    model = ray.train.torch.prepare_model(model)  # [ray] DDP + device placement
    train_loader = ray.train.torch.prepare_data_loader(  # [ray] DistributedSampler
        make_loader(config["x_train"], config["y_train"], tcfg.batch_size, shuffle=True, seed=tcfg.seed)
    )
    val_loader = make_loader(config["x_val"], config["y_val"], tcfg.batch_size, shuffle=False)
    device = ray.train.torch.get_device()  # [ray]
    rank = ray.train.get_context().get_world_rank()  # [ray]
    fail_at = config.get("fail_at_epoch")
    if checkpoint is None:  # the data-fitted start is a candidate too (epoch -1), as in fit_local
        start_val = torch.tensor(eval_loss(model, val_loader, device), dtype=torch.float64)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(start_val)
            start_val /= dist.get_world_size()
        stopper.step(-1, float(start_val))

    for epoch in range(start_epoch, tcfg.epochs):
        if fail_at is not None and epoch == fail_at and checkpoint is None and rank == 0:
            raise RuntimeError(f"injected failure at epoch {epoch} (fault-tolerance test)")
        if hasattr(train_loader, "sampler") and hasattr(train_loader.sampler, "set_epoch"):
            train_loader.sampler.set_epoch(epoch)
        started = time.perf_counter()
        train_loss = train_epoch(model, train_loader, optimizer, device)
        val = torch.tensor(eval_loss(model, val_loader, device), dtype=torch.float64)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(val)  # identical decision on every worker
            val /= dist.get_world_size()
        val_loss = float(val)
        raw = unwrap(model)
        if stopper.step(epoch, val_loss):
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in raw.state_dict().items()})
        metrics = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "best_val_loss": stopper.best_loss,
            "best_epoch": stopper.best_epoch,
            "epoch_seconds": time.perf_counter() - started,
            "samples": len(config["y_train"]),
        }
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                torch.save(
                    {
                        "model": raw.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "best_model": best_state,
                    },
                    Path(tmp) / CKPT_FILE,
                )
                meta = {
                    "epoch": epoch,
                    "best_loss": stopper.best_loss,
                    "best_epoch": stopper.best_epoch,
                    "bad_epochs": stopper.bad_epochs,
                }
                (Path(tmp) / META_FILE).write_text(json.dumps(meta))
                ckpt = ray.train.Checkpoint.from_directory(tmp)  # [ray]
            ray.train.report(metrics, checkpoint=ckpt)  # [ray] a barrier across workers
        if stopper.should_stop:
            break


@dataclass
class TrainOutcome:
    """What the driver gets back: best weights and the per-epoch history."""

    best_state: dict[str, Any]
    history: list[dict[str, Any]]
    best_epoch: int
    wall_seconds: float


def run_distributed(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    mcfg: ModelConfig,
    tcfg: TrainConfig,
    scaling: ScalingSettings,
    storage_path: str,
    run_name: str,
    max_failures: int = 2,
    fail_at_epoch: int | None = None,
    storage_filesystem: Any = None,
    init_weights: dict[str, np.ndarray] | None = None,
) -> TrainOutcome:
    """Driver: build Ray Train configs, run ``TorchTrainer.fit`` and load the best checkpoint's weights."""
    import torch
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig  # [ray]
    from ray.train.torch import TorchConfig, TorchTrainer  # [ray]

    resources = {"CPU": scaling.cpus_per_worker}
    if scaling.use_gpu:
        resources["GPU"] = scaling.gpus_per_worker
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "model": mcfg.to_dict(),
            "train": asdict(tcfg),
            "x_train": train[0],
            "y_train": train[1],
            "x_val": val[0],
            "y_val": val[1],
            "fail_at_epoch": fail_at_epoch,
            "init_weights": init_weights,
        },
        torch_config=TorchConfig(backend="nccl" if scaling.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=scaling.num_workers, use_gpu=scaling.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path,
            storage_filesystem=storage_filesystem,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(
                checkpoint_score_attribute="val_loss", checkpoint_score_order="min"
            ),
        ),
    )
    started = time.perf_counter()
    result = trainer.fit()
    wall = time.perf_counter() - started
    if result.error:
        raise result.error
    best = result.get_best_checkpoint(metric="val_loss", mode="min") or result.checkpoint
    if best is None:
        raise RuntimeError(f"Ray Train run {run_name} ended without a checkpoint")
    with best.as_directory() as d:
        state = torch.load(Path(d) / CKPT_FILE, weights_only=True)
        meta = json.loads((Path(d) / META_FILE).read_text())
    history = result.metrics_dataframe.to_dict("records") if result.metrics_dataframe is not None else []
    # the best-by-val-loss weights seen so far (the data-fitted start when no epoch improved on it, e.g. a
    # diverged training whose losses are not finite): never the last epoch's weights as such
    return TrainOutcome(
        best_state=state["best_model"], history=history, best_epoch=meta["best_epoch"], wall_seconds=wall
    )


def storage_for(settings: Settings) -> tuple[str, Any]:
    """Ray Train storage path and filesystem: ``s3://…`` through the S3 endpoint, else a local directory."""
    path = settings.ray_storage_path or str(Path(settings.runtime_dir) / "ray-results")
    if not path.startswith("s3://"):
        Path(path).mkdir(parents=True, exist_ok=True)
        return path, None
    import pyarrow.fs

    fs = pyarrow.fs.S3FileSystem(
        endpoint_override=settings.s3_endpoint_url,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        scheme="http" if settings.s3_endpoint_url.startswith("http://") else "https",
    )
    return path.removeprefix("s3://"), fs


@dataclass(frozen=True)
class RayFit:
    """The Ray Train fit step: :func:`run_distributed` on the cluster, best checkpoint's weights back."""

    settings: Settings
    scaling: ScalingSettings
    fail_at_epoch: int | None = None
    """(tests) raise once in the first attempt at this epoch."""
    emit: Callable[[str], None] = field(default=print)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        num_workers: int | None = None,
        use_gpu: bool | None = None,
        fail_at_epoch: int | None = None,
        emit: Callable[[str], None] = print,
    ) -> RayFit:
        """Scaling from settings; the job's ``--num-workers`` / ``--use-gpu`` win when given."""
        scaling = ScalingSettings(
            num_workers=num_workers or settings.num_workers,
            use_gpu=settings.use_gpu if use_gpu is None else use_gpu,
            cpus_per_worker=settings.cpus_per_worker,
            gpus_per_worker=settings.gpus_per_worker,
        )
        return cls(settings, scaling, fail_at_epoch, emit)

    def key_params(self) -> dict[str, Any]:
        return {}

    def run_params(self) -> dict[str, Any]:
        return {"num_workers": self.scaling.num_workers, "use_gpu": self.scaling.use_gpu}

    def __call__(
        self,
        train: Arrays,
        val: Arrays,
        mcfg: ModelConfig,
        tcfg: TrainConfig,
        *,
        run_name: str,
        init_weights: dict[str, np.ndarray] | None = None,
    ) -> FitOutcome:
        from mur.model.network import build_model

        storage_path, fs = storage_for(self.settings)
        self.emit(
            f"[mur] Ray Train: {self.scaling.num_workers} worker(s), use_gpu={self.scaling.use_gpu}, "
            f"storage {storage_path}"
        )
        outcome = run_distributed(
            train,
            val,
            mcfg,
            tcfg,
            self.scaling,
            storage_path,
            run_name,
            max_failures=self.settings.max_failures,
            fail_at_epoch=self.fail_at_epoch,
            storage_filesystem=fs,
            init_weights=init_weights,
        )
        model = build_model(mcfg)
        model.load_state_dict(outcome.best_state)
        details = {
            "epochs_run": len(outcome.history),
            "train_seconds": outcome.wall_seconds,
            "num_workers": self.scaling.num_workers,
        }
        return FitOutcome(model, outcome.history, outcome.best_epoch, details)
