"""The restore drill (issue 42): back up the test stack (a user and a token, usage, a track-record row, a
registered model with two versions and a champion), restore into fresh databases, a fresh bucket and a
fresh runtime dir, start an MLflow server on them, and find the same state: the token authenticates, the
champion is the same version with the same artefact bytes, the track record and usage are identical, the
next registered version takes the next number. Not covered: a forecast through Serve on the restored stack."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from devstack import backup as bk
from devstack import supervisor as svc
from devstack.config import ray_token
from devstack.provision import ensure_databases
from devstack.services import stack_services
from mur import db as mdb
from mur import registry
from mur.errors import ServiceError
from mur.orchestration.job_submission import result_store
from mur.settings import Settings

pytestmark = [pytest.mark.services, pytest.mark.service_start, pytest.mark.timeout(600)]
PAIR = "btc_usdt"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def register_versions(settings: Settings, name: str, weights: bytes, tmp: Path, count: int) -> Any:
    """``count`` versions of ``name``, each a run with a ``model/model.onnx`` artefact of ``weights``."""
    client = registry.configure(settings)
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    (tmp / "model.onnx").write_bytes(weights)
    versions = []
    for _ in range(count):
        run = client.create_run(experiment_id)
        client.log_artifact(run.info.run_id, str(tmp / "model.onnx"), "model")
        source = f"{run.info.artifact_uri}/model"
        versions.append(client.create_model_version(name, source, run_id=run.info.run_id))
    return client, versions


def champion_bytes(settings: Settings, client: Any, name: str, dest: Path) -> tuple[str, bytes]:
    import mlflow

    version = client.get_model_version_by_alias(name, registry.CHAMPION)
    path = mlflow.artifacts.download_artifacts(
        run_id=version.run_id,
        artifact_path="model/model.onnx",
        dst_path=str(dest),
        tracking_uri=settings.registry.mlflow_tracking_uri,
    )
    return version.version, Path(path).read_bytes()


def product_state(settings: Settings, user_id: int, token: str) -> tuple[Any, ...]:
    db = mdb.Database(settings, maxconn=1)
    try:
        owner = mdb.lookup_token(db, token=token)
        forecasts = mdb.list_forecasts(db, pair=PAIR)
        return (owner, forecasts, mdb.get_usage(db, user_id=user_id))
    finally:
        db.close()


@pytest.fixture
def fresh(services: Settings, tmp_path: Path) -> Iterator[Settings]:
    """The test stack's settings with new database names, bucket, runtime dir and MLflow port; all removed."""
    tag, port = uuid.uuid4().hex[:8], free_port()
    settings = services.replace(
        pg_database=f"mur_rst_{tag}",
        mlflow_database=f"mur_rst_mlflow_{tag}",
        airflow_database=f"mur_rst_airflow_{tag}",
        s3_bucket=f"mur-rst-{tag}",
        runtime_dir=tmp_path / "runtime",
        mlflow_port=port,
        mlflow_tracking_uri=f"http://127.0.0.1:{port}",
    )
    try:
        yield settings
    finally:
        svc.down(settings, ["mlflow"], services=drill_services(settings))
        with psycopg.connect(settings.db.dsn("postgres"), autocommit=True) as conn:
            for name in bk.databases(settings).values():
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        s3 = result_store(settings, timeout_s=60.0)
        with contextlib.suppress(Exception):
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=settings.registry.s3_bucket):
                for item in page.get("Contents", []):
                    s3.delete_object(Bucket=settings.registry.s3_bucket, Key=item["Key"])
            s3.delete_bucket(Bucket=settings.registry.s3_bucket)


def drill_services(settings: Settings) -> dict[str, Any]:
    every = stack_services(settings)
    return {"s3": every["s3"], "mlflow": every["mlflow"]}


def test_a_restored_stack_has_the_same_users_registry_track_record_and_usage(
    services: Settings, fresh: Settings, tmp_path: Path, restored_environ: None
) -> None:
    mdb.migrate(services)
    ensure_databases(services, [services.db.airflow_database])
    db = mdb.Database(services, maxconn=1)
    try:
        user = mdb.create_user(db, username=f"b{uuid.uuid4().hex[:10]}", password=f"Pw-{uuid.uuid4().hex}")
        token, _ = mdb.create_token(db, user_id=user.id)
        mdb.consume_quota(db, user_id=user.id, units=3)
        mdb.record_forecast(
            db,
            pair=PAIR,
            model_version="1",
            target_time=datetime(2026, 1, 1, 13, tzinfo=UTC),
            predicted=101.5,
            last_close=100.0,
            lower=99.0,
            upper=104.0,
            level=0.8,
        )
    finally:
        db.close()
    name = registry.model_name(PAIR, services.registry.registry_prefix + f"bkp{uuid.uuid4().hex[:6]}-")
    weights = os.urandom(9 * 2**20)  # above boto3's 8 MiB: multipart transfers both ways
    client, versions = register_versions(services, name, weights, tmp_path, 2)
    client.set_registered_model_alias(name, registry.CHAMPION, versions[0].version)
    before = champion_bytes(services, client, name, tmp_path / "before")
    assert before == ("1", weights)
    state = product_state(services, user.id, token)
    keys = Path(services.general.runtime_dir) / "stack-secrets.json"  # the Ray token, the dashboard's key
    assert ray_token(services) and keys.is_file()
    assert state[0] is not None and state[0].user_id == user.id and len(state[1]) == 1 and state[2][0] == 3

    dest = tmp_path / "backup"
    try:  # the command, on the test stack's settings (this process's MUR_* environment)
        done = subprocess.run(
            [sys.executable, "-m", "mur.cli", "backup", str(dest)],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        client.delete_registered_model(name)  # the backup holds it; the test stack's registry drops it
    assert "dumping database" in done.stderr and done.returncode == 0, done.stderr
    manifest = json.loads((dest / bk.MANIFEST).read_text())
    assert set(manifest["files"]) >= {"db/app.dump", "db/mlflow.dump", "db/airflow.dump"}
    assert any(f.startswith("bucket/mlflow/") for f in manifest["files"]), manifest["files"]
    assert manifest["versions"]["postgresql"].startswith("15") and manifest["versions"]["mlflow"]
    assert manifest["market_time"] and manifest["databases"] == bk.databases(services)

    bk.restore(fresh, dest, say=print)
    svc.up(fresh, ["mlflow"], services=drill_services(fresh))
    with pytest.raises(ServiceError, match=r"the stack is running \(mlflow\)"):
        bk.restore(fresh, dest)

    assert product_state(fresh, user.id, token) == state
    assert (Path(fresh.general.runtime_dir) / keys.name).read_bytes() == keys.read_bytes()
    restored = registry.configure(fresh)
    assert champion_bytes(fresh, restored, name, tmp_path / "after") == before
    (tmp_path / "next").mkdir()
    _, [following] = register_versions(fresh, name, b"next", tmp_path / "next", 1)
    assert following.version == "3"
