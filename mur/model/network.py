"""Recurrent regressors (LSTM / GRU) in plain PyTorch, operating on normalized windows."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from mur.model.features import N_FEATURES

Arch = Literal["lstm", "gru"]


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters (logged as MLflow params)."""

    arch: Arch = "lstm"
    hidden_size: int = 32
    num_layers: int = 2
    dropout: float = 0.1
    n_features: int = N_FEATURES

    def to_dict(self) -> dict:
        return asdict(self)


class RecurrentRegressor(nn.Module):
    """``(batch, seq_len, n_features)`` → ``(batch, 1)``: a recurrent encoder and a linear head."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        rnn_cls = nn.LSTM if cfg.arch == "lstm" else nn.GRU
        self.cfg = cfg
        self.rnn = rnn_cls(
            input_size=cfg.n_features,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.num_layers,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.head = nn.Linear(cfg.hidden_size, 1)
        # Start from "no change": with the relative normalization a zero output *is* persistence, so an
        # untrained model is exactly the baseline and training can only earn its way away from it.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1, :])


def build_model(cfg: ModelConfig, seed: int | None = None) -> RecurrentRegressor:
    """Create a model; with ``seed`` the initial weights are reproducible."""
    if seed is not None:
        torch.manual_seed(seed)
    return RecurrentRegressor(cfg)
