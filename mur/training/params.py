"""Hyper-parameters of one training and the idempotency key derived from them.

Pure and import-light enough for the DAG's task bodies, which compute the key a job would compute before
submitting it (:func:`mur.orchestration.tasks.expected_idempotency_key`).
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from mur.contracts import digest
from mur.model.network import ModelConfig
from mur.settings import Settings
from mur.training.loop import TrainConfig


def with_overrides(base: dict[str, Any], overrides: dict[str, object]) -> dict[str, Any]:
    """``base`` with the overrides of its keys that are not None (CLI/job options left unset are None)."""
    return base | {k: v for k, v in overrides.items() if v is not None and k in base}


def model_config(settings: Settings, **overrides: object) -> ModelConfig:
    """Model hyper-parameters from settings (CLI/job overrides win when not None)."""
    from mur.model.features import FEATURE_SETS
    from mur.model.quantile_config import parse_horizons, parse_levels

    base = settings.model.model_dump(exclude={"seq_len", "context_len"})
    base.update(rnn_len=settings.model.seq_len, input_len=settings.model.context_len)
    base = with_overrides(base, overrides)
    base["horizons"] = parse_horizons(base["horizons"])  # CLI / trigger form / job: "1,4,24"
    base["quantile_levels"] = parse_levels(base["quantile_levels"])
    feature_set = base.pop("feature_set")
    return ModelConfig(feature_names=FEATURE_SETS[feature_set], **base)


def train_config(settings: Settings, **overrides: object) -> TrainConfig:
    """Optimization hyper-parameters from settings (overrides win when not None)."""
    base = {f.name: getattr(settings.training, f.name) for f in fields(TrainConfig)}
    return TrainConfig(**with_overrides(base, overrides))


def training_params(settings: Settings, mcfg: ModelConfig, tcfg: TrainConfig) -> dict[str, Any]:
    """Everything that defines a training besides pair and window (logged as params, hashed into the key).

    ``weight_decay`` 0 (the default) is left out: the keys of trainings from before it existed stay valid."""
    optimization = asdict(tcfg)
    if not optimization["weight_decay"]:
        del optimization["weight_decay"]
    return {
        **mcfg.to_dict(),
        **optimization,
        "seq_len": settings.model.seq_len,
        "normalization": settings.model.normalization,
        "train_days": settings.training.train_days,
    }


def idempotency_key(pair: str, window_end: str, params: dict[str, Any]) -> str:
    """Same pair + window end + hyper-parameters → same key (Airflow re-runs reuse the version)."""
    return digest({"pair": pair, "end": window_end, **params}, 24)
