"""Submit training as Ray jobs (used by ``mur train --ray`` and by Airflow tasks).

:func:`start_training` submits ``python -m ray_jobs.train_pair`` through ``JobSubmissionClient`` at
``MUR_RAY_ADDRESS`` with a runtime env that ships the project; the training DAG then defers to
:class:`~mur.orchestration.triggers.RayJobTrigger` until the job ended, and :func:`job_result` /
:func:`batch_results` turn what it left into :class:`~mur.contracts.TrainingResult` (registered version,
alias decision, metrics), or :class:`JobError` with the job's error. :func:`submit_training` (``mur train
--ray``) does all of it in one call, streaming the job's log.

A job leaves its result as one JSON object in the artefact bucket named by its submission id
(``s3://BUCKET/job-results/ID.json``): the submitter picks the id (:func:`new_submission_id`) and passes it to
the job (``--submission-id``), the job writes the object in one PUT (:func:`write_job_result`: a reader sees
all of it or none), and the submitter takes it by that id once the job ended (:func:`job_result_reader`:
read, then deleted).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shlex
import sys
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from mur.contracts import TrainingResult, TrainingResults
from mur.errors import JobError
from mur.settings import PROJECT_ROOT, Settings
from mur.waiting import WaitTimeout, wait_until

RUNTIME_EXCLUDES = [
    ".venv",
    ".runtime",
    ".git",
    "**/__pycache__",
    "tests",
    "benchmarks",
    "docs",
    "*.onnx",
    "artifacts",
    ".pytest_cache",
    ".ruff_cache",
    "*.egg-info",
    "test-output",
]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
ResultReader = Callable[[str], "str | None"]
"""The JSON document a job left under its submission id (None when it left none)."""
JOB_RESULTS_PREFIX = "job-results/"
"""Where jobs leave their results in the artefact bucket; production expires what is left there after
``JOB_RESULT_DAYS`` (infra/minio/init_bucket.py), for results whose submitter died before reading them."""
JOB_RESULT_DAYS = 7


def client_for(settings: Settings) -> Any:
    """A ``JobSubmissionClient``; an unreachable Ray head becomes a clear JobError."""
    from ray.job_submission import JobSubmissionClient

    ray_log = logging.getLogger("ray")  # not Ray's stderr handler (an Airflow task files stderr as errors):
    ray_log.handlers, ray_log.propagate = [], True  # the caller's logging, each line at its level
    # quiet packaging: no line for each .gitignore left out, no warning that .git/.venv are (RUNTIME_EXCLUDES are)
    logging.getLogger("ray._private.runtime_env.packaging").setLevel(logging.WARNING)
    os.environ.setdefault("RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES", "")
    try:
        return JobSubmissionClient(settings.ray.ray_address, headers=settings.ray.headers())
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError depending on what fails
        if "401" in str(exc) or "403" in str(exc) or "Authentication" in str(exc):
            raise JobError(
                f"the Ray head at {settings.ray.ray_address} refused this client's token: set RAY_AUTH_TOKEN to the "
                "cluster's token (a local stack's: `mur ray token`)"
            ) from exc
        raise JobError(
            f"cannot reach the Ray head at {settings.ray.ray_address} ({type(exc).__name__}); "
            "start it with `mur services start ray` or set MUR_RAY_ADDRESS"
        ) from exc


SECRET_FIELDS = frozenset(
    {
        "pg_password",
        "secret_key",
        "s3_access_key",
        "s3_secret_key",
        "airflow_password",
        "discord_webhook_url",
        "binance_api_key",
        "binance_api_secret",
        "ray_auth_token",
        "pg_app_password",
        "mlflow_username",
        "mlflow_password",
    }
)
"""Settings never copied into a job's payload: Ray logs each job's runtime env (``runtime_env_agent.log``)
and serves it on its unauthenticated Jobs API. A job that needs a credential (S3 for Ray Train storage,
Binance keys) reads it from the node's environment, which the Ray head/worker processes inherit (compose
sets them on the ray containers; the local stack's defaults need none)."""


