"""Framework-free training pieces shared by local training and the Ray Train worker loop.

``train_epoch`` / ``eval_loss`` are plain functions over DataLoaders; :class:`EarlyStopping` tracks the best
validation loss. :func:`run_epochs` is the one epoch loop: :class:`LocalFit` (the fit step of
:func:`mur.training.driver.train_and_register` in this process) and the Ray Train worker loop
(:mod:`mur.training.ray_fit`) both run it, passing in what differs (loaders, validation, device, a per-epoch
hook); :func:`start_training` is their one start (seeds, data-fitted model, warm weights, optimizer).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mur.model.network import ModelConfig, QuantileForecaster

Arrays = tuple[np.ndarray, np.ndarray]
"""Model inputs and targets of one split (``Dataset.model_arrays``)."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimization hyper-parameters."""

    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 1e-3
    patience: int = 4
    seed: int = 42
    weight_decay: float = 0.0
    """Decoupled weight decay (AdamW); 0 = plain Adam (:func:`start_training`)."""


@dataclass
class EarlyStopping:
    """Stop when validation loss has not improved for ``patience`` epochs; remember the best epoch."""

    patience: int
    best_loss: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0

    def step(self, epoch: int, loss: float) -> bool:
        """Record an epoch's validation loss; return True when this epoch is the best so far.

        A non-finite loss (a diverged training) is never best and stops at once: the weights kept are the
        best seen, or the starting ones."""
        if not math.isfinite(loss):
            self.bad_epochs = self.patience
            return False
        if loss < self.best_loss - 1e-12:
            self.best_loss, self.best_epoch, self.bad_epochs = loss, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch; force deterministic kernels where cheap (same data + seed → same weights)
    through torch's switch itself (``use_deterministic_algorithms`` imports Inductor too: ~1 CPU-s a process)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch._C._set_deterministic_algorithms(True, warn_only=True)


def make_loader(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """DataLoader over in-memory float32 arrays (a seeded generator keeps shuffling reproducible)."""
    # copies: arrays that arrive through Ray's object store are read-only (torch needs writable memory)
    ds = TensorDataset(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32))
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=gen if shuffle else None)


