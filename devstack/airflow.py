"""Airflow 3 on this machine: the configuration its four components share, and the metadata DB setup.

Configuration (environment, no airflow.cfg), as compose's ``x-airflow-env`` with generated secrets:
``AIRFLOW_HOME = {runtime_dir}/airflow``, metadata DB ``postgresql+psycopg2://…/{airflow_database}``, the
project's ``dags/`` folder, no examples, LocalExecutor with low parallelism, the simple auth manager with one
admin user (``settings.airflow.airflow_user``; password ``settings.airflow.airflow_password`` or generated once into
``{AIRFLOW_HOME}/passwords.json``). The JWT secret, API secret key and Fernet key are generated once into
``{AIRFLOW_HOME}/secrets.json`` (mode 600) so that the separately started components trust each other's
tokens. Every server binds 127.0.0.1. The services themselves are in :mod:`devstack.services`.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

from devstack import secret_files
from devstack.processes import venv_bin
from devstack.provision import ensure_databases
from mur.errors import ServiceError
from mur.orchestration.airflow_client import AirflowClient
from mur.settings import PROJECT_ROOT, Settings

SERVICE_NAMES = ("airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
ADMIN_ROLE = "admin"


# --- paths, ports, secrets -------------------------------------------------------------------------
def airflow_home(settings: Settings) -> Path:
    """``{runtime_dir}/airflow``."""
    return Path(settings.general.runtime_dir) / "airflow"


def ports(settings: Settings) -> dict[str, int]:
    """Ports besides the API server's, shifted with ``airflow_port`` (8080 → Airflow's usual ones)."""
    shift = settings.airflow.airflow_port - 8080
    return {"worker_logs": 8793 + shift, "trigger_logs": 8794 + shift, "scheduler": 8974 + shift}


def shared_secrets(home: Path) -> dict[str, str]:
    """JWT secret (the 64 bytes HS512 wants), API secret key and Fernet key shared by every component (generated
    once, mode 600: a running component keeps what it read, so an older stack's shorter secret is kept too)."""

    def make(data: dict[str, Any]) -> dict[str, str] | None:
        from cryptography.fernet import Fernet

        keys = {"jwt_secret": secrets.token_urlsafe(64), "api_secret_key": secrets.token_urlsafe(32)}
        return None if data else keys | {"fernet_key": Fernet.generate_key().decode()}

    return secret_files.ensure(home / "secrets.json", make)


def admin_password(settings: Settings) -> str:
    """The UI admin's password: ``settings.airflow.airflow_password``, else one generated once (``passwords.json``).

    The simple auth manager reads this file; a user missing from it would get a random password printed to
    the api-server's log instead.
    """
    path = airflow_home(settings) / "passwords.json"
    user = settings.airflow.airflow_user

    def fill(data: dict[str, Any]) -> dict[str, Any] | None:
        wanted = settings.airflow.airflow_password or data.get(user) or secrets.token_urlsafe(12)
        return None if data.get(user) == wanted else {user: wanted}

    return str(secret_files.ensure(path, fill)[user])


WORKER_SLOTS = 4
"""The LocalExecutor's task slots: the short tasks of a training and a monitoring run at once. A training task
holds one only to submit its Ray job and to read its result (it waits deferred, in the triggerer), so they no
longer grow with MUR_MAX_PARALLEL_TRAININGS (docs/airflow.md)."""


def airflow_env(settings: Settings) -> dict[str, str]:
    """Environment for every Airflow process of this project (CLI calls included)."""
    home = airflow_home(settings)
    keys = shared_secrets(home)
    p = ports(settings)
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(WORKER_SLOTS),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(WORKER_SLOTS),
        "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{settings.airflow.airflow_url.rstrip('/')}/execution/",
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{settings.airflow.airflow_user}:{ADMIN_ROLE}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": settings.db.sqlalchemy_url(settings.db.airflow_database),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(settings.airflow.airflow_port),
        "AIRFLOW__API__BASE_URL": settings.airflow.airflow_url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": keys["api_secret_key"],
        "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(p["worker_logs"]),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(p["trigger_logs"]),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "60",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(p["scheduler"]),
        "AIRFLOW__TRIGGERER__CAPACITY": "50",
        # the tasks a dead scheduler had queued go back to the queue within a minute of its restart, not five
        "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "30",
        # heartbeats lag on a busy machine (two cores training models): with Airflow's 30 s compose's
        # `airflow jobs check` (and the API server's health page) flapped to "unhealthy" for ~20 s at a time
        "AIRFLOW__DAG_PROCESSOR__HEALTH_CHECK_THRESHOLD": "90",
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "90",
        "NO_PROXY": "127.0.0.1,localhost",
    }


def airflow_cli(settings: Settings, *args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``airflow ARGS`` with the project's Airflow environment; a failure becomes a ServiceError."""
    env = {**os.environ, **airflow_env(settings)}
    command = [venv_bin("airflow"), *args]
    proc = subprocess.run(
        command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout_s
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise ServiceError(f"`airflow {' '.join(args)}` failed (exit {proc.returncode}):\n{tail}")
    return proc


# --- preparing the metadata DB ---------------------------------------------------------------------
def _db_revision(settings: Settings) -> str | None:
    """Alembic revision of the Airflow metadata DB, None when it has no schema yet."""
    import psycopg

    from mur.db import connect

    with connect(settings, database=settings.db.airflow_database) as conn:
        try:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except psycopg.errors.UndefinedTable:
            return None
    return row[0] if row else None


def prepare(settings: Settings) -> None:
    """Create the database, secrets and admin password; ``airflow db migrate`` unless already done.

    Idempotent and serialised with a file lock.
    """
    home = airflow_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    shared_secrets(home)
    admin_password(settings)
    ensure_databases(settings, [settings.db.airflow_database])
    stamp = home / ".migrated"
    with secret_files.locked(home / ".prepare"):
        revision = _db_revision(settings)
        wanted = f"{version('apache-airflow-core')} {settings.db.airflow_database}"
        if revision is not None and stamp.exists() and stamp.read_text().split("|")[0] == wanted:
            return
        airflow_cli(settings, "db", "migrate", timeout_s=900)
        stamp.write_text(f"{wanted}|{_db_revision(settings)}")


def client(settings: Settings) -> AirflowClient:
    """A REST client logged in as the local admin (the generated password when none is configured)."""
    return AirflowClient.from_settings(settings, password=admin_password(settings))
