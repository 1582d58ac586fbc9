"""The MLflow client for the configured tracking server, and the git commit a training is tagged with."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from mur.settings import PROJECT_ROOT, Settings


def configure(settings: Settings, *, fail_fast_s: float | None = None, quiet: bool = False) -> Any:
    """Point the MLflow client at the tracking server; return an ``MlflowClient``.

    ``fail_fast_s``: one retry and this request timeout (MLflow's default retries take minutes when the
    server is down); ``quiet``: MLflow prints no run URL on stdout (a command whose stdout is a report).

    Written to ``os.environ`` from the settings (never read back): MLflow reads its S3 endpoint
    (``MLFLOW_S3_ENDPOINT_URL``), its HTTP retries and its output switches only from the environment, and
    boto3, under MLflow's artefact store, its keys; MLflow's client its account (``MUR_MLFLOW_USERNAME`` and
    ``MUR_MLFLOW_PASSWORD`` → ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``).
    """
    import mlflow
    from mlflow import MlflowClient

    reg = settings.registry
    wanted = dict(reg.s3_env())
    if reg.mlflow_username and reg.mlflow_password:
        wanted |= {
            "MLFLOW_TRACKING_USERNAME": reg.mlflow_username,
            "MLFLOW_TRACKING_PASSWORD": reg.mlflow_password,
        }
    if fail_fast_s is not None:
        wanted |= {
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(max(fail_fast_s, 1))),
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        }
    if quiet:
        wanted["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    os.environ.update(wanted)
    mlflow.set_tracking_uri(settings.registry.mlflow_tracking_uri)
    return MlflowClient(settings.registry.mlflow_tracking_uri)


def git_commit(settings: Settings) -> str:
    """The project's git commit (``MUR_GIT_COMMIT`` wins, e.g. inside a Ray job's working_dir copy)."""
    if settings.general.git_commit:
        return settings.general.git_commit
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