def runtime_env(settings: Settings) -> dict[str, Any]:
    """Ship the project as the job's working_dir and pass the job's (non-secret) settings via env vars.

    MLflow proxies artefacts (``--serve-artifacts``), so the job needs no S3 credentials to register a model.
    """
    from mur.registry.client import git_commit

    env = {
        k: v
        for k, v in os.environ.items()
        if k.startswith("MUR_") and k.removeprefix("MUR_").lower() not in SECRET_FIELDS
    }
    env |= settings_env(settings) | {
        "MUR_MLFLOW_TRACKING_URI": settings.registry.mlflow_tracking_uri,
        "MUR_S3_ENDPOINT_URL": settings.registry.s3_endpoint_url,
        "MUR_MARKET_DATA": settings.data.market_data,
        "MUR_RUNTIME_DIR": str(settings.general.runtime_dir),
        "MUR_GIT_COMMIT": git_commit(settings),
        "PYTHONUNBUFFERED": "1",
    }
    return {"working_dir": str(PROJECT_ROOT), "excludes": RUNTIME_EXCLUDES, "env_vars": env}


def settings_env(settings: Settings) -> dict[str, str]:
    """``MUR_*`` variables reproducing every explicitly set non-secret field, so the job sees the caller's
    settings (secrets are left out: :data:`SECRET_FIELDS`)."""
    explicit = settings.flat(exclude_unset=True)
    return {
        f"MUR_{name.upper()}": json.dumps(value) if isinstance(value, list | dict) else str(value)
        for name, value in sorted(explicit.items())
        if name not in SECRET_FIELDS and value is not None
    }


def build_entrypoint(
    pair: str | Sequence[str], end: datetime | None, module: str = "ray_jobs.train_pair", **options: Any
) -> str:
    """The job's shell entrypoint (arguments quoted): ``python -m MODULE`` (the training job, or the tuning
    job ``ray_jobs.tune_pair``) with ``--pair P``, or ``--pairs A,B,C`` for a batch, then ``options``."""
    argv = [sys.executable, "-m", module]
    argv += ["--pair", pair] if isinstance(pair, str) else ["--pairs", ",".join(pair)]
    if end is not None:
        argv += ["--end", end.strftime("%Y-%m-%dT%H:%M:%SZ")]
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return shlex.join(argv)


def submit_training(settings: Settings, pair: str, **options: Any) -> TrainingResult:
    """Submit one training job, follow it to its end and return its result (or raise JobError); the options
    are :func:`submit_batch`'s."""
    client, job_id, status, logs, read = _run(settings, pair.lower(), "train", **options)
    return job_result(job_id, status, lambda: _why(client, job_id, status, logs), read)


def submit_batch(settings: Settings, pairs: Sequence[str], **options: Any) -> dict[str, TrainingResult]:
    """Submit one job training ``pairs`` in one Ray Train run, follow it, return one result per pair.

    Options: ``end``, ``num_workers``, ``use_gpu`` and the job's other flags (:func:`build_entrypoint`);
    ``stream_logs`` (default True) and ``log`` (default print) for its log lines; ``timeout_s`` (default
    ``training.job_timeout_s``), ``poll_s``, ``submission_id``, ``read`` (where its result is read; default
    the artefact bucket, :func:`job_result_reader`). (The training DAG does not follow its jobs: it defers
    to :class:`~mur.orchestration.triggers.RayJobTrigger`.)"""
    pairs = [p.lower() for p in pairs]
    client, job_id, status, logs, read = _run(settings, pairs, "batch", **options)
    return batch_results(job_id, pairs, status, lambda: _why(client, job_id, status, logs), read)


def follow_job(
    client: Any,
    job_id: str,
    *,
    stream_logs: bool,
    emit: Callable[[str], None],
    timeout_s: float,
    poll_s: float = 2.0,
) -> tuple[str, str]:
    """Poll a job until it ends, streaming new log lines; its final status and logs."""
    seen = 0

    def status_and_logs() -> tuple[str, str]:
        nonlocal seen
        status, logs = str(client.get_job_status(job_id)).split(".")[-1], client.get_job_logs(job_id)
        if stream_logs and len(logs) > seen:
            for line in logs[seen:].splitlines():
                emit(line)
            seen = len(logs)
        return status, logs

    try:
        return wait_until(
            status_and_logs,
            what=f"Ray job {job_id}",
            timeout_s=timeout_s,
            interval_s=poll_s,
            done=lambda s: s[0] in TERMINAL,
        )
    except WaitTimeout:
        client.stop_job(job_id)
        raise JobError(f"Ray job {job_id} did not finish within {timeout_s:.0f} s; stopped it") from None


