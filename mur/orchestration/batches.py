"""Batched training for the DAG: a few Ray jobs train every pair of a run, each job one Ray Train run.

    list_pairs ─► plan_batches ─► train_batch[i] (one Ray job per batch) ─► train_pair[pair] ─► summarize

One Ray job per pair pays the job's start-up (a process, torch/Ray/MLflow imports) and a Ray Train worker
group's start-up (~20 s here) for each pair, for a warm start that trains a few seconds: with hundreds of
pairs the hourly cycle is mostly start-up. A batch job pays them once for up to ``MUR_TRAIN_BATCH_SIZE``
pairs (:func:`mur.training.driver.train_many`).

Per-pair visibility, retries and alerts stay with the mapped ``train_pair[pair]`` tasks: each one returns its
pair's result from the batch, or, when the pair failed in its batch, fails its first try with the batch's
error and trains the pair on its own in its Airflow retries (:func:`mur.orchestration.tasks.train_pair`). A
batch task never fails the run by itself: its pairs' outcomes are data for the ``train_pair`` tasks.

Import-light like :mod:`mur.orchestration.tasks` (the DAG file imports it while it is parsed).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from mur.errors import JobError
from mur.settings import Settings

log = logging.getLogger(__name__)
LogFn = Callable[[str], None]


def plan_batches(pairs: Sequence[str], slots: int, max_size: int) -> list[list[str]]:
    """Split ``pairs`` (order kept) into contiguous batches of near-equal size: at least one batch per
    training slot (so the slots all work), and none larger than ``max_size``."""
    import numpy as np

    if not pairs:
        return []
    count = max(min(max(slots, 1), len(pairs)), math.ceil(len(pairs) / max(max_size, 1)))
    return [list(batch) for batch in np.array_split(np.array(pairs, dtype=object), count)]


def train_batch(
    settings: Settings,
    pairs: Sequence[str],
    *,
    end: datetime,
    options: Mapping[str, Any] | None = None,
    emit: LogFn | None = None,
    submission_prefix: str | None = None,
    kind: str = "manual",
    await_jobs: Callable[..., Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Train ``pairs`` in as few Ray jobs as their window ends allow (one, unless bundled data ends earlier
    for some pairs): submit them and hand their ids to ``await_jobs`` (the DAG's task defers there and
    resumes in :func:`batch_jobs_done`), which gives ``{pair: {"result": compact} | {"error": message}}``.
    Pairs already trained for their window are looked up in the registry and reused without a job. Without
    ``await_jobs`` (no Airflow: ``mur up``'s first training) the jobs are followed here, their logs streamed."""
    from mur.orchestration import job_submission as jobs
    from mur.orchestration.tasks import REUSED, clamped_end, find_trained

    say = emit or log.info
    options = dict(options or {})
    if "train_days" in options:
        settings = settings.replace(train_days=int(options["train_days"]))
    out: dict[str, dict[str, Any]] = {}
    by_end: dict[datetime, list[str]] = {}
    for pair in dict.fromkeys(p.lower() for p in pairs):
        pair_end = clamped_end(settings, pair, end, say)
        try:
            existing = find_trained(settings, pair, pair_end, options)
        except Exception as exc:  # the registry did not answer: the pair's own task retries it
            out[pair] = {"error": f"registry lookup failed: {exc}"}
            continue
        if existing is not None:
            say(REUSED.format(pair=pair, version=existing.version))
            out[pair] = {"result": existing.compact().model_dump()}
        else:
            by_end.setdefault(pair_end, []).append(pair)

    submitted: dict[str, list[str]] = {}
    for n, (pair_end, todo) in enumerate(sorted(by_end.items())):
        say(f"[mur] batch of {len(todo)} pair(s), window end {pair_end.isoformat()}: {', '.join(todo)}")
        submission_id = f"{submission_prefix}-{n}-{datetime.now(UTC):%H%M%S}" if submission_prefix else None
        try:
            job_id = jobs.start_training(
                settings,
                todo,
                "batch",
                end=pair_end,
                log=say,
                submission_id=submission_id,
                kind=kind,
                **options,
            )
        except Exception as exc:  # the head refused it (JobError): each pair's own task retries
            say(f"[mur] batch job failed: {exc}")
            out.update({p: {"error": str(exc)} for p in todo})
            continue
        submitted[job_id] = todo
    carry = {"settled": out, "jobs": submitted}
    if not submitted:
        return batch_jobs_done(settings, {"carry": carry}, say)
    if await_jobs is None:
        return batch_jobs_done(settings, jobs.follow_jobs(settings, list(submitted), say, carry), say)
    return await_jobs(list(submitted), carry)


