"""The local services for real: S3, MLflow, Ray, PostgreSQL databases, the supervisor.

Shared services come from the session fixture ``services`` (tests/integration/conftest.py). The object
store on its own (signed requests only, persistence): tests/integration/test_object_store.py.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.request
import uuid
from pathlib import Path

import psycopg2
import pytest
from minio import Minio
from psycopg2 import sql
from typer.testing import CliRunner

from devstack import supervisor as svc
from devstack.provision import ensure_databases
from devstack.services import Service
from mur.errors import DatabaseError, ServiceError
from mur.settings import Settings
from mur.waiting import wait_until

pytestmark = [pytest.mark.services, pytest.mark.timeout(900)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _minio(settings: Settings) -> Minio:
    return Minio(
        f"127.0.0.1:{settings.registry.s3_port}",
        access_key=settings.registry.s3_access_key,
        secret_key=settings.registry.s3_secret_key,
        secure=False,
        region="us-east-1",
    )


def _get_json(url: str, host: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        return response.status, response.read()


# --- the shared services -------------------------------------------------------------------------
def test_status_reports_pids_ports_and_health(services: Settings) -> None:
    rows = {row.name: row for row in svc.status(services, ["s3", "mlflow", "ray"])}
    expected_ports = {
        "s3": services.registry.s3_port,
        "mlflow": services.registry.mlflow_port,
        "ray": services.ray.ray_dashboard_port,
    }
    for name, port in expected_ports.items():
        row = rows[name]
        assert row.port == port
        assert row.healthy, row
        assert row.state in ("running", "external")
        if row.state == "running":  # started by mur: the pid file names a live session
            assert isinstance(row.pid, int) and row.processes >= 1
            assert row.memory_mb is not None and row.memory_mb > 0
            assert row.log_path == services.general.runtime_dir / "logs" / f"{name}.log"
            assert row.log_path.exists()


def test_start_when_running_is_a_noop(services: Settings) -> None:
    names = ["redis", "s3", "mlflow", "ray"]  # the GCS's Redis first: the head depends on it
    redis_log = svc.log_path(services, "redis")
    seen = redis_log.stat().st_size
    before = {row.name: row.pid for row in svc.status(services, names)}
    results = svc.up(services, ["s3", "mlflow", "ray"])
    assert [r.name for r in results] == names
    assert all(r.action in ("running", "external") for r in results)
    assert {r.name: r.pid for r in results} == before
    assert all(r.seconds < 10 for r in results)
    # the GCS's Redis was checked (status, up) with a TLS handshake: a bare connect logs an SSL error each time
    assert b"Error accepting a client connection" not in redis_log.read_bytes()[seen:]


def test_cli_status_lists_services(services: Settings) -> None:
    from mur.cli import app

    result = CliRunner().invoke(app, ["services", "status", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["service"]: row for row in json.loads(result.output)}
    assert {"s3", "mlflow", "ray"} <= set(rows)
    assert rows["mlflow"]["port"] == services.registry.mlflow_port and rows["mlflow"]["healthy"] is True


def test_bucket_exists(services: Settings) -> None:
    client = _minio(services)
    assert services.registry.s3_bucket in [b.name for b in client.list_buckets()]
    assert client.bucket_exists(services.registry.s3_bucket)


def test_a_job_result_is_taken_once_and_the_production_lifecycle_rule_is_valid_s3(services: Settings) -> None:
    """The submitter reads a Ray job's result and deletes it; minio-init's lifecycle rule (expire what a dead
    submitter left under job-results/) is accepted by an S3 server and reads back with its prefix and days."""
    import importlib.util

    from mur.orchestration import job_submission as jobs
    from mur.settings import PROJECT_ROOT

    sid = jobs.new_submission_id("test")
    uri = jobs.write_job_result(services, sid, '{"results": []}')
    assert uri.endswith(f"/job-results/{sid}.json")
    take = jobs.job_result_reader(services)
    assert take(sid) == '{"results": []}'
    assert take(sid) is None  # deleted once read

    spec = importlib.util.spec_from_file_location("init_bucket", PROJECT_ROOT / "infra/minio/init_bucket.py")
    assert spec is not None and spec.loader is not None
    init_bucket = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(init_bucket)
    client, bucket = _minio(services), f"lifecycle-{uuid.uuid4().hex[:8]}"
    client.make_bucket(bucket)
    try:
        client.set_bucket_lifecycle(bucket, init_bucket.job_results_lifecycle())
        [rule] = client.get_bucket_lifecycle(bucket).rules
        assert rule.rule_filter.prefix == "job-results/" and rule.expiration.days == jobs.JOB_RESULT_DAYS
        assert rule.noncurrent_version_expiration.noncurrent_days == 1
    finally:
        client.remove_bucket(bucket)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_mlflow_health_for_local_hosts(services: Settings, host: str) -> None:
    status, body = _get_json(
        f"http://127.0.0.1:{services.registry.mlflow_port}/health",
        host=f"{host}:{services.registry.mlflow_port}",
    )
    assert status == 200 and body.strip() == b"OK"


def test_mlflow_run_artifact_lands_in_s3(
    services: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow import MlflowClient

    # the client needs no S3 credentials: artefacts are proxied by the server
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", services.registry.mlflow_tracking_uri)
    # the stack's MLflow account, as registry.configure sets it (not left to an earlier test to have set it)
    user, password = services.registry.mlflow_username, services.registry.mlflow_password
    assert user and password, "the test stack has an MLflow account"
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    client = MlflowClient(services.registry.mlflow_tracking_uri)
    experiment_id = client.create_experiment(f"test-services-{uuid.uuid4().hex[:8]}")
    payload = os.urandom(4096)
    artefact = tmp_path / "weights.bin"
    artefact.write_bytes(payload)
    try:
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_metric("loss", 0.5)
            mlflow.log_artifact(str(artefact), artifact_path="files")
        run_id = run.info.run_id
        keys = [
            o.object_name
            for o in _minio(services).list_objects(
                services.registry.s3_bucket, prefix="mlflow/", recursive=True
            )
        ]
        matching = [k for k in keys if k.endswith(f"{run_id}/artifacts/files/weights.bin")]
        assert matching, keys[-20:]
        stored = _minio(services).get_object(services.registry.s3_bucket, matching[0])
        assert stored.read() == payload
        downloaded = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="files/weights.bin", dst_path=str(tmp_path / "dl")
        )
        assert Path(downloaded).read_bytes() == payload
    finally:
        client.delete_experiment(experiment_id)


def test_ray_jobs_api_answers_and_jobs_get_the_stack_env(services: Settings, tmp_path: Path) -> None:
    """A job runs in the project's venv with the stack's S3 endpoint, but no S3 keys in its environment
    (issue 22: they stay out of the Ray head's); a job given ``MUR_SECRETS_DIR`` reads them from its files."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(services.ray.ray_address)
    assert isinstance(client.list_jobs(), list)
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(mode=0o700)
    (secrets_dir / "mur_s3_access_key").write_text("key-from-a-file")
    code = (
        "import os, sys; from mur.settings import Settings; print('PY', sys.executable); "
        "print('ENV', os.environ.get('MLFLOW_S3_ENDPOINT_URL'), os.environ.get('AWS_ACCESS_KEY_ID')); "
        "print('FILE', Settings().registry.s3_access_key)"
    )
    job_id = client.submit_job(
        entrypoint=f'python -c "{code}"', runtime_env={"env_vars": {"MUR_SECRETS_DIR": str(secrets_dir)}}
    )
    ended = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    status = wait_until(
        lambda: client.get_job_status(job_id),
        what="the job to end",
        timeout_s=300,
        interval_s=1,
        done=ended.__contains__,
    )
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs
    assert f"PY {Path(sys.executable).parent}" in logs  # the project's venv, not the system python
    assert f"ENV {services.registry.s3_endpoint_url} None" in logs  # no S3 key inherited from the head
    assert "FILE key-from-a-file" in logs and "key-from-a-file" not in json.dumps(
        client.get_job_info(job_id).runtime_env
    )
    assert job_id in [j.submission_id for j in client.list_jobs()]


def test_ensure_databases_is_idempotent(settings: Settings) -> None:
    name = f"mur_test_{uuid.uuid4().hex[:10]}"
    try:
        assert ensure_databases(settings, [name]) == [name]
        assert ensure_databases(settings, [name]) == []
        assert name not in ensure_databases(settings)  # the defaults: mur, mlflow, airflow
        assert ensure_databases(settings) == []
    finally:
        conn = psycopg2.connect(settings.db.dsn("postgres"))
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.close()


def test_ensure_databases_reports_unreachable_postgres(settings: Settings) -> None:
    broken = settings.replace(pg_port=_free_port())
    with pytest.raises(DatabaseError, match="cannot connect to PostgreSQL"):
        ensure_databases(broken, ["whatever"])


# --- the supervisor itself ------------------------------------------------------------------------
def _python_service(name: str, code: str, port: int, **kwargs: object) -> Service:
    return Service(name=name, command=[sys.executable, "-c", code], port=port, **kwargs)  # type: ignore[arg-type]


def test_failed_start_names_the_service_and_shows_its_log(tmp_path: Path) -> None:
    settings = Settings(runtime_dir=tmp_path)
    broken = _python_service(
        "broken", "print('boom: bad config', flush=True); raise SystemExit(3)", _free_port()
    )
    with pytest.raises(ServiceError) as info:
        svc.start_service(settings, broken)
    message = str(info.value)
    assert "broken exited with code 3" in message and "boom: bad config" in message
    assert str(svc.log_path(settings, "broken")) in message
    assert not svc.pid_path(settings, "broken").exists()


def test_start_timeout_stops_what_it_started(tmp_path: Path) -> None:
    settings = Settings(runtime_dir=tmp_path)
    silent = _python_service(
        "silent",
        "import time; print('waiting', flush=True); time.sleep(600)",
        _free_port(),
        start_timeout_s=2,
    )
    with pytest.raises(ServiceError, match="silent did not answer tcp://127.0.0.1:.* within 2 s"):
        svc.start_service(settings, silent)
    assert not svc.pid_path(settings, "silent").exists()


STUBBORN = """
import signal, socket, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
server = socket.socket()
server.bind(("127.0.0.1", {port}))
server.listen()
time.sleep(600)
"""


def test_stop_signals_the_whole_session_and_escalates_to_sigkill(tmp_path: Path) -> None:
    settings = Settings(runtime_dir=tmp_path)
    port = _free_port()
    stubborn = _python_service("stubborn", STUBBORN.format(port=port), port, stop_timeout_s=1.0)
    started = svc.start_service(settings, stubborn)
    assert started.action == "started"
    assert svc.start_service(settings, stubborn).action == "running"  # idempotent
    members = svc.session_members(started.pid)  # type: ignore[arg-type]
    assert len(members) == 2  # the service and its child
    result = svc.stop_service(settings, stubborn)
    assert result.action == "killed"
    assert svc.session_members(started.pid) == []  # type: ignore[arg-type]
    assert svc.stop_service(settings, stubborn).action == "not running"


def test_plan_orders_dependencies() -> None:
    def make(name: str, *deps: str) -> Service:
        return Service(name=name, command=["true"], depends_on=deps)

    registry = {
        s.name: s
        for s in [
            make("dash", "serve"),
            make("serve", "ray", "mlflow"),
            make("ray"),
            make("mlflow", "s3"),
            make("s3"),
        ]
    }
    assert svc.plan(registry, ["mlflow"]) == ["s3", "mlflow"]
    order = svc.plan(registry, None)
    assert order.index("s3") < order.index("mlflow") < order.index("serve") < order.index("dash")
    assert svc.plan(registry, ["dash", "s3"], with_deps=False) == ["s3", "dash"]
    with pytest.raises(ServiceError, match="unknown service"):
        svc.plan(registry, ["nope"])


def test_a_killed_service_comes_back_by_itself(services: Settings) -> None:
    """Issue 42 #1: ``kill -9`` of S3's and MLflow's main processes on the test stack; the watchdog (as
    ``mur up`` starts it) brings each back healthy without a ``mur`` command, counts the restart in the
    status and records an alert naming it (undelivered: no webhook here)."""
    import signal
    import time

    from devstack import watchdog
    from devstack.health import latest_alerts

    watchdog.start(services)
    try:
        for name in ("s3", "mlflow"):
            (before,) = svc.status(services, [name])
            assert before.state == "running" and before.pid is not None, before
            killed = time.monotonic()
            os.kill(before.pid, signal.SIGKILL)

            def back(name: str = name, old: int = before.pid) -> svc.ServiceStatus | None:
                (row,) = svc.status(services, [name])
                return row if row.healthy and row.pid not in (None, old) else None

            row = wait_until(back, what=f"{name} back by itself", timeout_s=300, interval_s=0.5)
            print(f"{name}: killed -> healthy in {time.monotonic() - killed:.1f} s")
            assert row.state == "running" and row.restarts == before.restarts + 1
            died = [a for a in latest_alerts(services, limit=10) if a["service"] == name]
            assert died and died[-1]["event"] == "died" and str(before.pid) in died[-1]["message"]
    finally:
        watchdog.stop(services)
