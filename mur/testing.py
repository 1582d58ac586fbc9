"""pytest fixtures for tests that need the real local services (S3, MLflow, Ray).

Import them into a ``conftest.py`` (``from mur.testing import services, stack_settings  # noqa: F401``)
and mark the tests ``@pytest.mark.services``. The session-scoped ``services`` fixture starts what is not
already healthy, reuses what is, yields the :class:`~mur.settings.Settings`, and at the end of the session
stops only the services *it* started, unless ``MUR_KEEP_SERVICES=1`` (keep them for the next run: the
first start costs about a minute on two cores). Only tests import this module (it imports pytest).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import pytest

from mur.services import CORE_SERVICES as STACK_SERVICES
from mur.settings import Settings, get_settings


def ensure_services(settings: Settings, names: Sequence[str] = STACK_SERVICES) -> list[str]:
    """Start ``names`` (and dependencies) unless healthy; return the names this call started."""
    from mur import services

    results = services.up(settings, names, progress=lambda msg: print(f"[services] {msg}", flush=True))
    return [r.name for r in results if r.action == "started"]


def release_services(settings: Settings, started: Sequence[str]) -> None:
    """Stop the services in ``started`` unless ``MUR_KEEP_SERVICES=1``."""
    from mur import services

    if started and os.environ.get("MUR_KEEP_SERVICES", "0").lower() not in ("1", "true", "yes"):
        services.down(settings, list(started))


@pytest.fixture(scope="session")
def stack_settings() -> Settings:
    """The settings the shared services run with (from the environment, ``MUR_*``)."""
    return get_settings()


@pytest.fixture(scope="session")
def services(stack_settings: Settings) -> Iterator[Settings]:
    """S3, MLflow and Ray running and healthy for the whole session; yields their Settings."""
    started = ensure_services(stack_settings)
    try:
        yield stack_settings
    finally:
        release_services(stack_settings, started)
