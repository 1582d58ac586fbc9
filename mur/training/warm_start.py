"""Warm start: an hourly run fine-tunes the champion's recurrent correction instead of training it afresh.

Every training refits the data-derived part of the model on its own window (normalization, hour-of-week
factor, volatility structure, standardized quantiles: ``init_from_data``). What costs epochs is the
recurrent correction on top (``rnn.*`` and ``head.*``). A *scheduled* run whose pair has a compatible
champion starts that correction from the champion's weights (``weights.npz``, logged with every version:
plain arrays, no pickle) and trains ``MUR_WARM_START_EPOCHS`` epochs (early stopping still applies, and the
start itself is a candidate, as in every training). The gate then judges it like any other version.

A run trains fully instead (and says why, in its log and on the version) when:

- it is not a scheduled run (manual, backfill, a retraining requested by monitoring);
- warm starts are off (``MUR_WARM_START_EPOCHS=0``) or the pair has no champion;
- the champion's architecture key (model config, input length, normalization) differs;
- the champion's weights depend on candles the new test span contains: its training and validation span
  ends at its test window's start, which must not be after the new test window's start (a backfill never
  warm-starts from a newer champion);
- the lineage's last full training is ``MUR_FULL_RETRAIN_HOURS`` market hours old or more;
- the champion has no weights artefact (registered before warm starts existed).

The idempotency key does not depend on this choice: a re-run of the same window reuses the version
registered for it, however it was trained.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mur.contracts import digest
from mur.registry.names import WEIGHTS_ARTIFACT
from mur.timeutil import iso

if TYPE_CHECKING:
    from mur.model.network import ModelConfig
    from mur.settings import Settings

log = logging.getLogger(__name__)
WARM_PREFIXES = ("rnn.", "head.")
"""The recurrent correction: what a warm start takes from the champion (the rest is refitted on the data)."""
FULL, WARM = "full", "warm"


@dataclass(frozen=True)
class WarmStart:
    """A champion to start from: its version, recurrent weights and the lineage's last full training."""

    version: int
    weights: dict[str, np.ndarray]
    full_window_end: str


@dataclass(frozen=True)
class TrainingPlan:
    """How a run trains: ``full`` or ``warm`` (from ``start``), and why."""

    mode: str
    reason: str
    start: WarmStart | None = None

    def tags(self, window_end: str) -> dict[str, str]:
        """Version tags: the mode, the source version and the lineage's last full training."""
        full_end = self.start.full_window_end if self.start is not None else window_end
        return {
            "training_mode": self.mode,
            "training_reason": self.reason,
            "warm_start_from": "" if self.start is None else str(self.start.version),
            "full_window_end": full_end,
        }


def arch_key(mcfg: ModelConfig, seq_len: int, normalization: str) -> str:
    """What must match for weights to carry over: the model config, the input length, the normalization."""
    return digest({**mcfg.to_dict(), "seq_len": seq_len, "normalization": normalization}, 16)


def recurrent_weights(model: Any) -> dict[str, np.ndarray]:
    """The weights a later run can start from (``WARM_PREFIXES``), as float32 arrays."""
    return {
        k: v.detach().cpu().numpy().astype(np.float32)
        for k, v in model.state_dict().items()
        if k.startswith(WARM_PREFIXES)
    }


def save_weights(path: Path, weights: dict[str, np.ndarray]) -> None:
    """``weights.npz`` (numpy's zip of arrays; read back with ``allow_pickle=False``)."""
    np.savez(path, **weights)  # type: ignore[arg-type]  # numpy's stub wants positional arrays


def load_weights(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def apply_weights(model: Any, weights: dict[str, np.ndarray] | None) -> Any:
    """Load ``weights`` (recurrent correction only) into ``model`` after its data-fitted start."""
    if not weights:
        return model
    import torch

    state = model.state_dict()
    unknown = sorted(set(weights) - set(state))
    if unknown or any(not k.startswith(WARM_PREFIXES) for k in weights):
        raise ValueError(f"warm-start weights do not fit the model: {unknown or sorted(weights)[:3]}")
    for key, value in weights.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise ValueError(
                f"warm-start weight {key}: shape {value.shape}, the model has {tuple(state[key].shape)}"
            )
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()}, strict=False)
    return model


def decide(
    settings: Settings,
    *,
    kind: str,
    champion_tags: dict[str, str] | None,
    key: str,
    test_start: datetime,
    window_end: datetime,
) -> TrainingPlan:
    """Full or warm, from the champion's tags (no I/O; the weights are fetched only for a warm plan)."""
    from mur.registry.versions import tag_time

    if settings.training.warm_start_epochs <= 0:
        return TrainingPlan(FULL, "warm starts are off (MUR_WARM_START_EPOCHS=0)")
    if kind != "scheduled":
        return TrainingPlan(FULL, f"a {kind} run trains fully")
    if champion_tags is None:
        return TrainingPlan(FULL, "no champion to start from")
    if champion_tags.get("arch_key") != key:
        return TrainingPlan(FULL, "the champion's architecture differs (or predates warm starts)")
    seen_until = champion_tags.get("test_window_start") or ""
    if not seen_until or tag_time(seen_until) > test_start:
        return TrainingPlan(
            FULL, f"the champion trained on candles up to {seen_until}, inside this test span"
        )
    full_end = champion_tags.get("full_window_end") or champion_tags.get("data_window_end") or ""
    age_h = (window_end - tag_time(full_end)).total_seconds() / 3600 if full_end else float("inf")
    if age_h >= settings.training.full_retrain_hours:
        return TrainingPlan(FULL, f"the last full training is {age_h:.0f} h old (MUR_FULL_RETRAIN_HOURS)")
    return TrainingPlan(WARM, f"from the champion, {age_h:.0f} h after the last full training")


def plan(
    settings: Settings, pair: str, *, kind: str, key: str, test_start: datetime, window_end: datetime
) -> TrainingPlan:
    """:func:`decide` against the registry's champion, with its weights fetched for a warm plan.

    A champion whose weights cannot be read gives a full training (logged), never a failed run.
    """
    from mur.registry.client import configure
    from mur.registry.versions import champion_version

    champion = None
    if settings.training.warm_start_epochs > 0 and kind == "scheduled":  # else no look-up: a full training
        champion = champion_version(configure(settings), pair, settings.registry.registry_prefix)
    tags = None if champion is None else dict(champion.tags or {})
    decision = decide(
        settings, kind=kind, champion_tags=tags, key=key, test_start=test_start, window_end=window_end
    )
    if decision.mode != WARM or champion is None or tags is None:
        return decision
    try:
        import mlflow

        with tempfile.TemporaryDirectory() as tmp:  # MLflow's own would stay in /tmp after every warm start
            uri = f"runs:/{champion.run_id}/{WEIGHTS_ARTIFACT}"
            weights = load_weights(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
    except Exception as exc:  # no artefact (an older version) or an unreadable one: train fully
        log.warning("%s: champion v%s weights unavailable (%s): full training", pair, champion.version, exc)
        return TrainingPlan(FULL, f"the champion's weights are unavailable ({type(exc).__name__})")
    full_end = tags.get("full_window_end") or tags.get("data_window_end") or iso(window_end)
    start = WarmStart(version=int(champion.version), weights=weights, full_window_end=full_end)
    return TrainingPlan(WARM, decision.reason, start)
