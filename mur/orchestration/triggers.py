"""The training DAG's deferrable tasks: they submit their Ray job and wait in Airflow's triggerer, not a worker.

    TrainBatch / TrainPair.execute ──► submit the Ray job(s) ──► defer(RayJobTrigger)
        triggerer: RayJobTrigger.run ── GET /api/jobs/{id} every MUR_JOB_POLL_S (asyncio) ──► TriggerEvent
    TrainBatch / TrainPair.execute_complete ──► the result(s) the job left in S3, or the job's error

While a job runs its task is ``deferred``: it holds no worker slot (one triggerer awaits thousands of jobs),
but it still counts towards ``max_active_tis_per_dag``, so ``MUR_MAX_PARALLEL_TRAININGS`` still bounds the
Ray jobs at once. The trigger reads no log while waiting; the reason of a job that did not succeed (Ray's
message, the log's last error line) is read once, when it ended. A job past ``MUR_JOB_TIMEOUT_S`` is stopped.

Entry points of ours that Airflow runs: the operators create the settings when they run (as the DAG's
``@task`` bodies do) and the trigger creates its own in the triggerer to read the cluster token there (the
token is never among its serialized kwargs, which Airflow stores in its database). Import-light: the DAG
file imports this module while it is parsed (httpx is imported when the trigger runs).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, NoReturn

from airflow.sdk import BaseOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent

from mur.settings import get_settings


class RayJobTrigger(BaseTrigger):
    """Awaits Ray jobs through the Jobs REST API of the head's dashboard; fires once, when all have ended:
    ``{"jobs": {id: {"status": …, "reason": …}}, "carry": carry}`` (``carry``: what the task needs back
    on resume; ``dag.test()`` passes the event alone, not the ``defer`` kwargs)."""

    def __init__(
        self,
        job_ids: list[str],
        address: str,
        poll_s: float,
        deadline: float,
        carry: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.job_ids, self.address, self.poll_s, self.deadline = list(job_ids), address, poll_s, deadline
        self.carry = carry or {}

    def serialize(self) -> tuple[str, dict[str, Any]]:
        kwargs = {"job_ids": self.job_ids, "address": self.address, "poll_s": self.poll_s}
        return f"{__name__}.{type(self).__name__}", {**kwargs, "deadline": self.deadline, "carry": self.carry}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import httpx

        headers = get_settings().ray.headers()  # the cluster token, from the triggerer's own settings
        async with httpx.AsyncClient(base_url=self.address, headers=headers, timeout=30) as http:
            jobs = {job_id: await self._ended(http, job_id) for job_id in self.job_ids}
        yield TriggerEvent({"jobs": jobs, "carry": self.carry})

    async def _ended(self, http: Any, job_id: str) -> dict[str, str]:
        """The job's final status and, unless it succeeded, why (its message and its log's last error line)."""
        import httpx

        from mur.orchestration.job_submission import TERMINAL, last_error_line
        from mur.waiting import WaitTimeout, wait_until_async

        async def details() -> dict[str, Any]:
            # the supervisor first: one that exited had set the job's status; a dead one with the job PENDING or
            # RUNNING (Ray leaves it so for ever) means the job was lost with its node
            death = await _supervisor_death(http, job_id)
            response = await http.get(f"/api/jobs/{job_id}")
            response.raise_for_status()  # 401/403: a wrong token; 404: an unknown job (the trigger fails)
            job = dict(response.json())
            if job.get("status") not in TERMINAL and death:
                job |= {"status": "FAILED", "lost": f"its supervisor died ({death}): the job was lost"}
            return job

        try:
            job = await wait_until_async(
                details,
                what=f"Ray job {job_id}",
                timeout_s=max(self.deadline - time.time(), 0),
                interval_s=self.poll_s,
                done=lambda job: job.get("status") in TERMINAL,
                retry_on=(httpx.TransportError,),
            )
        except WaitTimeout:
            await http.post(f"/api/jobs/{job_id}/stop")
            reason = "it did not finish by its deadline (MUR_JOB_TIMEOUT_S); stopped it"
            return {"status": "TIMEOUT", "reason": reason}
        if job["status"] == "SUCCEEDED" or job.get("lost"):  # a lost job's log went with its node
            return {"status": str(job["status"]), "reason": job.get("lost", "")}
        logs = (await http.get(f"/api/jobs/{job_id}/logs")).json().get("logs", "")
        reason = last_error_line(logs) or job.get("message") or job["status"]
        return {"status": str(job["status"]), "reason": reason}


async def _supervisor_death(http: Any, job_id: str) -> str:
    """Why the supervisor actor of Ray job ``job_id`` died, per Ray's state API ("" while alive or unknown): the
    name Ray's ``JOB_ACTOR_NAME_TEMPLATE`` gives it (2.60), looked up among the dead actors alone (GCS-side)."""
    keys, values = ["state", "name"], ["DEAD", f"_ray_internal_job_actor_{job_id}"]
    params = {"filter_keys": keys, "filter_predicates": ["=", "="], "filter_values": values, "detail": "true"}
    response = await http.get("/api/v0/actors", params=params)
    rows = response.json().get("data", {}).get("result", {}).get("result", []) if response.is_success else []
    died = [(row.get("death_cause") or {}).get("actor_died_error_context", {}) for row in rows]
    return next((d.get("error_message", "dead").split(".")[0] for d in died), "")


class _RayTraining(BaseOperator):
    """A task that submits Ray jobs, defers until they ended, and resumes in ``execute_complete``."""

    def await_jobs(self, job_ids: list[str], carry: dict[str, Any] | None = None) -> NoReturn:
        settings = get_settings()
        deadline = time.time() + settings.training.job_timeout_s
        trigger = RayJobTrigger(
            job_ids, settings.ray.ray_address, settings.training.job_poll_s, deadline, carry
        )
        self.defer(trigger=trigger, method_name="execute_complete")


class TrainBatch(_RayTraining):
    """``train_batch[i]``: one Ray job trains the batch's pairs (:mod:`mur.orchestration.batches`)."""

    template_fields = ("pairs",)

    def __init__(self, *, pairs: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pairs = pairs

    def execute(self, context: Any) -> dict[str, Any]:
        from mur.orchestration.batches import train_batch_task

        return train_batch_task(get_settings(), self.pairs, context, self.await_jobs)

    def execute_complete(self, context: Any, event: Mapping[str, Any]) -> dict[str, Any]:
        from mur.orchestration.batches import batch_jobs_done

        return batch_jobs_done(get_settings(), event, self.log.info, strict=True)


class TrainPair(_RayTraining):
    """``train_pair[pair]``: the pair's result from its batch, else its own Ray job (:mod:`mur.orchestration.tasks`)."""

    template_fields = ("pair", "batches")

    def __init__(self, *, pair: Any, batches: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pair, self.batches = pair, batches

    def execute(self, context: Any) -> dict[str, Any]:
        from mur.orchestration.tasks import train_pair_task

        return train_pair_task(get_settings(), self.pair, context, self.batches, self.await_jobs)

    def execute_complete(self, context: Any, event: Mapping[str, Any]) -> dict[str, Any]:
        from mur.orchestration.tasks import pair_job_done

        return pair_job_done(get_settings(), self.pair, event, self.log.info)
