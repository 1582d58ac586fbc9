"""Integration fixtures: the shared local services (S3, MLflow, Ray) from ``tests/conftest.py``.

``services`` (session): starts what is not already healthy, yields the Settings, stops at the end only
what it started (``MUR_KEEP_SERVICES=1`` keeps them). ``settings`` (session): the same Settings without
starting anything. Other test folders (tests/serve, tests/dags, …) see them too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

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
