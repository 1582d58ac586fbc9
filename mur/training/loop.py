"""Framework-free training pieces shared by local training and the Ray Train worker loop.

``train_epoch`` / ``eval_loss`` are plain functions over DataLoaders; :class:`EarlyStopping` tracks the best
validation loss. :func:`fit_local` is the single-process loop; :class:`LocalFit` wraps it as the fit step
of :func:`mur.training.driver.train_and_register` (the other one is :class:`mur.training.ray_fit.RayFit`).
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mur.model.network import ModelConfig

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
    """Decoupled weight decay (AdamW); 0 = plain Adam (:func:`make_optimizer`)."""


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


@dataclass
class History:
    """Per-epoch losses and the early-stopping outcome."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch; force deterministic kernels where cheap (same data + seed → same weights)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam, or AdamW with the config's decoupled weight decay when it is not 0 (both fits use this)."""
    if cfg.weight_decay > 0:
        return torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)


def make_loader(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """DataLoader over in-memory float32 arrays (a seeded generator keeps shuffling reproducible)."""

    # Arrays that arrive through Ray's object store are read-only: copy those (torch needs writable memory).
    def tensor(a: np.ndarray) -> torch.Tensor:
        a = np.ascontiguousarray(a, dtype=np.float32)
        return torch.from_numpy(a if a.flags.writeable else a.copy())

    ds = TensorDataset(tensor(x), tensor(y))
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=gen if shuffle else None)


def batch_loss(model: nn.Module, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The model's own loss (the quantile model's pinball loss; DDP-wrapped models unwrapped), else MSE."""
    core = getattr(model, "module", model)
    loss_fn = getattr(core, "loss", None)
    if loss_fn is not None:
        return loss_fn(out, target)
    return nn.functional.mse_loss(out.squeeze(-1), target)


def init_from_data(model: nn.Module, train: Arrays) -> nn.Module:
    """Fit the model's data-derived starting point (normalization, volatility structure) on the training
    span, when it has one. Deterministic: every Ray Train worker computes the same start."""
    init = getattr(model, "init_from_data", None)
    if init is not None:
        init(*train)
    return model


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
        model(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size]))).numpy()
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(outs) if outs else np.empty(0, dtype=np.float32)


def fit_local(
    model: nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    cfg: TrainConfig,
    on_epoch: Callable[[int, float, float, bool], None] | None = None,
    progress: bool = True,
) -> History:
    """Train with Adam (AdamW with weight decay) and early stopping; restore the best weights at the end."""
    from tqdm import tqdm

    seed_everything(cfg.seed)
    device = torch.device("cpu")
    optimizer = make_optimizer(model, cfg)
    train_loader = make_loader(*train, cfg.batch_size, shuffle=True, seed=cfg.seed)
    val_loader = make_loader(*val, cfg.batch_size, shuffle=False)
    stopper = EarlyStopping(cfg.patience)
    # the data-fitted start is a candidate too (epoch -1): training keeps only what beats it on validation
    stopper.step(-1, eval_loss(model, val_loader, device))
    history = History()
    best_state = copy.deepcopy(model.state_dict())
    bar = tqdm(range(cfg.epochs), desc="epochs", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        tl = train_epoch(model, train_loader, optimizer, device)
        vl = eval_loss(model, val_loader, device)
        history.train_loss.append(tl)
        history.val_loss.append(vl)
        improved = stopper.step(epoch, vl)
        if improved:
            best_state = copy.deepcopy(model.state_dict())
        bar.set_postfix(train=f"{tl:.5f}", val=f"{vl:.5f}", best=stopper.best_epoch)
        if on_epoch:
            on_epoch(epoch, tl, vl, improved)
        if stopper.should_stop:
            history.stopped_early = True
            break
    model.load_state_dict(best_state)
    history.best_epoch = stopper.best_epoch
    return history


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


class Fit(Protocol):
    """The fit step of :func:`mur.training.driver.train_and_register`: :class:`LocalFit` or ``RayFit``."""

    def key_params(self) -> dict[str, Any]:
        """Params hashed into the idempotency key besides the hyper-parameters (and logged)."""
        ...

    def run_params(self) -> dict[str, Any]:
        """Params logged on the run but not hashed (how the fit ran, not what it trained)."""
        ...

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
        """Fit from the data-fitted start, with ``init_weights`` (a warm start's recurrent weights) on top."""
        ...


@dataclass(frozen=True)
class LocalFit:
    """Fit in this process on CPU with :func:`fit_local` (``mur train``, tests that need a model quickly)."""

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
        run_name: str = "",
        init_weights: dict[str, np.ndarray] | None = None,
    ) -> FitOutcome:
        from mur.model.network import build_model
        from mur.training.warm_start import apply_weights

        seed_everything(tcfg.seed)
        model = apply_weights(init_from_data(build_model(mcfg, seed=tcfg.seed), train), init_weights)
        history = fit_local(model, train, val, tcfg, progress=self.progress)
        rows: list[dict[str, Any]] = [
            {"epoch": i, "train_loss": t, "val_loss": v}
            for i, (t, v) in enumerate(zip(history.train_loss, history.val_loss, strict=True))
        ]
        return FitOutcome(model, rows, history.best_epoch, {"epochs_run": len(history.val_loss)})
