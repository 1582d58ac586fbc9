"""Distributed training with Ray Train (DDP): the driver builds configs; the worker loop only trains.

Ray-specific lines are marked ``# [ray]``. The worker loop reads everything from its ``config`` dict (arrays
prepared by the driver, hyper-parameters) and does no I/O set-up of its own; checkpoints hold the model and
optimizer state plus early-stopping state so that a restarted worker group resumes where it stopped.
Same code on CPU (gloo) and GPU (NCCL): only ``use_gpu`` changes. :class:`RayFit` is this module's fit step
for :func:`mur.training.driver.train_and_register` (the Ray job passes it in; this module never imports the
driver).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mur.model.network import ModelConfig
from mur.training.loop import (
    EarlyStopping,
    FitItem,
    FitOutcome,
    TrainConfig,
    Training,
    eval_loss,
    make_loader,
    run_epochs,
    start_training,
    unwrap,
)

if TYPE_CHECKING:
    from ray.train import ScalingConfig

    from mur.settings import Settings

log = logging.getLogger(__name__)
CKPT_FILE = "state.pt"
"""A checkpoint: the training state's tensors and, under ``meta``, where it stands (plain values: no
pickle)."""
CONTROLLER_POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
CONTROLLER_POLL_S = "0.2"
"""Ray Train's controller poll (Ray's default 2 s): ``ray.train.report`` blocks until the controller took
the previous report (a queue of one), so an epoch under 2 s (a GPU epoch here) waited for the poll, and a
run's end was seen up to 2 s late. The driver's value reaches the controller; an explicit one wins."""


def check_gpu_placement(scaling: ScalingConfig, cluster_gpus: float) -> None:
    """Refuse at once a GPU request the cluster cannot place, instead of Ray Train waiting for it forever
    (``WorkerGroupStartupTimeoutError``, retried): more GPUs than the cluster has, or DDP ranks sharing a GPU
    (NCCL refuses two ranks on one device: ``Duplicate GPU detected``). Separate one-worker trainings may
    share a GPU (``num_workers=1``, ``gpus_per_worker`` < 1)."""
    workers, per_worker = scaling.num_workers, float(scaling.num_gpus_per_worker)
    assert isinstance(workers, int)  # a fixed worker group (RayFit.from_settings), not an elastic range
    wanted = workers * per_worker
    if workers > 1 and per_worker < 1:
        raise ValueError(
            f"{workers} DDP workers with {per_worker:g} GPU each would share a GPU, "
            "which NCCL refuses; use gpus_per_worker=1 (MUR_GPUS_PER_WORKER), or num_workers=1 to share a GPU "
            "between separate trainings"
        )
    if wanted > cluster_gpus:
        raise ValueError(
            f"--use-gpu asks for {workers} worker(s) x {per_worker:g} GPU = {wanted:g} "
            f"GPU(s), but the Ray cluster has {cluster_gpus:g}; lower MUR_NUM_WORKERS (--workers) to "
            f"{int(cluster_gpus // max(per_worker, 1e-9))} or add GPU nodes"
        )


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Per-worker loop over the batch's items (pairs), one after the other on the same worker group: DDP
    model, sharded loader, per-epoch report + checkpoint, early stopping.

    ``config["items"]`` lists the fits (``name``, ``model``/``train`` configs, ``init_weights`` and an object
    ref of the item's arrays). The checkpoint holds the current item's model, optimizer and early-stopping
    state plus every finished item's best weights, so a restarted worker group resumes at the item and epoch
    where it stopped. An item whose data-fitted start fails (the same on every worker: deterministic) is
    recorded as failed and the loop goes on with the next one: one bad pair never blocks the batch.
    """
    import ray
    import ray.train  # [ray]

    items: list[dict[str, Any]] = config["items"]
    every = int(config.get("checkpoint_every", 1))
    done: dict[str, Any] = {}
    resume: dict[str, Any] | None = None
    checkpoint = ray.train.get_checkpoint()  # [ray] set when restoring after a failure
    if checkpoint:
        # a directory of this worker's own: with Ray's shared one (``as_directory``) a rank that comes later
        # downloads the checkpoint again over the files another rank on the node is reading ("PytorchStreamReader
        # failed reading file": every retry after a lost node, both ranks on the head, failed so)
        with tempfile.TemporaryDirectory(prefix="mur-resume-") as d:
            checkpoint.to_directory(d)
            resume = load_checkpoint_state(Path(d) / CKPT_FILE)
        meta = resume["meta"]
        done = {name: {"best_state": s, **meta["done"][name]} for name, s in resume["done"].items()}
        done.update({name: m for name, m in meta["done"].items() if "error" in m})
        print(
            f"[worker {ray.train.get_context().get_world_rank()}] resumed from checkpoint at epoch "
            f"{meta['epoch']} of item {meta['item']} ({items[meta['item']]['name']}), {len(done)} item(s) done"
        )
    for index, item in enumerate(items):
        if item["name"] in done:
            continue
        here = resume if resume is not None and resume["meta"]["item"] == index else None
        _fit_item(index, item, done, here, ray.get(item["arrays"]), every)


