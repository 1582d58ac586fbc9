"""Local Airflow configuration without starting anything: environment, ports, secrets, admin password, services."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from devstack import airflow as af
from devstack import supervisor
from devstack.services import stack_services
from mur.settings import PROJECT_ROOT, Settings


def _settings(tmp_path: Path, **kwargs: object) -> Settings:
    return Settings(runtime_dir=tmp_path / "runtime", **kwargs)  # type: ignore[arg-type]


def test_environment_points_at_the_project(tmp_path: Path) -> None:
    settings = _settings(tmp_path, max_parallel_trainings=8, airflow_url="http://127.0.0.1:8080")
    env = af.airflow_env(settings)
    assert env["AIRFLOW_HOME"] == str(tmp_path / "runtime" / "airflow")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(PROJECT_ROOT / "dags")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "4"  # deferred trainings hold no worker slot
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("/airflow")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8080/execution/"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"
    assert env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:8080"


def test_secrets_are_generated_once_and_private(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    first = af.airflow_env(settings)
    second = af.airflow_env(settings)
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY"):
        assert first[key] and first[key] == second[key]
    path = af.airflow_home(settings) / "secrets.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_admin_password_generated_then_overridden(tmp_path: Path) -> None:
    generated = af.admin_password(_settings(tmp_path))
    assert len(generated) >= 12
    assert af.admin_password(_settings(tmp_path)) == generated  # stable
    assert af.admin_password(_settings(tmp_path, airflow_password="chosen-one")) == "chosen-one"
    path = af.airflow_home(_settings(tmp_path)) / "passwords.json"
    assert json.loads(path.read_text()) == {"admin": "chosen-one"}  # what the simple auth manager reads
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_ports_shift_with_the_api_port(tmp_path: Path) -> None:
    assert af.ports(_settings(tmp_path))["scheduler"] == 8974
    assert af.ports(_settings(tmp_path, airflow_port=18080))["scheduler"] == 18974
    env = af.airflow_env(_settings(tmp_path, airflow_port=18080))
    assert env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT"] == "18974"
    assert env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] == "18793"


def test_services_in_the_table(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    table = stack_services(settings)
    api = table["airflow-api-server"]
    assert api.health_url == "http://127.0.0.1:8080/api/v2/monitor/health" and api.port == 8080
    assert api.command[1:] == ["api-server", "--host", "127.0.0.1", "--port", "8080"]
    for name in af.SERVICE_NAMES[1:]:
        svc = table[name]
        assert svc.depends_on == ("airflow-api-server",)
        component = name.removeprefix("airflow-")
        # no log server for the components that would start one on every interface (issue 22)
        log_flags = ["--skip-serve-logs"] if component in ("scheduler", "triggerer") else []
        assert svc.command[1:] == [component, *log_flags]
        assert svc.env["AIRFLOW_HOME"] == api.env["AIRFLOW_HOME"]
        assert svc.before_start is not None
    assert supervisor.plan(table, ["airflow-scheduler"]) == ["airflow-api-server", "airflow-scheduler"]