def batch_loss(model: nn.Module, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The model's own loss: the quantile model's pinball loss (a DDP-wrapped model unwrapped)."""
    return cast(QuantileForecaster, unwrap(model)).loss(out, target)


def train_epoch(
    model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, device: torch.device
) -> float:
    """One pass over ``loader``; returns the mean loss (:func:`batch_loss`)."""
    model.train()
    total, count = 0.0, 0
    for xb, yb in loader:
        xb, yb = xb.to(device), yb.to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = batch_loss(model, model(xb), yb)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        total += float(loss.detach()) * len(xb)
        count += len(xb)
    return total / max(count, 1)


@torch.no_grad()
def eval_loss(model: nn.Module, loader: DataLoader, device: torch.device) -> float:
    """Mean loss over ``loader`` without gradient."""
    model.eval()
    total, count = 0.0, 0
    for xb, yb in loader:
        xb, yb = xb.to(device), yb.to(device)
        total += float(batch_loss(model, model(xb), yb)) * len(xb)
        count += len(xb)
    return total / max(count, 1)


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Model outputs for inputs ``x`` (the quantile model: percent log-return quantiles ``(n, H, L)``)."""
    model.eval()
    outs = [
        model(torch.tensor(x[i : i + batch_size])).numpy()  # a copy: x may be read-only (Ray)
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(outs) if outs else np.empty(0, dtype=np.float32)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (Ray's ``prepare_model`` wraps only with more than one worker)."""
    inner = getattr(model, "module", model)
    return inner if isinstance(inner, nn.Module) else model


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the (unwrapped) model's weights on the CPU: the best weights kept while training goes on."""
    return {k: v.detach().to("cpu", copy=True) for k, v in unwrap(model).state_dict().items()}


@dataclass
class Training:
    """What one fit's epochs change: what a Ray checkpoint holds and a restarted worker group restores."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    stopper: EarlyStopping
    best_state: dict[str, torch.Tensor]
    """The best-by-validation-loss weights so far (the data-fitted start until an epoch beats it)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """Per-epoch rows: ``epoch``, ``train_loss``, ``val_loss``, ``best_*``, ``compute_s`` (``train_epoch``),
    ``eval_s``, ``epoch_seconds`` (both), ``wall_s`` (since the previous epoch's end, its report included)."""
    start_epoch: int = 0


def start_training(
    mcfg: ModelConfig, tcfg: TrainConfig, train: Arrays, init_weights: dict[str, np.ndarray] | None
) -> Training:
    """The seeded model from its data-fitted start, a warm start's recurrent weights on top, its optimizer
    and early stopping. Deterministic: every Ray Train worker starts from the same weights."""
    from mur.model.network import build_model
    from mur.training.warm_start import apply_weights

    seed_everything(tcfg.seed)
    # the data-fitted start (normalization, volatility structure): deterministic, the same on every worker
    model = apply_weights(build_model(mcfg, seed=tcfg.seed).init_from_data(*train), init_weights)
    seed_everything(tcfg.seed)  # the epochs start from the same random state whatever the start drew
    # AdamW with decoupled weight decay: with weight_decay 0 (the default) it steps exactly as Adam
    optimizer = torch.optim.AdamW(model.parameters(), lr=tcfg.learning_rate, weight_decay=tcfg.weight_decay)
    return Training(model, optimizer, EarlyStopping(tcfg.patience), snapshot(model))


EpochHook = Callable[[Training, dict[str, Any], bool], None]
"""Called after each epoch with the training, the epoch's history row and whether it is the last one."""


def run_epochs(
    t: Training,
    cfg: TrainConfig,
    train_loader: DataLoader,
    validate: Callable[[], float],
    device: torch.device,
    on_epoch: EpochHook,
) -> Training:
    """The one epoch loop of every fit (:class:`LocalFit`, the Ray Train worker loop): train, validate,
    keep the best weights, stop early. What differs is passed in: the loaders and ``validate`` (the Ray
    worker's all-reduced over the workers: the same value, hence the same decisions, on every worker), the
    device, and ``on_epoch`` (the Ray worker reports and checkpoints there). Starts at ``t.start_epoch`` (a
    resumed training); a fresh one first scores its start, which training must beat (epoch -1)."""
    if t.start_epoch == 0:
        t.stopper.step(-1, validate())
    mark = time.perf_counter()
    for epoch in range(t.start_epoch, cfg.epochs):
        if hasattr(train_loader.sampler, "set_epoch"):  # [ray] a DistributedSampler shuffles by epoch
            train_loader.sampler.set_epoch(epoch)
        started = time.perf_counter()
        train_loss = train_epoch(t.model, train_loader, t.optimizer, device)
        computed = time.perf_counter()
        val_loss = validate()
        evaluated = time.perf_counter()
        if t.stopper.step(epoch, val_loss):
            t.best_state = snapshot(t.model)
        row: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss}
        row.update(best_val_loss=t.stopper.best_loss, best_epoch=t.stopper.best_epoch)
        row.update(epoch_seconds=evaluated - started, compute_s=computed - started)
        row.update(eval_s=evaluated - computed, wall_s=evaluated - mark)
        t.history.append(row)
        on_epoch(t, row, t.stopper.should_stop or epoch == cfg.epochs - 1)
        mark = evaluated
        if t.stopper.should_stop:
            break
    return t


@dataclass
class FitOutcome:
    """What a fit step hands back to the driver."""

    model: nn.Module
    """The core model with the best (by validation loss) weights loaded."""
    history: list[dict[str, Any]]
    """Per-epoch rows (``epoch``, ``train_loss``, ``val_loss``, …) logged to the MLflow run."""
    best_epoch: int
    details: dict[str, Any]
    """Training details for the metrics document (``epochs_run``, ``train_seconds``, ``num_workers``)."""


@dataclass(frozen=True)
class FitItem:
    """One model to fit: its name (the pair), arrays, configs and a warm start's recurrent weights."""

    name: str
    train: Arrays
    val: Arrays
    mcfg: ModelConfig
    tcfg: TrainConfig
    init_weights: dict[str, np.ndarray] | None = None


class Fit(Protocol):
    """The fit step of :func:`mur.training.driver.train_and_register`: :class:`LocalFit` or ``RayFit``."""

    def key_params(self) -> dict[str, Any]:
        """Params hashed into the idempotency key besides the hyper-parameters (and logged)."""
        ...

    def run_params(self) -> dict[str, Any]:
        """Params logged on the run but not hashed (how the fit ran, not what it trained)."""
        ...

    def fit_many(self, items: Sequence[FitItem], *, run_name: str) -> list[FitOutcome | Exception]:
        """Fit every item (:func:`mur.training.driver.train_many`), each from its data-fitted start with its
        warm start's recurrent weights on top; a failed item comes back as its exception."""
        ...


@dataclass(frozen=True)
class LocalFit:
    """Fit in this process on CPU with :func:`run_epochs` (``mur train``, tests that need a model quickly)."""

    progress: bool = False
    """Show a progress bar of the epochs."""

    def key_params(self) -> dict[str, Any]:
        return {"trainer": "local"}

    def run_params(self) -> dict[str, Any]:
        return {}

    def __call__(
        self,
        train: Arrays,
        val: Arrays,
        mcfg: ModelConfig,
        tcfg: TrainConfig,
        *,
        init_weights: dict[str, np.ndarray] | None = None,
    ) -> FitOutcome:
        """Fit from the data-fitted start, with ``init_weights`` (a warm start's recurrent weights) on top."""
        from tqdm import tqdm

        cpu = torch.device("cpu")
        t = start_training(mcfg, tcfg, train, init_weights)
        val_loader = make_loader(*val, tcfg.batch_size, shuffle=False)
        bar = tqdm(total=tcfg.epochs, desc="epochs", unit="epoch", disable=not self.progress, leave=False)

        def progress(t: Training, row: dict[str, Any], _last: bool) -> None:
            bar.update()
            bar.set_postfix(
                train=f"{row['train_loss']:.5f}", val=f"{row['val_loss']:.5f}", best=row["best_epoch"]
            )

        loader = make_loader(*train, tcfg.batch_size, shuffle=True, seed=tcfg.seed)
        run_epochs(t, tcfg, loader, lambda: eval_loss(t.model, val_loader, cpu), cpu, progress)
        bar.close()
        t.model.load_state_dict(t.best_state)
        return FitOutcome(t.model, t.history, t.stopper.best_epoch, {"epochs_run": len(t.history)})

    def fit_many(self, items: Sequence[FitItem], *, run_name: str = "") -> list[FitOutcome | Exception]:
        """One item after the other."""
        out: list[FitOutcome | Exception] = []
        for item in items:
            try:
                out.append(self(item.train, item.val, item.mcfg, item.tcfg, init_weights=item.init_weights))
            except Exception as exc:
                out.append(exc)
        return out