def _fit_item(
    index: int,
    item: dict[str, Any],
    done: dict[str, Any],
    resume: dict[str, Any] | None,
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    checkpoint_every: int = 1,
) -> None:
    """Train one item on the worker group with the one epoch loop (:func:`mur.training.loop.run_epochs`);
    its outcome goes into ``done`` (and every later checkpoint).

    What is Ray's here is marked: the restored state, DDP, the sharded loader, the device, the validation
    loss averaged over the workers (each validates its share of the validation set), and the per-epoch
    report with a checkpoint every ``checkpoint_every`` epochs and at the item's last (a restart redoes <
    ``checkpoint_every`` epochs). History rows add ``report_s`` (the previous epoch's report) and where the
    epoch ran."""
    import ray.train  # [ray]
    import ray.train.torch  # [ray]

    x_train, y_train, x_val, y_val = arrays
    name, tcfg = item["name"], TrainConfig(**item["train"])
    context = ray.train.get_context()  # [ray]
    rank, world = context.get_world_rank(), context.get_world_size()
    try:  # deterministic on every worker: all of them skip the item together
        t = start_training(ModelConfig(**item["model"]), tcfg, (x_train, y_train), item.get("init_weights"))
    except (ValueError, RuntimeError, ArithmeticError) as exc:
        done[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"[worker {rank}] {name}: cannot start training: {exc}")
        _report({"item": index, "name": name, "epoch": -1}, done, None, rank)
        return
    if resume is not None:  # [ray] where the previous worker group's last checkpoint left this item
        state, meta = resume, resume["meta"]
        t.model.load_state_dict(state["model"])
        t.optimizer.load_state_dict(state["optimizer"])
        t.best_state, t.history, t.start_epoch = state["best_model"], list(meta["history"]), meta["epoch"] + 1
        t.stopper = EarlyStopping(tcfg.patience, meta["best_loss"], meta["best_epoch"], meta["bad_epochs"])
    t.model = ray.train.torch.prepare_model(t.model)  # [ray] DDP + device placement
    train_loader = ray.train.torch.prepare_data_loader(  # [ray] DistributedSampler
        make_loader(x_train, y_train, tcfg.batch_size, shuffle=True, seed=tcfg.seed)
    )
    # [ray] this worker's share of the validation set (no padding: the all-reduce weighs each share by size)
    val_loader = make_loader(x_val[rank::world], y_val[rank::world], tcfg.batch_size, shuffle=False)
    val_share = len(y_val[rank::world])
    device = ray.train.torch.get_device()  # [ray]

    def validate() -> float:  # the unwrapped module: no DDP hook runs on the uneven shares
        return mean_over_workers(eval_loss(unwrap(t.model), val_loader, device), device, weight=val_share)

    report_s = 0.0

    def report(t: Training, row: dict[str, Any], last: bool) -> None:  # [ray] metrics, a checkpoint
        nonlocal report_s
        began = time.perf_counter()
        checkpoint = last or (row["epoch"] + 1) % checkpoint_every == 0
        row.update(report_s=report_s, checkpointed=checkpoint, samples=len(y_train), device=str(device))
        row["worker_pid"] = os.getpid()
        if last:
            done[name] = _finished(t)
        metrics = {"item": index, "name": name, **row}
        if not checkpoint:
            ray.train.report(metrics)  # [ray] metrics only: nothing written
        else:
            meta = {"item": index, "epoch": row["epoch"], "history": t.history, **asdict(t.stopper)}
            current = {"model": unwrap(t.model).state_dict(), "optimizer": t.optimizer.state_dict()}
            _report(metrics, done, {**current, "best_model": t.best_state, "meta": meta}, rank)
        report_s = time.perf_counter() - began

    run_epochs(t, tcfg, train_loader, validate, device, report)
    done.setdefault(name, _finished(t))  # no epoch left to run (all done before a restart): the best so far