def batch_jobs_done(
    settings: Settings, event: Mapping[str, Any], emit: LogFn, *, strict: bool = False
) -> dict[str, dict[str, Any]]:
    """``train_batch[i]`` resumed by its trigger (:mod:`mur.orchestration.triggers`): every pair's outcome,
    ``{"result": compact}`` or ``{"error": message}`` (a pair its job left no result for: the job's reason).

    ``strict`` (the DAG's task): JobError when a job of its own died without leaving a result for each of its
    pairs (killed, timed out: a task whose Ray job failed never reports success); its pairs then train in
    their own ``train_pair`` tasks, which find a version the job registered before it died by its
    idempotency key. A job that ran to its end with failed pairs left their errors: the pairs' own tasks
    retry those."""
    from mur.orchestration import job_submission as jobs

    out, pairs_of = dict(event["carry"]["settled"]), event["carry"]["jobs"]
    read, broken = jobs.job_result_reader(settings), []
    for job_id, job in event.get("jobs", {}).items():
        emit(f"[mur] Ray job {job_id} ended: {job['status']}")
        try:
            why = functools.partial(str, job["reason"])
            results = jobs.batch_results(job_id, pairs_of[job_id], job["status"], why, read)
        except JobError as exc:  # its results cannot be read: each pair's own task retries
            out.update({p: {"error": str(exc)} for p in pairs_of[job_id]})
            broken.append(str(exc))
            continue
        if any(r.job_id is None for r in results.values()):
            broken.append(f"Ray job {job_id} {job['status'].lower()}: {job['reason']}")
        out.update(
            {
                p: {"result": r.compact().model_dump()} if r.ok else {"error": r.error}
                for p, r in results.items()
            }
        )
    failed = sorted(p for p, o in out.items() if "error" in o)
    emit(
        f"[mur] batch: {len(out) - len(failed)}/{len(out)} pair(s) trained or reused"
        + (f"; failed (their own tasks retry them): {', '.join(failed)}" if failed else "")
    )
    if strict and broken:
        raise JobError(f"{'; '.join(broken)} (its pairs train in their own tasks)")
    return out


# --- Airflow glue (called from the DAG's tasks with the settings they created and their context) ------
def plan_batches_task(settings: Settings, pairs: Sequence[str]) -> list[list[str]]:
    """``plan_batches``: the run's pairs in batches (``MUR_MAX_PARALLEL_TRAININGS`` slots, at most
    ``MUR_TRAIN_BATCH_SIZE`` pairs each)."""
    batches = plan_batches(
        list(pairs), settings.airflow.max_parallel_trainings, settings.airflow.train_batch_size
    )
    log.info("%d pair(s) in %d batch(es): %s", len(pairs), len(batches), [len(b) for b in batches])
    return batches


def train_batch_task(
    settings: Settings, pairs: Sequence[str], context: Mapping[str, Any], await_jobs: Callable[..., Any]
) -> dict[str, dict[str, Any]]:
    """``train_batch[i]``: window end from the run, options from params; every pair's outcome."""
    from mur.orchestration.tasks import run_arguments

    ti = context.get("ti")
    label = f"batch{getattr(ti, 'map_index', 0)}-try{int(getattr(ti, 'try_number', 1) or 1)}"
    return train_batch(settings, pairs, **run_arguments(settings, context, label), await_jobs=await_jobs)
