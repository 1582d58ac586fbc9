"""Many models in one fit: the items a fit step trains, and :func:`fit_many` (one Ray Train run for a batch).

The hourly cycle over hundreds of pairs is dominated by start-up, not by training: a Ray job starts a Python
process and imports torch, Ray and MLflow (~10 s), and each Ray Train run starts its worker group (~20 s on
this machine) for a warm start that trains ~4 s. :func:`mur.training.driver.train_many` pays both once per
batch:

    prepare_training(pair) for each pair ─► fit.fit_many(items) (one Ray Train run) ─► finish_training(pair)

A pair that fails at any stage comes back as a failure result (``TrainingResult.error``) and the others go
on: one bad pair never blocks its batch. ``ray_jobs/train_pair.py --pairs a,b,c`` runs this in a Ray job; the
DAG's ``train_batch`` tasks submit those jobs (:mod:`mur.orchestration.batches`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mur.model.network import ModelConfig
    from mur.training.loop import Arrays, Fit, FitOutcome, TrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitItem:
    """One model to fit: its name (the pair), arrays, configs and a warm start's recurrent weights."""

    name: str
    train: Arrays
    val: Arrays
    mcfg: ModelConfig
    tcfg: TrainConfig
    init_weights: dict[str, np.ndarray] | None = None

    def fit_with(self, fit: Fit, run_name: str) -> FitOutcome:
        """``fit`` on this item, given ``init_weights`` only when there are some (a fit without warm starts
        works)."""
        warm = {} if self.init_weights is None else {"init_weights": self.init_weights}
        return fit(self.train, self.val, self.mcfg, self.tcfg, run_name=run_name, **warm)


def fit_many(fit: Fit, items: Sequence[FitItem], *, run_name: str) -> list[FitOutcome | Exception]:
    """Fit every item: in one go when the fit step can (``RayFit.fit_many``: one worker group), else one
    after the other (``LocalFit``). A failed item comes back as its exception."""
    many = getattr(fit, "fit_many", None)
    if many is not None:
        try:
            return list(many(items, run_name=run_name))
        except Exception as exc:  # the whole run failed (after Ray Train's own retries): every item did
            log.exception("batch fit %s failed", run_name)
            return [exc for _ in items]
    out: list[FitOutcome | Exception] = []
    for item in items:
        try:
            out.append(item.fit_with(fit, f"{run_name}-{item.name}"))
        except Exception as exc:
            out.append(exc)
    return out
