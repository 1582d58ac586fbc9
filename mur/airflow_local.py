"""Airflow 3 on this machine: four supervised services and the configuration they share.

:func:`airflow_services` returns :class:`mur.services.Service` objects for the registry
(``"mur.airflow_local:airflow_services"`` in ``SERVICE_PROVIDERS``):

- ``airflow-api-server``  UI + REST + Execution API on ``settings.airflow_port`` (health ``/api/v2/monitor/health``)
- ``airflow-scheduler``, ``airflow-dag-processor``, ``airflow-triggerer``: each runs under a small wrapper
  (``python -m mur.airflow_local run COMPONENT --health-port P``) that answers ``GET /health`` with 200 while the
  component's process lives and its job heartbeat in the metadata DB is fresh. Airflow offers no health port
  for the DAG processor; the wrapper gives all three the same, meaningful check.

Configuration (environment, no airflow.cfg): ``AIRFLOW_HOME = {runtime_dir}/airflow``, metadata DB
``postgresql+psycopg2://…/{airflow_database}``, the project's ``dags/`` folder, no examples, LocalExecutor with
low parallelism, the simple auth manager with one admin user (``settings.airflow_user``; password
``settings.airflow_password`` or generated once into ``{AIRFLOW_HOME}/passwords.json``). The JWT secret, API
secret key and Fernet key are generated once into ``{AIRFLOW_HOME}/secrets.json`` (mode 600) so that the
separately started components trust each other's tokens.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mur.errors import ServiceError
from mur.settings import PROJECT_ROOT, Settings

if TYPE_CHECKING:
    from mur.services import Service

COMPONENTS = ("scheduler", "dag-processor", "triggerer")
SERVICE_NAMES = ("airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
JOB_TYPES = {"scheduler": "SchedulerJob", "dag-processor": "DagProcessorJob", "triggerer": "TriggererJob"}
HEARTBEAT_FRESH_S = 60.0
ADMIN_ROLE = "admin"


# --- paths, ports, secrets -------------------------------------------------------------------------
def airflow_home(settings: Settings) -> Path:
    """``{runtime_dir}/airflow``."""
    return Path(settings.runtime_dir) / "airflow"


def dags_folder() -> Path:
    """The project's ``dags/`` folder."""
    return PROJECT_ROOT / "dags"


def ports(settings: Settings) -> dict[str, int]:
    """Ports besides the API server's, shifted with ``airflow_port`` (8080 → Airflow's usual ones)."""
    shift = settings.airflow_port - 8080
    return {
        "worker_logs": 8793 + shift,
        "trigger_logs": 8794 + shift,
        "scheduler": 8974 + shift,
        "dag-processor": 8975 + shift,
        "triggerer": 8976 + shift,
    }


def _private_json(path: Path, make: Any) -> dict[str, str]:
    """Read a small JSON secrets file, creating it (mode 600) with ``make()`` when missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        with contextlib.suppress(ValueError, OSError):
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                return data
    data = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    return data


def shared_secrets(home: Path) -> dict[str, str]:
    """JWT secret, API secret key and Fernet key shared by every component (generated once)."""

    def make() -> dict[str, str]:
        from cryptography.fernet import Fernet

        return {
            "jwt_secret": secrets.token_urlsafe(32),
            "api_secret_key": secrets.token_urlsafe(32),
            "fernet_key": Fernet.generate_key().decode(),
        }

    return _private_json(home / "secrets.json", make)


def admin_password(settings: Settings, home: Path | None = None) -> str:
    """The UI admin's password: ``settings.airflow_password``, else one generated once (``passwords.json``).

    The simple auth manager reads this file; a user missing from it would get a random password printed to
    the api-server's log instead.
    """
    path = (home or airflow_home(settings)) / "passwords.json"
    data = _private_json(path, dict)
    wanted = settings.airflow_password or data.get(settings.airflow_user) or secrets.token_urlsafe(12)
    if data.get(settings.airflow_user) != wanted:
        data[settings.airflow_user] = wanted
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
    return wanted


def metadata_url(settings: Settings) -> str:
    """SQLAlchemy URL of Airflow's metadata DB (psycopg2 driver)."""
    return settings.sqlalchemy_url(settings.airflow_database)


def airflow_env(
    settings: Settings, *, home: Path | None = None, sql_alchemy_conn: str | None = None
) -> dict[str, str]:
    """Environment for every Airflow process of this project (CLI calls included)."""
    home = home or airflow_home(settings)
    keys = shared_secrets(home)
    p = ports(settings)
    parallelism = max(2, settings.max_parallel_trainings + 2)
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder()),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(parallelism),
        "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{settings.airflow_url.rstrip('/')}/execution/",
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{settings.airflow_user}:{ADMIN_ROLE}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_alchemy_conn or metadata_url(settings),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(settings.airflow_port),
        "AIRFLOW__API__BASE_URL": settings.airflow_url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": keys["api_secret_key"],
        "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(p["worker_logs"]),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(p["trigger_logs"]),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "60",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__TRIGGERER__CAPACITY": "50",
        "NO_PROXY": "127.0.0.1,localhost",
    }


