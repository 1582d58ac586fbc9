"""Integration fixtures: the shared local services (S3, MLflow, Ray) from ``tests/conftest.py``.

``services`` (session): starts what is not already healthy, yields the Settings, stops at the end only
what it started (``MUR_KEEP_SERVICES=1`` keeps them). ``settings`` (session): the same Settings without
starting anything. Other test folders (tests/serve, tests/dags, …) see them too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mur.settings import Settings


@pytest.fixture(scope="session")
def settings(stack_settings: Settings) -> Settings:
    """The stack's Settings (read from ``MUR_*``); request ``services`` as well when the services are needed."""
    return stack_settings


@pytest.fixture
def restored_environ() -> Iterator[None]:
    """Put the process environment back afterwards: reaching the registry sets ``MLFLOW_HTTP_REQUEST_*``
    (mur.serving.champions.registry_client), which would shorten MLflow's retries for later tests."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def registry(
    pg_database_factory: Callable[..., Settings], tmp_path_factory: Any
) -> Iterator[tuple[Settings, Any]]:
    """Settings on a fresh database and an MLflow registry in a SQLite file, and its client."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{Path(tmp_path_factory.mktemp('mlflow')) / 'mlflow.db'}"
    database = pg_database_factory().db.pg_database
    yield Settings(env="test", pg_database=database, mlflow_tracking_uri=uri), MlflowClient(uri)
