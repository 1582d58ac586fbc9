"""No test run touches a developer's stack (issue 40): the shared test stacks resolve to no default port,
database, runtime dir, bucket or registry prefix, and a test run leaves the default stack's databases, MLflow
registry and bucket as they were (fingerprinted before and after a child run of tests that write to all
three; while the default stack runs, only what it does not change by itself: model names and users)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from stack_ports import all_ports

from devstack import supervisor
from mur.settings import PROJECT_ROOT, Settings, get_settings

pytestmark = pytest.mark.timeout(900)
PORTS = (
    "s3_port",
    "mlflow_port",
    "ray_gcs_port",
    "ray_dashboard_port",
    "ray_redis_port",
    "airflow_port",
    "serve_port",
    "dash_port",
)
DATABASES = ("pg_database", "mlflow_database", "airflow_database")


def _default_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """What a developer's ``mur up`` uses: the settings without the test run's ``MUR_*``."""
    with monkeypatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("MUR_")]:
            patch.delenv(name)
        return Settings()


def _ports(settings: Settings) -> set[int]:
    groups = settings.model_dump().values()
    return {group[port] for group in groups for port in PORTS if port in group}


def test_no_fixture_resolves_to_the_default_stack(
    stack_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = _default_settings(monkeypatch)
    for settings in (stack_settings, get_settings(), Settings()):
        moved = _ports(settings)
        assert moved.isdisjoint(all_ports(0)) and len(moved) == len(PORTS), moved
        names = {getattr(settings.db, d) for d in DATABASES}
        assert names.isdisjoint(getattr(default.db, d) for d in DATABASES), names
        runtime, default_runtime = Path(settings.general.runtime_dir), Path(default.general.runtime_dir)
        assert not runtime.resolve().is_relative_to(default_runtime.resolve()), runtime
        assert settings.registry.s3_bucket != default.registry.s3_bucket
        assert not settings.registry.registry_prefix.startswith(default.registry.registry_prefix)


def _rows(settings: Settings, database: str, query: str = "") -> list[Any]:
    """Each table's row count in ``database`` (or the rows of ``query``); [] when it does not exist."""
    try:
        conn = psycopg.connect(settings.db.dsn(database), connect_timeout=5, autocommit=True)
    except psycopg.OperationalError as exc:
        if "does not exist" in str(exc):
            return []
        raise
    with conn:
        if query:
            return conn.execute(query).fetchall()
        tables = [t for (t,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        count = "SELECT count(*) FROM {}"
        return sorted((t, conn.execute(sql.SQL(count).format(sql.Identifier(t))).fetchone()) for t in tables)


def _fingerprint(default: Settings, live: bool) -> dict[str, Any]:
    models = "SELECT name, version FROM model_versions ORDER BY 1, 2"
    names = {
        "models": _rows(default, default.db.mlflow_database, "SELECT name FROM registered_models ORDER BY 1")
    }
    try:
        names["users"] = _rows(default, default.db.pg_database, "SELECT username FROM users ORDER BY 1")
    except psycopg.errors.UndefinedTable:
        names["users"] = []
    if live:  # the running stack writes forecasts, versions and its bucket itself
        return names
    s3 = Path(default.general.runtime_dir) / "s3"
    return {
        **names,
        "versions": _rows(default, default.db.mlflow_database, models) if names["models"] else [],
        "tables": {d: _rows(default, getattr(default.db, d)) for d in DATABASES},
        "bucket": sorted((str(f.relative_to(s3)), f.stat().st_size) for f in s3.rglob("*") if f.is_file()),
    }


def test_a_test_run_leaves_the_default_stack_unchanged(
    services: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = _default_settings(monkeypatch)
    live = any(supervisor.running_pid(default, name) for name in ("s3", "mlflow", "ray"))
    before = _fingerprint(default, live)
    child = subprocess.run(  # tests that write to the test stack's registry, bucket and databases
        [sys.executable, "-m", "pytest", "tests/integration/test_services.py", "-q", "-n", "0", "-p", "no:cacheprovider",
         "-k", "bucket_exists or job_result or mlflow_run_artifact or ensure_databases_is_idempotent"],
        cwd=PROJECT_ROOT, env={**os.environ, "MUR_KEEP_SERVICES": "1"}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert child.returncode == 0 and " passed" in child.stdout, child.stdout[-3000:] + child.stderr[-2000:]
    assert _fingerprint(default, live) == before