def follow_jobs(
    settings: Settings, job_ids: Sequence[str], emit: Callable[[str], None], carry: Any = None
) -> dict[str, Any]:
    """Follow jobs to their end here, streaming their logs (no Airflow): the event
    :class:`~mur.orchestration.triggers.RayJobTrigger` fires for them in Airflow's triggerer."""
    client, ended = client_for(settings), {}
    for job_id in job_ids:
        status, logs = follow_job(
            client, job_id, stream_logs=True, emit=emit, timeout_s=settings.training.job_timeout_s
        )
        ended[job_id] = {
            "status": status,
            "reason": "" if status == "SUCCEEDED" else _why(client, job_id, status, logs),
        }
    return {"jobs": ended, "carry": carry}


def submit_job(
    settings: Settings,
    entrypoint: str,
    submission_id: str,
    metadata: dict[str, str],
    emit: Callable[[str], None],
) -> str:
    """Submit ``entrypoint`` with the project's runtime env; its job id (JobError when the head refuses)."""
    client = client_for(settings)  # JobError when the head does not answer
    try:
        job_id = client.submit_job(
            entrypoint=entrypoint,
            runtime_env=runtime_env(settings),
            submission_id=submission_id,
            metadata=metadata,
        )
    except Exception as exc:
        what = metadata.get("pair") or f"{metadata.get('pairs', '').count(',') + 1} pair(s)"
        raise JobError(
            f"could not submit the training job for {what} to {settings.ray.ray_address}: {exc}"
        ) from exc
    emit(f"[mur] submitted Ray job {job_id}: {entrypoint}")
    return str(job_id)


def start_training(
    settings: Settings,
    target: str | Sequence[str],
    id_kind: str = "train",
    /,
    *,
    end: datetime | None = None,
    log: Callable[[str], None] | None = None,
    submission_id: str | None = None,
    **flags: Any,
) -> str:
    """Submit the training job for ``target`` (a pair, or a batch's pairs; ``id_kind`` names a submission
    id picked here) and return its id, without waiting for it."""
    sid = submission_id or new_submission_id(id_kind)
    entrypoint = build_entrypoint(target, end, submission_id=sid, **flags)
    which = {"pair": target} if isinstance(target, str) else {"pairs": ",".join(target)[:200]}
    return submit_job(settings, entrypoint, sid, {**which, "end": str(end)}, log or _print)


def job_result(job_id: str, status: str, why: Callable[[], str], read: ResultReader) -> TrainingResult:
    """The result job ``job_id`` left (``read`` by its submission id) when it SUCCEEDED with one, else
    JobError with its error (the result's, else ``why()``): a job that did not succeed is never a success."""
    result = next(iter(_read_results(read, job_id, status).values()), None)
    if status != "SUCCEEDED" or result is None or result.error is not None:
        reason = (result.error if result else None) or why()
        raise JobError(f"Ray job {job_id} {status.lower()}{'' if result else ' without a result'}: {reason}")
    return result.model_copy(update={"job_id": job_id})


def batch_results(
    job_id: str, pairs: Sequence[str], status: str, why: Callable[[], str], read: ResultReader
) -> dict[str, TrainingResult]:
    """One result per pair of a batch job, failures included (a pair the job left no result for gets the
    job's error, ``why()``, and no ``job_id``). Raises JobError only when its results cannot be read at all."""
    results = _read_results(read, job_id, status)
    reason = "" if all(p in results for p in pairs) else why()
    return {
        p: (
            results[p].model_copy(update={"job_id": job_id})
            if p in results
            else TrainingResult.failure(p, f"Ray job {job_id} {status.lower()} without a result: {reason}")
        )
        for p in pairs
    }


def _read_results(read: ResultReader, job_id: str, status: str) -> dict[str, TrainingResult]:
    """The results job ``job_id`` left, by pair (none when it left no document)."""
    text = read(job_id)
    if text is None:
        return {}
    try:
        return {r.pair: r for r in TrainingResults.model_validate_json(text).results}
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise JobError(f"Ray job {job_id} {status.lower()} with an unreadable result: {exc}") from exc


def _why(client: Any, job_id: str, status: str, logs: str) -> str:
    """Why a job failed: its last error line (else its last log line), or Ray's message."""
    return last_error_line(logs) or (client.get_job_info(job_id).message or status)


