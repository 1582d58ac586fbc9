"""The MLflow client for the configured tracking server, and the git commit a training is tagged with."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from mur.settings import PROJECT_ROOT, Settings


def configure(settings: Settings) -> Any:
    """Point the MLflow client at the tracking server; return an ``MlflowClient``."""
    import mlflow
    from mlflow import MlflowClient

    for key, value in settings.registry.s3_env().items():
        os.environ.setdefault(key, value)
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
