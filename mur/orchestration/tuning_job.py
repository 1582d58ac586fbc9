"""The ``mur_tuning`` DAG's task body: one Ray job per pair (``ray_jobs/tune_pair.py``) runs the search on
the cluster; the task follows its log and returns the summary it left under its submission id
(:mod:`mur.orchestration.job_submission`, :meth:`mur.training.tuning.TuningReport.summary`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from mur.errors import JobError
from mur.settings import Settings

log = logging.getLogger(__name__)
TUNING_DAG_ID = "mur_tuning"


def tune_pair_task(settings: Settings, pair: str, context: Mapping[str, Any]) -> dict[str, Any]:
    """``tune_pair[pair]``: submit the tuning job (the trials from the run's params, else
    ``MUR_TUNE_TRIALS``), follow it to its end and return its result (JobError when it failed)."""
    from mur.orchestration import job_submission as jobs

    pair, trials = pair.lower(), (context.get("params") or {}).get("trials")
    sid = jobs.new_submission_id("tune")
    entrypoint = jobs.build_entrypoint(
        pair, None, "ray_jobs.tune_pair", submission_id=sid, trials=None if trials is None else int(trials)
    )
    job_id = jobs.submit_job(settings, entrypoint, sid, {"pair": pair, "kind": "tuning"}, log.info)
    status, logs = jobs.follow_job(
        jobs.client_for(settings),
        job_id,
        stream_logs=True,
        emit=log.info,
        timeout_s=settings.training.job_timeout_s,
    )
    result = jobs.job_result_reader(settings)(job_id)
    if status != "SUCCEEDED" or result is None:
        errors = [ln for ln in logs.splitlines() if ln.startswith("error: ")]
        raise JobError(
            f"tuning job {job_id} for {pair} {status.lower()}: {errors[-1] if errors else 'it left no result'}"
        )
    return {**json.loads(result), "job_id": job_id}
