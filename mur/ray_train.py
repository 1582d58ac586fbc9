"""Distributed training with Ray Train (DDP): the driver builds configs; the worker loop only trains.

Ray-specific lines are marked ``# [ray]``. The worker loop reads everything from its ``config`` dict (arrays
prepared by the driver, hyper-parameters) and does no I/O set-up of its own; checkpoints hold the model and
optimizer state plus early-stopping state so that a restarted worker group resumes where it stopped.
Same code on CPU (gloo) and GPU (NCCL): only ``use_gpu`` changes.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mur.models import ModelConfig
from mur.training import TrainConfig

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


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Per-worker loop: DDP model, sharded loader, per-epoch report + checkpoint, early stopping."""
    import copy

    import ray.train  # [ray]
    import ray.train.torch  # [ray]
    import torch
    import torch.distributed as dist

    from mur.models import build_model
    from mur.training import EarlyStopping, eval_loss, make_loader, seed_everything, train_epoch

    mcfg = ModelConfig(**config["model"])
    tcfg = TrainConfig(**config["train"])
    seed_everything(tcfg.seed)
    model = build_model(mcfg, seed=tcfg.seed)
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
        raw = model.module if hasattr(model, "module") else model
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

    best_state: dict
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
    with best.as_directory() as d:
        state = torch.load(Path(d) / CKPT_FILE, weights_only=True)
        meta = json.loads((Path(d) / META_FILE).read_text())
    history = result.metrics_dataframe.to_dict("records") if result.metrics_dataframe is not None else []
    # the best checkpoint's own weights are the best-by-val-loss model
    return TrainOutcome(
        best_state=state["model"], history=history, best_epoch=meta["epoch"], wall_seconds=wall
    )


def storage_for(settings) -> tuple[str, Any]:
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


def training_params(settings, mcfg: ModelConfig, tcfg: TrainConfig) -> dict[str, Any]:
    """Everything that defines a training besides pair and window (logged as params, hashed into the key)."""
    return {
        **mcfg.to_dict(),
        **asdict(tcfg),
        "seq_len": settings.seq_len,
        "normalization": settings.normalization,
        "train_days": settings.train_days,
    }


def idempotency_key(pair: str, window_end: str, params: dict[str, Any]) -> str:
    """Same pair + window end + hyper-parameters → same key (Airflow re-runs reuse the version)."""
    import hashlib

    blob = json.dumps({"pair": pair, "end": window_end, **params}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def train_and_register(
    settings,
    pair: str,
    *,
    end=None,
    num_workers: int | None = None,
    use_gpu: bool | None = None,
    fail_at_epoch: int | None = None,
    reuse_existing: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """The Ray job's driver: data window → Ray Train → ONNX → evaluation → MLflow registry + gate."""

    from mur.export import export_onnx
    from mur.models import build_model
    from mur.pipeline import (
        evaluate_onnx,
        load_candles,
        metrics_document,
        model_config,
        prepare,
        train_config,
    )
    from mur.registry import configure, find_version, log_and_register, version_summary

    pair = pair.lower()
    candles, window, filled = load_candles(settings, pair, end=end)
    ds = prepare(settings, candles)
    mcfg, tcfg = model_config(settings, **overrides), train_config(settings, **overrides)
    scaling = ScalingSettings(
        num_workers=num_workers or settings.num_workers,
        use_gpu=settings.use_gpu if use_gpu is None else use_gpu,
        cpus_per_worker=settings.cpus_per_worker,
        gpus_per_worker=settings.gpus_per_worker,
    )
    params = training_params(settings, mcfg, tcfg)
    key = idempotency_key(pair, window.to_dict()["end"], params)
    print(f"[mur] {pair}: {len(candles)} candles {window.to_dict()} (filled hours: {len(filled)}); key {key}")
    client = configure(settings)
    prefix = settings.registry_prefix
    if reuse_existing and (existing := find_version(client, pair, key, prefix)) is not None:
        summary = version_summary(client, existing, prefix)
        print(f"[mur] {pair}: version {summary['version']} already trained for this window; reusing it")
        return {**summary, "reused": True}

    storage_path, fs = storage_for(settings)
    run_name = f"{pair}-{window.to_dict()['end'].replace(':', '')}-{key[:8]}"
    print(
        f"[mur] Ray Train: {scaling.num_workers} worker(s), use_gpu={scaling.use_gpu}, storage {storage_path}"
    )
    outcome = run_distributed(
        ds.model_arrays("train"),
        ds.model_arrays("val"),
        mcfg,
        tcfg,
        scaling,
        storage_path,
        run_name,
        max_failures=settings.max_failures,
        fail_at_epoch=fail_at_epoch,
        storage_filesystem=fs,
    )
    model = build_model(mcfg)
    model.load_state_dict(outcome.best_state)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(model, ds.spec, Path(tmp) / "model.onnx", ds.x[ds.split.test][:64])
        evaluation = evaluate_onnx(onnx_path, ds)
        doc = metrics_document(
            pair,
            mcfg,
            ds,
            window,
            evaluation,
            best_epoch=outcome.best_epoch,
            epochs_run=len(outcome.history),
            train_seconds=outcome.wall_seconds,
            num_workers=scaling.num_workers,
        )
        print(
            f"[mur] {pair}: test MAE model {doc['model']['mae']:.6g} | persistence {doc['persistence']['mae']:.6g} "
            f"| linear {doc['linear']['mae']:.6g} | skill {doc['skill']:+.4f}"
        )
        reg = log_and_register(
            settings,
            pair=pair,
            onnx_path=onnx_path,
            feature_spec=ds.spec.to_dict(),
            metrics_doc=doc,
            params={**params, "num_workers": scaling.num_workers, "use_gpu": scaling.use_gpu},
            history=outcome.history,
            x_test=ds.x[ds.split.test],
            y_test=ds.y[ds.split.test],
            idempotency_key=key,
        )
    print(f"[mur] gate: {prefix}{pair} v{reg.version} → {reg.alias} ({reg.reason})")
    return {**reg.to_dict(), "data_window": window.to_dict(), "metrics": doc, "model_name": f"{prefix}{pair}"}
