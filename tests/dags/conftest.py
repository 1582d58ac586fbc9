"""Fixtures for the DAG tests: a throwaway Airflow home (SQLite metadata DB), a Discord stand-in, the services.

Airflow reads its configuration once, when first imported, so the environment is set here at collection
time, before any test module imports ``airflow``. ``airflow_db`` migrates the SQLite DB once per session
(~8 s). The shared services (S3, MLflow, Ray) come from ``tests/conftest.py`` (``services`` fixture).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dag_test_stubs import DiscordStub

from mur.settings import PROJECT_ROOT, Settings

AIRFLOW_TEST_HOME = Path(tempfile.mkdtemp(prefix="mur-airflow-test-"))
AIRFLOW_TEST_ENV = {
    "AIRFLOW_HOME": str(AIRFLOW_TEST_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_TEST_HOME}/airflow.db",
    "AIRFLOW__API__BASE_URL": "http://127.0.0.1:8080",
}
if "airflow" in sys.modules:  # pragma: no cover - only when another plugin imported Airflow first
    _configured = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    if _configured != AIRFLOW_TEST_ENV["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]:
        raise RuntimeError("airflow was imported before tests/dags/conftest.py could configure it")
os.environ.update(AIRFLOW_TEST_ENV)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(AIRFLOW_TEST_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Migrate the test metadata DB once per session; returns AIRFLOW_HOME."""
    airflow = Path(sys.executable).parent / "airflow"
    proc = subprocess.run(
        [str(airflow), "db", "migrate"],
        env={**os.environ, **AIRFLOW_TEST_ENV},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return AIRFLOW_TEST_HOME


@pytest.fixture(scope="session")
def dagbag() -> Any:
    """The project's dags/ folder parsed once (no DB needed)."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(PROJECT_ROOT / "dags"))


@pytest.fixture
def training_dag(dagbag: Any, airflow_db: Path) -> Any:
    """A fresh parse of the training DAG (tests may tweak retry delays on it)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "mur_training.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags["mur_training"]


@pytest.fixture
def discord() -> Iterator[DiscordStub]:
    stub = DiscordStub()
    yield stub
    stub.close()


@pytest.fixture
def webhook_env(discord: DiscordStub, monkeypatch: pytest.MonkeyPatch) -> Iterator[DiscordStub]:
    """``MUR_DISCORD_WEBHOOK_URL`` pointing at the stub, with the cached settings refreshed around the test."""
    from mur.settings import get_settings

    monkeypatch.setenv("MUR_DISCORD_WEBHOOK_URL", discord.url)
    get_settings.cache_clear()
    yield discord
    monkeypatch.delenv("MUR_DISCORD_WEBHOOK_URL")
    get_settings.cache_clear()


@pytest.fixture
def plain_settings(tmp_path: Path) -> Settings:
    """Settings with a private runtime dir (no services needed)."""
    return Settings(runtime_dir=tmp_path / "runtime", discord_webhook_url=None)
