"""Persistent local S3: moto's standalone server plus a write-through disk mirror.

moto keeps buckets and objects in memory only, but MLflow's registry points at artefacts in S3, so the
local stack must not lose them on restart. This module runs moto's own WSGI app with two additions:

* hooks on moto's ``S3Backend`` methods that change buckets or objects note *which* bucket/key changed
  (per request thread);
* a WSGI middleware that, when a request has been handled and before its response is returned, copies
  the current state of every noted bucket/key to ``DATA_DIR`` (atomic renames, fsync'ed). A client
  therefore gets its ``200`` only once the change is on disk; a SIGTERM or SIGKILL later loses nothing.

At start the mirror is loaded back into moto before the port opens. (About 420 lines on purpose: the hooks,
the mirror and the WSGI wrapper only make sense together, and the file runs standalone as
``python -m devstack.s3_server`` with no other project import.) Layout::

    DATA_DIR/buckets/<bucket>/bucket.json             account, partition, region, versioning, created
    DATA_DIR/buckets/<bucket>/objects/<sha256>.json   key name, size, etag, metadata, tags, data file
    DATA_DIR/buckets/<bucket>/objects/<sha256>-<token>.bin   the bytes

The JSON file is the commit point: data is written under a fresh name first, then the JSON is atomically
replaced, then the old data file is removed; files left half-written by a crash are ignored and swept at
the next start. Persisted: buckets (region, versioning status, creation date) and the *current* version
of every object (bytes, ETag incl. multipart ETags, Content-Type and user metadata, storage class,
checksums, SSE fields, tags, last-modified). Not persisted: older versions and delete markers, bucket
policies/CORS/lifecycle/notifications/encryption configs, ACLs, unfinished multipart uploads.

Run: ``python -m devstack.s3_server --host 127.0.0.1 --port 9000 --data-dir .runtime/s3``.
``GET /_mur/health`` answers ``{"status": "ok", ...}`` once the mirror is loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import inspect
import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("devstack.s3_server")

HEALTH_PATH = "/_mur/health"
_BUCKET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$")

# (backend, bucket) or (backend, bucket, key) noted by the hooks in the current request thread
_pending = threading.local()


def _note(item: tuple[Any, ...]) -> None:
    """Remember that a bucket or key changed during this request."""
    items = getattr(_pending, "items", None)
    if items is None:
        items = _pending.items = []
    if item not in items:
        items.append(item)


def _take_pending() -> list[tuple[Any, ...]]:
    items = getattr(_pending, "items", None) or []
    _pending.items = []
    return items


def _key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _write_atomic(path: Path, data: bytes, *, fsync: bool) -> None:
    """Write ``path`` via a temporary file and rename, so readers never see a partial file."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class DiskMirror:
    """The on-disk copy of moto's S3 state; see the module docstring for the layout."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self.lock = threading.RLock()
        self.restored_buckets = 0
        self.restored_objects = 0
        self.writes = 0

    # --- paths -----------------------------------------------------------------------------------
    def bucket_dir(self, bucket: str) -> Path | None:
        """Directory of ``bucket`` (``None`` for names that are not safe as a directory name)."""
        if not _BUCKET_NAME.match(bucket) or ".." in bucket:
            return None
        return self.root / "buckets" / bucket

    # --- writing ---------------------------------------------------------------------------------
    def sync(self, items: Iterable[tuple[Any, ...]]) -> None:
        """Copy the current in-memory state of each noted bucket/key to disk."""
        with self.lock:
            for item in items:
                if len(item) == 2:
                    self._sync_bucket(item[0], item[1])
                else:
                    self._sync_key(item[0], item[1], item[2])

    def _sync_bucket(self, backend: Any, name: str) -> None:
        target = self.bucket_dir(name)
        if target is None:
            log.warning("bucket %r: name not persistable, kept in memory only", name)
            return
        bucket = backend.buckets.get(name)
        if bucket is None:
            if target.exists():
                trash = target.with_name(f".trash-{name}-{uuid.uuid4().hex[:8]}")
                os.replace(target, trash)
                shutil.rmtree(trash, ignore_errors=True)
                _fsync_dir(target.parent)
            return
        (target / "objects").mkdir(parents=True, exist_ok=True)
        meta = {
            "name": name,
            "account_id": backend.account_id,
            "partition": backend.region_name,
            "region_name": bucket.region_name,
            "versioning_status": bucket.versioning_status,
            "creation_date": bucket.creation_date.isoformat(),
        }
        _write_atomic(target / "bucket.json", json.dumps(meta, indent=1).encode(), fsync=self.fsync)
        _fsync_dir(target.parent)
        self.writes += 1

    def _sync_key(self, backend: Any, bucket_name: str, key_name: str) -> None:
        from moto.s3.models import FakeKey

        target = self.bucket_dir(bucket_name)
        bucket = backend.buckets.get(bucket_name)
        if target is None or bucket is None:
            return
        if not (target / "bucket.json").exists():
            self._sync_bucket(backend, bucket_name)
        objects = target / "objects"
        digest = _key_digest(key_name)
        meta_path = objects / f"{digest}.json"
        old = _read_json(meta_path)
        current = bucket.keys.get(key_name)
        if not isinstance(current, FakeKey):  # deleted, or a delete marker on a versioned bucket
            if old is not None:
                meta_path.unlink(missing_ok=True)
                (objects / old.get("data", "-")).unlink(missing_ok=True)
                _fsync_dir(objects)
                self.writes += 1
            return

        etag = current.etag.strip('"')
        last_modified = current.last_modified.isoformat()
        if (
            old
            and old.get("etag") == etag
            and old.get("last_modified") == last_modified
            and (objects / old.get("data", "-")).exists()
        ):
            data_name = old["data"]  # same object, only metadata/tags may have changed
        else:
            data_name = f"{digest}-{uuid.uuid4().hex[:12]}.bin"
            _write_atomic(objects / data_name, current.value, fsync=self.fsync)
        tags = backend.tagger.list_tags_for_resource(current.arn).get("Tags", [])
        meta = {
            "key": key_name,
            "data": data_name,
            "size": current.size,
            "etag": etag,
            "last_modified": last_modified,
            "metadata": dict(current.metadata),
            "storage_class": current.storage_class,
            "encryption": current.encryption,
            "kms_key_id": current.kms_key_id,
            "bucket_key_enabled": current.bucket_key_enabled,
            "website_redirect_location": current.website_redirect_location,
            "checksum_algorithm": current.checksum_algorithm,
            "checksum_value": current.checksum_value,
            "checksum_type": current.checksum_type,
            "checksum_parts": current.checksum_parts,
            "tags": {t["Key"]: t["Value"] for t in tags},
        }
        _write_atomic(meta_path, json.dumps(meta, indent=1).encode(), fsync=self.fsync)
        _fsync_dir(objects)
        if old and old.get("data") and old["data"] != data_name:
            (objects / old["data"]).unlink(missing_ok=True)
        self.writes += 1

    # --- reading ---------------------------------------------------------------------------------
    def restore(self) -> None:
        """Load every persisted bucket and object into moto (call before serving and before hooking)."""
        from moto.s3.models import s3_backends

        buckets_root = self.root / "buckets"
        buckets_root.mkdir(parents=True, exist_ok=True)
        for entry in sorted(buckets_root.iterdir()):
            if entry.name.startswith(".trash-"):
                shutil.rmtree(entry, ignore_errors=True)
                continue
            meta = _read_json(entry / "bucket.json")
            if meta is None:
                continue
            backend = s3_backends[meta["account_id"]][meta["partition"]]
            bucket = backend.create_bucket(meta["name"], meta["region_name"])
            bucket.versioning_status = meta.get("versioning_status")
            with contextlib.suppress(KeyError, ValueError, TypeError):
                bucket.creation_date = datetime.fromisoformat(meta["creation_date"])
            self.restored_buckets += 1
            self._restore_objects(backend, meta["name"], entry / "objects")

    def _restore_objects(self, backend: Any, bucket_name: str, objects: Path) -> None:
        if not objects.is_dir():
            return
        referenced: set[str] = set()
        for meta_path in sorted(objects.glob("*.json")):
            meta = _read_json(meta_path)
            data_path = objects / meta["data"] if meta else None
            if meta is None or data_path is None or not data_path.is_file():
                log.warning("skipping unreadable object record %s", meta_path.name)
                continue
            referenced.add(meta["data"])
            key = backend.put_object(
                bucket_name,
                meta["key"],
                data_path.read_bytes(),
                storage=meta.get("storage_class"),
                etag=meta.get("etag"),
                encryption=meta.get("encryption"),
                kms_key_id=meta.get("kms_key_id"),
                bucket_key_enabled=meta.get("bucket_key_enabled"),
                checksum_value=meta.get("checksum_value"),
                disable_notification=True,
            )
            key.set_metadata(dict(meta.get("metadata") or {}), replace=True)
            key.website_redirect_location = meta.get("website_redirect_location")
            key.checksum_algorithm = meta.get("checksum_algorithm")
            key.checksum_type = meta.get("checksum_type")
            key.checksum_parts = meta.get("checksum_parts")
            with contextlib.suppress(KeyError, ValueError, TypeError):
                key.last_modified = datetime.fromisoformat(meta["last_modified"])
            if meta.get("tags"):
                backend.put_object_tagging(key, meta["tags"])
            self.restored_objects += 1
        for leftover in objects.iterdir():  # data of interrupted writes, temporary files
            if leftover.name not in referenced and not leftover.name.endswith(".json"):
                leftover.unlink(missing_ok=True)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# --- hooks on moto's backend ---------------------------------------------------------------------
_BUCKET_METHODS = ("create_bucket", "delete_bucket", "put_bucket_versioning")
_KEY_METHODS = ("put_object", "delete_object", "delete_object_tagging", "put_object_tagging")


def install_hooks() -> None:
    """Wrap moto's mutating ``S3Backend`` methods so each notes the bucket/key it touched."""
    from moto.s3.models import S3Backend

    for name in _BUCKET_METHODS + _KEY_METHODS:
        original = getattr(S3Backend, name)
        if getattr(original, "_mur_hooked", False):
            continue
        setattr(S3Backend, name, _hooked(original, bucket_only=name in _BUCKET_METHODS))


