"""Many models in one fit: the items a fit step trains (``RayFit.fit_many``: one Ray Train run for a batch).

The hourly cycle over hundreds of pairs is dominated by start-up, not by training: a Ray job starts a Python
process and imports torch, Ray and MLflow (~10 s), and each Ray Train run starts its worker group (~20 s on
this machine) for a warm start that trains ~4 s. :func:`mur.training.driver.train_many` pays both once per
batch:

    prepare_training(pair) for each pair ─► fit.fit_many(items) (one Ray Train run) ─► finish_training(pair)

A pair that fails at any stage comes back as a failure result (``TrainingResult.error``) and the others go
on: one bad pair never blocks its batch. ``ray_jobs/train_pair.py --pairs a,b,c`` runs this in a Ray job; the
DAG's ``train_batch`` tasks submit those jobs (:mod:`mur.orchestration.batches`).
"""

from mur.training.loop import FitItem

__all__ = ["FitItem"]  # its home is mur.training.loop; benchmarks/train.py imports it from here
