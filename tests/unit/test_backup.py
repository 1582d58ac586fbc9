"""The backup's manifest and checksums (devstack/backup.py): what ``mur restore`` trusts before it drops a
database. The databases and bucket themselves: tests/integration/test_backup_restore.py."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.backup import MANIFEST, object_path, verify, write_manifest
from mur.errors import InvalidInputError


def a_backup(root: Path) -> dict:
    (root / "db").mkdir(parents=True)
    (root / "db" / "app.dump").write_bytes(b"PGDMP dump")
    object_path(root, "mlflow/1/models/m-1/artifacts/model.onnx").parent.mkdir(parents=True)
    object_path(root, "mlflow/1/models/m-1/artifacts/model.onnx").write_bytes(b"onnx weights")
    return write_manifest(root, market_time="2026-01-01T00:00:00+00:00", wall_time="now", bucket="b")


def test_the_manifest_lists_every_file_with_its_sha256(tmp_path: Path) -> None:
    manifest = a_backup(tmp_path)
    assert manifest["files"] == {
        "bucket/mlflow/1/models/m-1/artifacts/model.onnx": hashlib.sha256(b"onnx weights").hexdigest(),
        "db/app.dump": hashlib.sha256(b"PGDMP dump").hexdigest(),
    }
    assert json.loads((tmp_path / MANIFEST).read_text()) == manifest
    assert verify(tmp_path) == manifest


@pytest.mark.parametrize("damage", ["changed", "missing"])
def test_a_changed_or_missing_file_is_refused_by_name(tmp_path: Path, damage: str) -> None:
    a_backup(tmp_path)
    dump = tmp_path / "db" / "app.dump"
    if damage == "changed":
        dump.write_bytes(b"PGDMP dumq")
    else:
        dump.unlink()
    with pytest.raises(InvalidInputError, match=f"db/app.dump is {damage}"):
        verify(tmp_path)


def test_a_directory_without_manifest_or_of_another_format_is_no_backup(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="not a complete backup"):
        verify(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({"format": 99, "files": {}}))
    with pytest.raises(InvalidInputError, match="format 99"):
        verify(tmp_path)


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a/../../b", ""])
def test_an_object_key_never_leaves_the_bucket_folder(tmp_path: Path, key: str) -> None:
    with pytest.raises(InvalidInputError):
        object_path(tmp_path, key)
    assert object_path(tmp_path, "a/b.onnx") == tmp_path / "bucket" / "a" / "b.onnx"


def test_the_cli_refuses_a_damaged_backup_in_one_line(tmp_path: Path) -> None:
    a_backup(tmp_path)
    (tmp_path / "db" / "app.dump").write_bytes(b"tampered")
    done = subprocess.run(
        [sys.executable, "-m", "mur.cli", "restore", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"error: {tmp_path}: db/app.dump is changed"], done.stderr
