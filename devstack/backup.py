"""``mur backup`` / ``mur restore``: the stack's state in a directory, with ``pg_dump`` and boto3.

A backup: ``db/{app,mlflow,airflow}.dump`` (``pg_dump --format=custom``), ``bucket/<key>`` (every object),
``runtime/…`` (the local stack's generated keys: the dashboard's, from which its API tokens derive, Airflow's
Fernet key, the Ray token, the S3 keys, MLflow's passwords; MLflow's accounts; the market clock) and, written
last, ``manifest.json`` (times, versions, a SHA-256 per file). The databases are dumped before the bucket is
read, and MLflow writes an object before the row that names it: every object the dumps refer to is in the copy.
Restore goes into the databases and bucket the settings name (they may differ from the backed-up ones).
Compose: docs/production.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path, PurePosixPath
from typing import Any

from devstack import secret_files
from mur.errors import InvalidInputError, ServiceError, first_line
from mur.orchestration.job_submission import result_store
from mur.settings import Settings

MANIFEST = "manifest.json"
FORMAT = 1
RUNTIME_FILES = (
    "stack-secrets.json",
    "airflow/secrets.json",
    "airflow/passwords.json",
    "clock.json",
    "clock-paused.json",
    "mlflow-auth/auth.db",  # MLflow's accounts and grants (devstack/mlflow_auth.py)
)
RESTORE_FLAGS = ("--no-owner", "--no-privileges", "--exit-on-error")  # grants: the migrations
Say = Callable[[str], None]


def databases(settings: Settings) -> dict[str, str]:
    """Each database's role in a backup (the dump's name) and its name in ``settings``."""
    db = settings.db
    return {"app": db.pg_database, "mlflow": db.mlflow_database, "airflow": db.airflow_database}


def sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def object_path(root: Path, key: str) -> Path:
    """Where object ``key`` lies in a backup; a key that would leave ``bucket/`` is refused."""
    parts = PurePosixPath(key).parts
    if not parts or key.startswith("/") or ".." in parts:
        raise InvalidInputError(f"object key {key!r} cannot be backed up as a file")
    return root / "bucket" / Path(*parts)


def write_manifest(root: Path, **info: Any) -> dict[str, Any]:
    """``manifest.json`` with ``info`` and the SHA-256 of every other file under ``root``."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = {"format": FORMAT, **info, "files": {p.relative_to(root).as_posix(): sha256(p) for p in files}}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return manifest


def verify(root: Path) -> dict[str, Any]:
    """The manifest of the backup at ``root`` once every file it lists has its checksum."""
    try:
        manifest: dict[str, Any] = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{root} is not a complete backup (no readable {MANIFEST}: {exc})") from None
    if manifest.get("format") != FORMAT:
        raise InvalidInputError(
            f"{root}: backup format {manifest.get('format')!r}, this version reads {FORMAT}"
        )
    for name, digest in manifest["files"].items():
        path = root / name
        if not path.is_file() or sha256(path) != digest:
            raise InvalidInputError(f"{root}: {name} is {'changed' if path.is_file() else 'missing'}")
    return manifest