def airflow_cli(
    settings: Settings, *args: str, timeout_s: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``airflow ARGS`` with the project's Airflow environment; a failure becomes a ServiceError."""
    env = {**os.environ, **airflow_env(settings)}
    proc = subprocess.run(
        [airflow_bin(), *args], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout_s
    )
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise ServiceError(f"`airflow {' '.join(args)}` failed (exit {proc.returncode}):\n{tail}")
    return proc


def airflow_bin() -> str:
    """The ``airflow`` console script next to this interpreter (the venv), else from PATH."""
    import shutil

    candidate = Path(sys.executable).parent / "airflow"
    return str(candidate) if candidate.exists() else (shutil.which("airflow") or "airflow")


# --- preparing the metadata DB ---------------------------------------------------------------------
def _db_revision(settings: Settings) -> str | None:
    """Alembic revision of the Airflow metadata DB, None when it has no schema yet."""
    import psycopg2

    try:
        conn = psycopg2.connect(settings.pg_dsn(settings.airflow_database), connect_timeout=5)
    except psycopg2.OperationalError as exc:
        raise ServiceError(
            f"cannot connect to the Airflow metadata DB {settings.airflow_database}: {exc}"
        ) from exc
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('public.alembic_version')")
            if cur.fetchone()[0] is None:
                return None
            cur.execute("SELECT version_num FROM alembic_version")
            row = cur.fetchone()
            return row[0] if row else None
    finally:
        conn.close()


def prepare(settings: Settings) -> bool:
    """Create the database, secrets and admin password; ``airflow db migrate`` unless already done.

    Idempotent and serialised with a file lock; returns True when it migrated.
    """
    import fcntl

    from mur.services import ensure_databases

    home = airflow_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    shared_secrets(home)
    admin_password(settings, home)
    ensure_databases(settings, [settings.airflow_database])
    stamp = home / ".migrated"
    with open(home / ".prepare.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        revision = _db_revision(settings)
        wanted = f"{_airflow_version()} {settings.airflow_database}"
        if revision is not None and stamp.exists() and stamp.read_text().split("|")[0] == wanted:
            return False
        airflow_cli(settings, "db", "migrate", timeout_s=900)
        stamp.write_text(f"{wanted}|{_db_revision(settings)}")
        return True


def _airflow_version() -> str:
    from importlib.metadata import version

    return version("apache-airflow-core")


# --- the services ----------------------------------------------------------------------------------
def airflow_services(settings: Settings) -> list[Service]:
    """The four Airflow components as supervised services (api-server first, the others depend on it)."""
    from mur.services import Service

    env = airflow_env(settings)
    before = functools.partial(prepare, settings)
    p = ports(settings)
    api = Service(
        name="airflow-api-server",
        argv=[airflow_bin(), "api-server", "--host", "127.0.0.1", "--port", str(settings.airflow_port)],
        env=env,
        port=settings.airflow_port,
        health_url=f"http://127.0.0.1:{settings.airflow_port}/api/v2/monitor/health",
        start_timeout_s=240,
        stop_timeout_s=20,
        cwd=PROJECT_ROOT,
        before_start=before,
        description="Airflow UI, REST API and Execution API",
    )
    wrapped = [
        Service(
            name=f"airflow-{component}",
            argv=[
                sys.executable,
                "-m",
                "mur.airflow_local",
                "run",
                component,
                "--health-port",
                str(p[component]),
            ],
            env=env,
            port=p[component],
            health_url=f"http://127.0.0.1:{p[component]}/health",
            start_timeout_s=240,
            stop_timeout_s=30,
            depends_on=("airflow-api-server",),
            cwd=PROJECT_ROOT,
            before_start=before,
            description=f"Airflow {component} (heartbeat-checked)",
        )
        for component in COMPONENTS
    ]
    return [api, *wrapped]


# --- the component wrapper ---------------------------------------------------------------------------
def latest_heartbeat_age(dsn: str, job_type: str) -> float | None:
    """Seconds since the freshest heartbeat of a running ``job_type`` job, None if there is none."""
    import psycopg2

    conn = psycopg2.connect(dsn, connect_timeout=3)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT EXTRACT(EPOCH FROM (now() - max(latest_heartbeat))) FROM job "
                "WHERE job_type = %s AND state = 'running'",
                (job_type,),
            )
            row = cur.fetchone()
            return None if row is None or row[0] is None else float(row[0])
    finally:
        conn.close()


def _libpq_dsn(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg2://", "postgresql://", 1)


def run_component(component: str, health_port: int) -> int:
    """Run ``airflow COMPONENT`` as a child and serve ``/health`` for it until it exits (or we are told to stop)."""
    if component not in JOB_TYPES:
        raise SystemExit(f"unknown component {component!r} (known: {', '.join(JOB_TYPES)})")
    dsn = _libpq_dsn(os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", ""))
    child = subprocess.Popen([airflow_bin(), component])
    state: dict[str, Any] = {"age": None, "checked": 0.0}

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            if self.path.rstrip("/") != "/health":
                self.send_error(404)
                return
            alive = child.poll() is None
            if time.monotonic() - state["checked"] > 5:
                try:
                    state["age"] = latest_heartbeat_age(dsn, JOB_TYPES[component])
                except Exception as exc:  # DB hiccup: report unhealthy, keep serving
                    state["age"] = None
                    state["error"] = str(exc)
                state["checked"] = time.monotonic()
            age = state["age"]
            healthy = alive and age is not None and age < HEARTBEAT_FRESH_S
            body = json.dumps(
                {"component": component, "alive": alive, "heartbeat_age_s": age, "healthy": healthy}
            ).encode()
            self.send_response(200 if healthy else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", health_port), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def forward(signum: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        return child.wait()
    finally:
        server.shutdown()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mur.airflow_local")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an Airflow component with a /health endpoint")
    run.add_argument("component", choices=COMPONENTS)
    run.add_argument("--health-port", type=int, required=True)
    args = parser.parse_args(argv)
    return run_component(args.component, args.health_port)


if __name__ == "__main__":
    sys.exit(main())


# --- REST client (trigger from scripts and tests; the UI does the same) ---------------------------------
class AirflowClient:
    """Tiny client for Airflow 3's public REST API (``/api/v2``) with a simple-auth-manager token."""

    def __init__(self, base_url: str, username: str, password: str, timeout_s: float = 30.0) -> None:
        import httpx

        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s, trust_env=False)
        response = self.http.post("/auth/token", json={"username": username, "password": password})
        if response.status_code not in (200, 201):
            raise ServiceError(
                f"Airflow at {base_url} refused the login of {username!r}: HTTP {response.status_code}"
            )
        self.http.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    @classmethod
    def from_settings(cls, settings: Settings) -> AirflowClient:
        return cls(settings.airflow_url, settings.airflow_user, admin_password(settings))

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, f"/api/v2{path}", **kwargs)
        if response.status_code >= 400:
            raise ServiceError(
                f"Airflow API {method} {path}: HTTP {response.status_code}: {response.text[:500]}"
            )
        return response.json() if response.content else None

    def dag(self, dag_id: str) -> dict[str, Any]:
        return self._json("GET", f"/dags/{dag_id}")

    def import_errors(self) -> list[dict[str, Any]]:
        return self._json("GET", "/importErrors")["import_errors"]

    def set_paused(self, dag_id: str, paused: bool) -> dict[str, Any]:
        return self._json("PATCH", f"/dags/{dag_id}", json={"is_paused": paused})

    def trigger(self, dag_id: str, conf: dict[str, Any], logical_date: str | None = None) -> dict[str, Any]:
        return self._json(
            "POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": logical_date, "conf": conf}
        )

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        from urllib.parse import quote

        return self._json("GET", f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        from urllib.parse import quote

        return self._json("GET", f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances")[
            "task_instances"
        ]

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self._json("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
        from urllib.parse import quote

        path = f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/xcomEntries/return_value"
        return self._json("GET", path, params={"map_index": map_index, "deserialize": True})["value"]

    def task_log(
        self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1
    ) -> str:
        """The text of one try's log (the structured lines' events joined)."""
        from urllib.parse import quote

        path = f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/logs/{try_number}"
        body = self._json(
            "GET", path, params={"map_index": map_index}, headers={"Accept": "application/json"}
        )
        content = body.get("content", [])
        return "\n".join(str(c.get("event", c)) if isinstance(c, dict) else str(c) for c in content)

    def wait_for_run(
        self, dag_id: str, run_id: str, timeout_s: float = 3600, poll_s: float = 5
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            run = self.dag_run(dag_id, run_id)
            if run["state"] in ("success", "failed"):
                return run
            if time.monotonic() > deadline:
                raise ServiceError(f"run {run_id} of {dag_id} still {run['state']} after {timeout_s:.0f} s")
            time.sleep(poll_s)

    def close(self) -> None:
        self.http.close()


def run_url(settings: Settings, dag_id: str, run_id: str) -> str:
    """The UI page of a DAG run."""
    from urllib.parse import quote

    return f"{settings.airflow_url.rstrip('/')}/dags/{dag_id}/runs/{quote(run_id, safe='')}"