def _hooked(original: Callable[..., Any], *, bucket_only: bool) -> Callable[..., Any]:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(self, *args, **kwargs)
        finally:
            try:
                bound = signature.bind(self, *args, **kwargs).arguments
                fake_key = bound.get("key")  # put_object_tagging takes the FakeKey itself
                bucket = bound.get("bucket_name") or getattr(fake_key, "bucket_name", None)
                key = bound.get("key_name") or getattr(fake_key, "name", None)
                if bucket and bucket_only:
                    _note((self, bucket))
                elif bucket and key:
                    _note((self, bucket, key))
            except TypeError:  # arguments did not bind: the call itself failed
                pass

    wrapper._mur_hooked = True  # type: ignore[attr-defined]
    return wrapper


class PersistenceMiddleware:
    """WSGI middleware: after each request, persist what it changed before the response goes out."""

    def __init__(self, app: Callable[..., Any], mirror: DiskMirror) -> None:
        self.app = app
        self.mirror = mirror
        self.started = time.time()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") == HEALTH_PATH:
            return self._health(start_response)
        _take_pending()  # drop anything a previous request on this thread left behind
        result = self.app(environ, start_response)
        items = _take_pending()
        if items:
            try:
                self.mirror.sync(items)
            except Exception:  # noqa: BLE001 - the client must learn that its write is not durable
                log.exception("could not persist %d change(s) to %s", len(items), self.mirror.root)
                if hasattr(result, "close"):
                    result.close()
                body = b"<Error><Code>InternalError</Code><Message>mur: persisting failed</Message></Error>"
                start_response(
                    "500 Internal Server Error",
                    [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))],
                    sys.exc_info(),
                )
                return [body]
        return result

    def _health(self, start_response: Callable[..., Any]) -> list[bytes]:
        body = json.dumps(
            {
                "status": "ok",
                "persistence": "write-through",
                "data_dir": str(self.mirror.root),
                "restored_buckets": self.mirror.restored_buckets,
                "restored_objects": self.mirror.restored_objects,
                "writes": self.mirror.writes,
                "uptime_s": round(time.time() - self.started, 1),
            }
        ).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


def build_app(data_dir: Path, *, fsync: bool = True) -> PersistenceMiddleware:
    """moto's server app with the disk mirror restored and write-through persistence installed."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    mirror = DiskMirror(data_dir, fsync=fsync)
    mirror.restore()
    install_hooks()
    app = DomainDispatcherApplication(create_backend_app)
    app.debug = False  # type: ignore[attr-defined]
    return PersistenceMiddleware(app, mirror)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (``python -m devstack.s3_server``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--no-fsync", action="store_true", help="faster, but not safe against power loss")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.access_log:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    os.environ.setdefault("MOTO_PORT", str(args.port))

    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import run_simple

    started = time.monotonic()
    app = build_app(args.data_dir, fsync=not args.no_fsync)
    log.info(
        "restored %d bucket(s), %d object(s) from %s in %.2f s",
        app.mirror.restored_buckets,
        app.mirror.restored_objects,
        args.data_dir,
        time.monotonic() - started,
    )

    def _stop(signum: int, _frame: Any) -> None:
        # let a write that is being persisted finish; every acknowledged write is already on disk
        acquired = app.mirror.lock.acquire(timeout=10)
        log.info("signal %d: stopping (writes %s)", signum, "settled" if acquired else "still running")
        sys.exit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    run_simple(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