def _finished(t: Training) -> dict[str, Any]:
    """A finished item's entry of ``done``: its best weights and outcome (what the driver reads)."""
    return {"best_state": t.best_state, "best_epoch": t.stopper.best_epoch, "history": t.history}


def _report(metrics: dict[str, Any], done: dict[str, Any], current: dict[str, Any] | None, rank: int) -> None:
    """``ray.train.report`` (a barrier across workers) with rank 0's checkpoint: the current item's training
    state (``current``) and every finished item's best weights and outcome (``done``)."""
    import ray.train  # [ray]

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = None
        if rank == 0:
            meta = dict(current["meta"]) if current else {"item": metrics["item"], "epoch": -1}
            meta["done"] = {n: {k: v for k, v in d.items() if k != "best_state"} for n, d in done.items()}
            state = {**(current or {}), "meta": meta}
            state["done"] = {n: d["best_state"] for n, d in done.items() if "best_state" in d}
            torch.save(state, Path(tmp) / CKPT_FILE)
            ckpt = ray.train.Checkpoint.from_directory(tmp)  # [ray]
        ray.train.report(metrics, checkpoint=ckpt)  # [ray]


def lean_trainer(trainer_class: type) -> type:  # [ray]
    """``trainer_class`` less two default callbacks, each an actor (a process) per run that runs here never use:
    the dataset manager (no Ray Data here) and the placement group cleaner (a job's end frees its groups)."""
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    class LeanTrainer(trainer_class):
        def _create_default_callbacks(self) -> list[Any]:
            unused = (DatasetsCallback, PlacementGroupCleanerCallback)
            return [c for c in super()._create_default_callbacks() if not isinstance(c, unused)]

    return LeanTrainer


