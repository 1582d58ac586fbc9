"""Submit training as Ray jobs (used by ``mur train --ray`` and by Airflow tasks).

:func:`submit_training` submits ``python -m ray_jobs.train_pair`` through ``JobSubmissionClient`` at
``MUR_RAY_ADDRESS`` with a runtime env that ships the project, streams the job's logs, and returns the job's
result dict (registered version, alias decision, metrics) or raises :class:`JobError` with the job's error.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from mur.errors import JobError
from mur.settings import PROJECT_ROOT, Settings

RESULT_MARKER = "MUR_RESULT "
RUNTIME_EXCLUDES = [
    ".venv",
    ".venv/**",
    ".runtime",
    ".runtime/**",
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


def client_for(settings: Settings) -> Any:
    """A ``JobSubmissionClient``; an unreachable Ray head becomes a clear JobError."""
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(settings.ray_address)
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError depending on what fails
        raise JobError(
            f"cannot reach the Ray head at {settings.ray_address} ({type(exc).__name__}); "
            "start it with `mur services start ray` or set MUR_RAY_ADDRESS"
        ) from exc


def runtime_env(settings: Settings) -> dict[str, Any]:
    """Ship the project as the job's working_dir and pass the settings/S3 credentials via env vars."""
    from mur.registry import git_commit

    env = {k: v for k, v in os.environ.items() if k.startswith("MUR_")}
    env.update(settings_env(settings))
    env.update(settings.s3_env())
    env.update(
        {
            "MUR_MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
            "MUR_MARKET_DATA": settings.market_data,
            "MUR_RUNTIME_DIR": str(settings.runtime_dir),
            "MUR_GIT_COMMIT": git_commit(),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return {"working_dir": str(PROJECT_ROOT), "excludes": RUNTIME_EXCLUDES, "env_vars": env}


def settings_env(settings: Settings) -> dict[str, str]:
    """``MUR_*`` variables reproducing every explicitly set field, so the job sees the caller's settings."""
    out: dict[str, str] = {}
    for name in sorted(settings.model_fields_set):
        value = getattr(settings, name)
        if value is None:
            continue
        out[f"MUR_{name.upper()}"] = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return out


def build_entrypoint(pair: str, end: datetime | None, **options: Any) -> str:
    """The job's shell entrypoint (arguments quoted)."""
    argv = [
        sys.executable if options.pop("_same_python", True) else "python",
        "-m",
        "ray_jobs.train_pair",
        "--pair",
        pair,
    ]
    if end is not None:
        argv += ["--end", end.strftime("%Y-%m-%dT%H:%M:%SZ")]
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return shlex.join(argv)


def parse_result(logs: str) -> dict[str, Any] | None:
    """The last ``MUR_RESULT {json}`` line of the job's logs."""
    for line in reversed(logs.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER) :])
    return None


def submit_training(
    settings: Settings,
    pair: str,
    *,
    end: datetime | None = None,
    num_workers: int | None = None,
    use_gpu: bool = False,
    stream_logs: bool = True,
    log: Callable[[str], None] | None = None,
    timeout_s: float | None = None,
    poll_s: float = 2.0,
    submission_id: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Submit one training job, follow it to the end and return its result (or raise JobError)."""
    client = client_for(settings)
    entrypoint = build_entrypoint(pair.lower(), end, num_workers=num_workers, use_gpu=use_gpu, **options)
    emit = log or (lambda line: print(line, flush=True))
    try:
        job_id = client.submit_job(
            entrypoint=entrypoint,
            runtime_env=runtime_env(settings),
            submission_id=submission_id,
            metadata={"pair": pair.lower(), "end": str(end)},
        )
    except Exception as exc:
        raise JobError(
            f"could not submit the training job for {pair} to {settings.ray_address}: {exc}"
        ) from exc
    emit(f"[mur] submitted Ray job {job_id}: {entrypoint}")
    return wait_for_job(
        client,
        job_id,
        stream_logs=stream_logs,
        emit=emit,
        timeout_s=timeout_s or settings.job_timeout_s,
        poll_s=poll_s,
    )


def wait_for_job(
    client: Any,
    job_id: str,
    *,
    stream_logs: bool,
    emit: Callable[[str], None],
    timeout_s: float,
    poll_s: float = 2.0,
) -> dict[str, Any]:
    """Poll a job until it ends, streaming new log lines; return its parsed result."""
    deadline = time.monotonic() + timeout_s
    seen = 0
    status = "PENDING"
    while True:
        status = str(client.get_job_status(job_id)).split(".")[-1]
        logs = client.get_job_logs(job_id)
        if stream_logs and len(logs) > seen:
            for line in logs[seen:].splitlines():
                emit(line)
            seen = len(logs)
        if status in TERMINAL:
            break
        if time.monotonic() > deadline:
            client.stop_job(job_id)
            raise JobError(f"Ray job {job_id} did not finish within {timeout_s:.0f} s; stopped it")
        time.sleep(poll_s)
    result = parse_result(logs)
    if status != "SUCCEEDED" or result is None or "error" in result:
        info = client.get_job_info(job_id)
        reason = (result or {}).get("error") or _last_error_line(logs) or (info.message or status)
        raise JobError(f"Ray job {job_id} {status.lower()}: {reason}")
    result["job_id"] = job_id
    return result


def _last_error_line(logs: str) -> str | None:
    lines = [ln.strip() for ln in logs.splitlines() if ln.strip()]
    for line in reversed(lines):
        if "Error" in line or line.startswith("error:"):
            return line[:500]
    return lines[-1][:500] if lines else None