def _pg(settings: Settings, tool: str, *args: str) -> None:
    """Run a PostgreSQL client tool as the owner (the password through the environment, never argv)."""
    db = settings.db
    env = {**os.environ, "PGPASSWORD": db.pg_password} if db.pg_password else None
    command = [tool, f"--host={db.pg_host}", f"--port={db.pg_port}", f"--username={db.pg_user}", *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode:  # pg_restore says "while PROCESSING TOC:" before its error line
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise ServiceError(f"{tool} failed: {next((x for x in lines if 'error:' in x), lines[0])}")


def _s3_error(settings: Settings, exc: Exception, key: str = "") -> ServiceError:
    reg = settings.registry
    where = f"{reg.s3_bucket}/{key}" if key else f"bucket {reg.s3_bucket}"
    return ServiceError(f"object store {reg.s3_endpoint_url} ({where}): {first_line(exc)}")


def backup(settings: Settings, dest: Path, say: Say = print) -> dict[str, Any]:
    """Write a backup of the stack ``settings`` describe into the new (or empty) directory ``dest``."""
    from botocore.exceptions import BotoCoreError, ClientError

    from mur.clock import market_clock
    from mur.db import connect
    from mur.registry.client import git_commit

    if dest.exists() and any(dest.iterdir()):
        raise InvalidInputError(f"{dest} is not empty: back up into a new directory")
    secret_files.private_dir(dest)  # it holds the stack's keys
    (dest / "db").mkdir(exist_ok=True)
    runtime = Path(settings.general.runtime_dir)
    for name in (n for n in RUNTIME_FILES if (runtime / n).is_file()):
        (dest / "runtime" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(runtime / name, dest / "runtime" / name)
    market, wall = market_clock(settings).now(), datetime.now(UTC)
    for role, name in databases(settings).items():
        say(f"dumping database {name}")
        _pg(settings, "pg_dump", "--format=custom", f"--file={dest / 'db' / role}.dump", name)
    bucket = settings.registry.s3_bucket
    say(f"copying bucket {bucket}")
    client, count, key = result_store(settings, timeout_s=60.0), 0, ""
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                if (key := item["Key"]).endswith("/"):
                    continue  # a folder marker: no content
                target = object_path(dest, key)
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, key, str(target))
                count += 1
                if count % 200 == 0:
                    say(f"  {count} objects")
    except (BotoCoreError, ClientError) as exc:
        raise _s3_error(settings, exc, key) from None
    say(f"{count} objects copied; writing checksums")
    with connect(settings, database="postgres") as conn:
        server = conn.execute("SHOW server_version").fetchone()
    return write_manifest(
        dest,
        market_time=market.isoformat(),
        wall_time=wall.isoformat(),
        versions={
            "make-us-rich": version("make-us-rich"),
            "git_commit": git_commit(settings),
            "mlflow": version("mlflow"),
            "postgresql": server[0] if server else None,
        },
        databases=databases(settings),
        bucket=bucket,
    )


def restore(settings: Settings, src: Path, *, force: bool = False, say: Say = print) -> dict[str, Any]:
    """Bring the backup at ``src`` back into the databases and bucket ``settings`` name; the stack stopped
    (``force``: even while it runs, closing the databases' connections)."""
    import psycopg
    from botocore.exceptions import BotoCoreError, ClientError
    from psycopg import sql

    from devstack import supervisor
    from mur.db import connect, migrate

    manifest = verify(src)
    say(f"checksums verified: {len(manifest['files'])} files from {manifest['wall_time']}")
    # what mur started and still runs, but the object store (the restore fills it)
    running = [s.name for s in supervisor.status(settings) if s.running and s.name != "s3"]
    if running and not force:
        raise ServiceError(
            f"the stack is running ({', '.join(running)}): `mur down` then `mur services start s3` first, "
            "or --force"
        )
    client, bucket = result_store(settings, timeout_s=60.0), settings.registry.s3_bucket
    try:
        client.list_buckets()  # before any database is dropped: the object store must answer
        for role, name in databases(settings).items():
            say(f"restoring database {name}")
            with connect(settings, database="postgres", autocommit=True) as conn:
                drop = "DROP DATABASE IF EXISTS {} WITH (FORCE)" if force else "DROP DATABASE IF EXISTS {}"
                conn.execute(sql.SQL(drop).format(sql.Identifier(name)))
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            dump = str(src / "db" / f"{role}.dump")
            _pg(settings, "pg_restore", *RESTORE_FLAGS, f"--dbname={name}", dump)
        migrate(settings)  # the application role and its grants (not in the dump), and newer migrations
        say(f"refilling bucket {bucket}")
        if bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
            client.create_bucket(Bucket=bucket)
        objects = [name for name in manifest["files"] if name.startswith("bucket/")]
        for count, name in enumerate(objects, 1):
            client.upload_file(str(src / name), bucket, name.removeprefix("bucket/"))
            if count % 200 == 0:
                say(f"  {count}/{len(objects)} objects")
    except psycopg.Error as exc:
        raise ServiceError(f"PostgreSQL: {first_line(exc)}") from None
    except (BotoCoreError, ClientError) as exc:
        raise _s3_error(settings, exc) from None
    for name in (n for n in manifest["files"] if n.startswith("runtime/")):
        target = Path(settings.general.runtime_dir) / name.removeprefix("runtime/")
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copy2(src / name, target)  # mode 600 kept
    say(f"restored {len(databases(settings))} databases and {len(objects)} objects")
    if any(s.running for s in supervisor.status(settings, ["s3"])):  # it signs with the keys it started with
        supervisor.down(settings, ["s3"])
        say("object store stopped: `mur up` starts it with the restored keys")
    return manifest
