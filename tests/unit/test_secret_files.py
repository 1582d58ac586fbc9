"""Secret files of the local stack: atomic, locked, private, and never silently regenerated."""

from __future__ import annotations

import json
import stat
import threading
from pathlib import Path

import pytest

from devstack import secret_files
from devstack.config import stack_secret
from mur.errors import ConfigError
from mur.settings import Settings


def test_stack_secret_is_made_once_private_and_stable(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, runtime_dir=tmp_path)
    first = stack_secret(settings)
    assert len(first) >= 32 and stack_secret(settings) == first
    path = next(tmp_path.glob("*.json"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left behind


def test_an_empty_or_corrupt_secret_file_is_an_error_not_a_new_key(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, runtime_dir=tmp_path)
    stack_secret(settings)
    path = next(tmp_path.glob("*.json"))
    for broken in ("", "{not json", "[1, 2]"):
        path.write_text(broken)
        with pytest.raises(ConfigError, match="empty or corrupt"):
            stack_secret(settings)
        assert path.read_text() == broken  # left for the operator to restore


def test_parallel_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    made: list[str] = []
    barrier = threading.Barrier(8)

    def start(i: int) -> None:
        barrier.wait()
        data = secret_files.ensure(path, lambda d: None if d else {"key": f"k{i}"})
        made.append(data["key"])

    threads = [threading.Thread(target=start, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 1 and json.loads(path.read_text())["key"] == made[0]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secrets.json"
    secret_files.write(path, {"key": "old"})

    def crash(*_args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(secret_files.os, "replace", crash)
    with pytest.raises(OSError):
        secret_files.write(path, {"key": "new"})
    assert json.loads(path.read_text()) == {"key": "old"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_private_dir_is_created_owner_only_and_an_open_one_is_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = tmp_path / "open"
    opened.mkdir(mode=0o755)
    assert stat.S_IMODE(secret_files.private_dir(opened).stat().st_mode) == 0o700
    # created with mode 700 (as the backup folder was before private_dir): no moment open to other users
    monkeypatch.setattr(Path, "chmod", lambda self, mode: None)
    created = secret_files.private_dir(tmp_path / "new" / "keys")
    assert stat.S_IMODE(created.stat().st_mode) == 0o700


def test_airflows_jwt_secret_has_the_64_bytes_hs512_wants_and_is_never_regenerated(tmp_path: Path) -> None:
    """Airflow's API server warned "The HMAC key is 43 bytes long, below the minimum recommended length of 64
    bytes for SHA512" at every call. An older stack's secret is kept: its running components read it at their
    start, and a restarted one signing with another would lock the others' tokens out."""
    from devstack.airflow import shared_secrets

    made = shared_secrets(tmp_path)
    assert len(made["jwt_secret"].encode()) >= 64 and made["api_secret_key"] and made["fernet_key"]
    assert shared_secrets(tmp_path) == made  # generated once
    secret_files.write(tmp_path / "secrets.json", {**made, "jwt_secret": "x" * 43})  # an older stack's
    assert shared_secrets(tmp_path)["jwt_secret"] == "x" * 43
    assert stat.S_IMODE((tmp_path / "secrets.json").stat().st_mode) == 0o600
