"""One-shot setup steps run around service starts, like compose's one-shots (``minio-init``, ``migrate``),
and the Serve clean-up after ``serve`` stops."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import httpx

from mur.errors import ServiceError
from mur.settings import Settings
from mur.waiting import wait_until

SERVE_APPLICATIONS_PATH = "/api/serve/applications/"


def ensure_databases(settings: Settings, names: Iterable[str] | None = None) -> list[str]:
    """Create the missing PostgreSQL databases among ``names`` (default: app, MLflow, Airflow); return them."""
    import psycopg

    from mur.db.migrations import ensure_database

    db = settings.db
    wanted = list(names) if names is not None else [db.pg_database, db.mlflow_database, db.airflow_database]
    try:
        return [name for name in wanted if ensure_database(settings, name)]
    except psycopg.Error as exc:
        raise ServiceError(f"could not create databases {wanted}: {exc}".strip()) from exc


def migrate_app_database(settings: Settings) -> None:
    """The application schema (``sql/`` migrations), as compose's ``migrate`` one-shot."""
    from mur.db import migrate

    migrate(settings)


def ensure_bucket(settings: Settings, timeout_s: float = 120.0) -> None:
    """Create ``settings.registry.s3_bucket`` on the local S3 service if missing (compose: ``minio-init``),
    then wait until its objects (if any) can be read.

    A restarted SeaweedFS answers S3 (listings included) before its volume server's first heartbeat reached
    the master: for seconds (more on a busy machine) every read fails with ``volume N not found`` (HTTP 500).
    One readable object means the heartbeat, which carries every volume, has landed."""
    from botocore.exceptions import BotoCoreError, ClientError

    from mur.orchestration.job_submission import result_store

    client, bucket = result_store(settings), settings.registry.s3_bucket
    try:
        client.create_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise ServiceError(f"could not create bucket {bucket}: {exc}") from exc
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    stored = (o["Key"] for page in pages for o in page.get("Contents", []) if not o["Key"].endswith("/"))
    key = next(stored, None)
    if key is None:
        return

    def read() -> bool:
        client.get_object(Bucket=bucket, Key=key, Range="bytes=0-0")["Body"].close()
        return True

    wait_until(
        read,
        what=f"the object store to read its data (s3://{bucket}/{key})",
        timeout_s=timeout_s,
        retry_on=(BotoCoreError, ClientError),
        error=ServiceError,
    )


def undeploy_serve(settings: Settings, timeout_s: float = 30.0) -> None:
    """Remove the Serve applications from the Ray head through its REST API; a no-op when Ray is down.

    Run after the keeper stopped: else a later start would find the API answering and take it for a
    service somebody else runs.
    """
    url = settings.ray.ray_address.rstrip("/") + SERVE_APPLICATIONS_PATH
    with httpx.Client(timeout=10.0, trust_env=False, headers=settings.ray.headers()) as client:
        try:
            response = client.delete(url)
        except httpx.TransportError:
            return  # Ray is not running: neither is Serve
        if response.status_code >= 400:
            raise ServiceError(f"DELETE {url}: HTTP {response.status_code}: {response.text.strip()[:300]}")

        def gone() -> bool:
            try:
                details = client.get(url).json()
            except (httpx.HTTPError, ValueError):
                return True
            return not (details.get("controller_info") or {}).get("actor_id")

        wait_until(gone, what="Serve to shut down", timeout_s=timeout_s, error=ServiceError)


def serve_diagnosis(settings: Settings, haproxy_files: Path) -> str:
    """Why Serve's HTTP port does not answer, for a start that timed out: what the health URL answers, Serve's
    own view (controller, proxies, each deployment's status and replica states) and the last lines HAProxy
    wrote to its stderr (``haproxy_files``: the stack's private HAProxy directory)."""
    lines = []
    health = f"http://127.0.0.1:{settings.serving.serve_port}/healthz"
    try:
        answer = httpx.get(health, timeout=5.0, trust_env=False)
        lines.append(f"GET {health}: HTTP {answer.status_code} {answer.text.strip()[:200]}")
    except httpx.HTTPError as exc:
        lines.append(f"GET {health}: {type(exc).__name__}: {exc}")
    try:
        details = httpx.get(
            settings.ray.ray_address.rstrip("/") + SERVE_APPLICATIONS_PATH,
            headers=settings.ray.headers(),
            timeout=10.0,
            trust_env=False,
        ).json()
    except (httpx.HTTPError, ValueError) as exc:
        lines.append(f"Serve's state: unavailable ({type(exc).__name__}: {exc})")
        details = {}
    for node, proxy in (details.get("proxies") or {}).items():
        lines.append(f"proxy on node {node[:12]}: {proxy.get('status')} (actor {proxy.get('actor_name')})")
    for name, app in (details.get("applications") or {}).items():
        lines.append(f"app {name!r}: {app.get('status')} {app.get('message') or ''}".rstrip())
        for dep_name, dep in (app.get("deployments") or {}).items():
            states = [r.get("state") for r in dep.get("replicas") or []]
            lines.append(
                f"  deployment {dep_name}: {dep.get('status')} replicas {states} {dep.get('message') or ''}".rstrip()
            )
    logs = sorted(haproxy_files.glob("*/*.stderr.log"), key=lambda p: p.stat().st_mtime)[-2:]
    for log in logs:
        tail = log.read_text(errors="replace").strip().splitlines()[-8:]
        lines.append(f"{log.name}: " + (" | ".join(tail) if tail else "(empty)"))
    return "\n".join("    " + line for line in lines)