def _run(
    settings: Settings,
    target: str | list[str],
    id_kind: str,
    /,
    *,
    stream_logs: bool = True,
    log: Callable[[str], None] | None = None,
    timeout_s: float | None = None,
    poll_s: float = 2.0,
    read: ResultReader | None = None,
    **options: Any,
) -> tuple[Any, str, str, str, ResultReader]:
    """Submit the job for ``target`` and follow it to its end: the client, its id, status, logs and reader."""
    emit = log or _print
    job_id = start_training(settings, target, id_kind, log=emit, **options)
    client = client_for(settings)
    timeout = timeout_s or settings.training.job_timeout_s
    status, logs = follow_job(
        client, job_id, stream_logs=stream_logs, emit=emit, timeout_s=timeout, poll_s=poll_s
    )
    return client, job_id, status, logs, read or job_result_reader(settings)


_print = functools.partial(print, flush=True)


def last_error_line(logs: str) -> str | None:
    """A job's last error line (``…Error…`` or ``error: …``), else its last line, at most 500 characters."""
    lines = [ln.strip() for ln in logs.splitlines() if ln.strip()]
    for line in reversed(lines):
        if "Error" in line or line.startswith("error:"):
            return line[:500]
    return lines[-1][:500] if lines else None


def new_submission_id(kind: str) -> str:
    return f"mur-{kind}-{uuid.uuid4().hex[:12]}"


def result_store(settings: Settings, timeout_s: float = 30.0) -> Any:
    """A boto3 S3 client on ``MUR_S3_*`` that gives up after ``timeout_s`` and one retry (boto3's defaults
    wait a minute per connection attempt)."""
    import boto3
    from boto3.session import Config

    s3 = settings.registry
    bounded = Config(connect_timeout=timeout_s, read_timeout=timeout_s, retries={"max_attempts": 2})
    return boto3.client(
        "s3",
        endpoint_url=s3.s3_endpoint_url,
        aws_access_key_id=s3.s3_access_key,
        aws_secret_access_key=s3.s3_secret_key,
        region_name="us-east-1",
        config=bounded,
    )


def _result_object(settings: Settings, submission_id: str) -> tuple[Any, dict[str, str], str]:
    """The result store's client, the result object's bucket and key, and its URI."""
    where = {"Bucket": settings.registry.s3_bucket, "Key": f"{JOB_RESULTS_PREFIX}{submission_id}.json"}
    return result_store(settings), where, f"s3://{where['Bucket']}/{where['Key']}"


def write_job_result(settings: Settings, submission_id: str, document: str) -> str:
    """(In the job) leave ``document`` (JSON) as the result of job ``submission_id``; its URI."""
    client, where, uri = _result_object(settings, submission_id)
    client.put_object(**where, Body=document.encode(), ContentType="application/json")
    return uri


def copy_artefacts(settings: Settings, source: str, destination: str, *, move: bool = False) -> None:
    """Copy the files under ``source`` to ``destination``, each ``s3://bucket/prefix`` (through the S3
    endpoint) or a directory: the job writes its artefacts to its ``--out-uri``, ``mur train --ray --out``
    fetches them from there (``move``: then deleted there)."""
    import pyarrow.fs

    from mur.training.ray_fit import location

    src, src_fs = location(settings, source)
    dst, dst_fs = location(settings, destination)
    local = pyarrow.fs.LocalFileSystem()
    pyarrow.fs.copy_files(src, dst, source_filesystem=src_fs or local, destination_filesystem=dst_fs or local)
    if move:
        (src_fs or local).delete_dir(src)


def job_result_reader(settings: Settings) -> ResultReader:
    """Takes a job's result from the artefact bucket: read, then deleted, its submitter being its only reader
    (JobError when S3 fails). A result no submitter read is expired by the bucket's lifecycle rule
    (:data:`JOB_RESULTS_PREFIX`, infra/minio/init_bucket.py)."""

    def read(submission_id: str) -> str | None:
        client, where, uri = _result_object(settings, submission_id)
        try:
            text = str(client.get_object(**where)["Body"].read().decode())
        except client.exceptions.NoSuchKey:
            return None
        except Exception as exc:  # botocore's connection and client errors
            raise JobError(f"could not read the result of Ray job {submission_id} at {uri}: {exc}") from exc
        with contextlib.suppress(Exception):  # else left to the lifecycle rule
            client.delete_object(**where)
        return text

    return read