def run_distributed_many(
    items: Sequence[FitItem],
    scaling: ScalingConfig,
    storage_path: str,
    run_name: str,
    max_failures: int = 2,
    storage_filesystem: Any = None,
    checkpoint_every: int = 1,
) -> list[FitOutcome | Exception]:
    """Driver: one ``TorchTrainer.fit`` trains every item on the same worker group (workers started once);
    returns each item's model with its best weights and history, or its error, in the items' order.
    Workers checkpoint every ``checkpoint_every`` epochs of an item and at its end
    (``MUR_CHECKPOINT_EVERY_EPOCHS``)."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig  # [ray]
    from ray.train.torch import TorchTrainer  # [ray]

    from mur.model.network import build_model
    from mur.training.process_group import BoundStoreTorchConfig  # [ray] the store on the node address

    names = [item.name for item in items]
    if len(set(names)) != len(names):
        raise ValueError(f"fit items need distinct names, got {names}")
    if scaling.use_gpu:
        check_gpu_placement(scaling, ray.cluster_resources().get("GPU", 0.0))
    os.environ.setdefault(CONTROLLER_POLL_ENV, CONTROLLER_POLL_S)  # [ray] read when the trainer starts
    trainer = lean_trainer(TorchTrainer)(
        train_loop_per_worker,
        train_loop_config={
            "items": [
                {
                    "name": item.name,
                    "model": item.mcfg.to_dict(),
                    "train": asdict(item.tcfg),
                    "init_weights": item.init_weights,
                    # one object per item: workers fetch an item's arrays when they reach it
                    "arrays": ray.put((*item.train, *item.val)),
                }
                for item in items
            ],
            "checkpoint_every": max(1, int(checkpoint_every)),
        },
        torch_config=BoundStoreTorchConfig(backend="nccl" if scaling.use_gpu else "gloo"),
        scaling_config=scaling,
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path,
            storage_filesystem=storage_filesystem,
            failure_config=FailureConfig(max_failures=max_failures),
            # the latest checkpoint holds every finished item's best weights: keep it (and the one before)
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    started = time.perf_counter()
    try:
        result = trainer.fit()
        wall = time.perf_counter() - started
        if result.error:
            raise result.error
        if result.checkpoint is None:
            raise RuntimeError(f"Ray Train run {run_name} ended without a checkpoint")
        with result.checkpoint.as_directory() as d:
            state = load_checkpoint_state(Path(d) / CKPT_FILE)  # a CPU driver reads a GPU run's checkpoint
    finally:  # run names are unique: nothing resumes a finished run, its checkpoints are only disk
        remove_dir(f"{storage_path.rstrip('/')}/{run_name}", storage_filesystem)
    out: list[FitOutcome | Exception] = []
    for item in items:
        info = state["meta"]["done"].get(item.name)
        if info is None or item.name not in state["done"]:
            error = (info or {}).get("error") or "the training run ended before this item was trained"
            out.append(RuntimeError(f"Ray Train: {item.name}: {error}"))
            continue
        history = list(info.get("history", []))  # kept in the checkpoint: Ray keeps only the last reports
        # the best-by-val-loss weights seen (the data-fitted start when no epoch improved on it, e.g. a
        # diverged training whose losses are not finite): never the last epoch's weights as such
        model = build_model(item.mcfg)
        model.load_state_dict(state["done"][item.name])
        epochs_s = sum(float(r.get("epoch_seconds", 0.0)) for r in history)
        details = {
            "epochs_run": len(history),
            "train_seconds": wall if len(items) == 1 else epochs_s,
            "num_workers": scaling.num_workers,
        }
        if len(items) > 1:
            details.update(batch_size=len(items), batch_seconds=wall)
        out.append(FitOutcome(model, history, int(info["best_epoch"]), details))
    return out


def mean_over_workers(value: float, device: torch.device, weight: float = 1.0) -> float:
    """``value`` averaged over the Ray Train workers, each weighted by its ``weight`` (e.g. the size of the
    worker's validation share); itself without a process group. One all-reduce of ``[value × weight,
    weight]``. The tensor lives on the worker's device: NCCL, the GPU backend, has no CPU tensors (``No
    backend type associated with device type cpu``), so a collective on a CPU tensor fails before the first
    epoch of every GPU run."""
    import torch.distributed as dist

    tensor = torch.tensor([value * weight, weight], dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    total, weights = (float(x) for x in tensor.tolist())
    return total / weights if weights else value


def load_checkpoint_state(path: Path) -> Any:
    """A checkpoint's tensors, mapped to the CPU wherever they were saved (a GPU worker's weights read by a
    CPU-only driver or worker; a GPU driver does not open a CUDA context for them). No pickle: weights only."""
    return torch.load(path, weights_only=True, map_location="cpu")


def remove_dir(path: str, fs: Any = None) -> None:
    """Delete a Ray Train run's or a Tune search's folder (checkpoints, Ray's state), local or on S3 (``fs``);
    one that cannot go is logged, never raised."""
    import pyarrow.fs

    try:
        (fs or pyarrow.fs.LocalFileSystem()).delete_dir(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("%s was not removed: %s", path, exc)


def storage_for(settings: Settings) -> tuple[str, Any]:
    """Ray Train storage path and filesystem: ``s3://…`` through the S3 endpoint, else a local directory."""
    return location(
        settings, settings.ray.ray_storage_path or str(Path(settings.general.runtime_dir) / "ray-results")
    )


def location(settings: Settings, path: str) -> tuple[str, Any]:
    """``s3://bucket/key`` → (``bucket/key``, a pyarrow S3 filesystem on ``MUR_S3_*``); a directory → (it,
    None), created."""
    if not path.startswith("s3://"):
        Path(path).mkdir(parents=True, exist_ok=True)
        return path, None
    import pyarrow.fs

    fs = pyarrow.fs.S3FileSystem(
        endpoint_override=settings.registry.s3_endpoint_url,
        access_key=settings.registry.s3_access_key,
        secret_key=settings.registry.s3_secret_key,
        scheme="http" if settings.registry.s3_endpoint_url.startswith("http://") else "https",
    )
    return path.removeprefix("s3://"), fs


@dataclass(frozen=True)
class RayFit:
    """The Ray Train fit step: :func:`run_distributed_many` on the cluster (one run for a batch of pairs)."""

    settings: Settings
    scaling: ScalingConfig
    emit: Callable[[str], None] = field(default=print)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        num_workers: int | None = None,
        use_gpu: bool | None = None,
        emit: Callable[[str], None] = print,
    ) -> RayFit:
        """Scaling from settings (each worker's CPUs and GPUs, Ray Train's placement of the workers: PACK,
        SPREAD, STRICT_SPREAD, STRICT_PACK); the job's ``--num-workers`` / ``--use-gpu`` win when given."""
        from ray.train import ScalingConfig  # [ray]

        use_gpu = settings.training.use_gpu if use_gpu is None else use_gpu
        resources = {"CPU": settings.training.cpus_per_worker}
        if use_gpu:
            resources["GPU"] = settings.training.gpus_per_worker
        scaling = ScalingConfig(
            num_workers=num_workers or settings.training.num_workers,
            use_gpu=use_gpu,
            resources_per_worker=resources,
            placement_strategy=settings.ray.ray_placement_strategy,
        )
        return cls(settings, scaling, emit)

    @staticmethod  # the Airflow task asks it without building a ScalingConfig (importing ray.train)
    def key_params() -> dict[str, Any]:
        return {}

    def run_params(self) -> dict[str, Any]:
        return {"num_workers": self.scaling.num_workers, "use_gpu": self.scaling.use_gpu}

    def fit_many(self, items: Sequence[FitItem], *, run_name: str) -> list[FitOutcome | Exception]:
        """Every item in one Ray Train run: the worker group starts once for the whole batch (the start-up
        of a run, ~20 s here, is paid once instead of once per pair). An item that fails comes back as its
        error, the others train; a run that failed (after Ray Train's own retries) fails every item."""
        storage_path, fs = storage_for(self.settings)
        self.emit(
            f"[mur] Ray Train: {len(items)} model(s) on {self.scaling.num_workers} worker(s), "
            f"use_gpu={self.scaling.use_gpu}, storage {storage_path}"
        )
        try:
            return run_distributed_many(
                items,
                self.scaling,
                storage_path,
                run_name,
                max_failures=self.settings.training.max_failures,
                storage_filesystem=fs,
                checkpoint_every=self.settings.training.checkpoint_every_epochs,
            )
        except Exception as exc:
            log.exception("Ray Train run %s failed", run_name)
            return [exc for _ in items]
