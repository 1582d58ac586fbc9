"""Local Airflow configuration without starting anything: environment, ports, secrets, admin password, services."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from mur import airflow_local as af
from mur.settings import PROJECT_ROOT, Settings


def _settings(tmp_path: Path, **kwargs: object) -> Settings:
    return Settings(runtime_dir=tmp_path / "runtime", **kwargs)  # type: ignore[arg-type]


def test_environment_points_at_the_project(tmp_path: Path) -> None:
    settings = _settings(tmp_path, max_parallel_trainings=3, airflow_url="http://127.0.0.1:8080")
    env = af.airflow_env(settings)
    assert env["AIRFLOW_HOME"] == str(tmp_path / "runtime" / "airflow")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(PROJECT_ROOT / "dags")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "5"
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
    assert af.ports(_settings(tmp_path, airflow_port=18080))["dag-processor"] == 18975


def test_services_for_the_registry(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    services = {s.name: s for s in af.airflow_services(settings)}
    assert list(services) == list(af.SERVICE_NAMES)
    api = services["airflow-api-server"]
    assert api.health_url == "http://127.0.0.1:8080/api/v2/monitor/health" and api.port == 8080
    for component in af.COMPONENTS:
        svc = services[f"airflow-{component}"]
        assert svc.depends_on == ("airflow-api-server",)
        assert svc.argv[1:5] == ["-m", "mur.airflow_local", "run", component]
        assert svc.health_url == f"http://127.0.0.1:{af.ports(settings)[component]}/health"
        assert svc.env["AIRFLOW_HOME"] == api.env["AIRFLOW_HOME"]
        assert svc.before_start is not None


def test_the_registry_accepts_them(tmp_path: Path) -> None:
    from mur import services as svc

    settings = _settings(tmp_path)
    registry = {**svc.default_services(settings), **{s.name: s for s in af.airflow_services(settings)}}
    order = svc.plan(registry, ["airflow-scheduler"])
    assert order == ["airflow-api-server", "airflow-scheduler"]
