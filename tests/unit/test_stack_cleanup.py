"""A test stack leaves nothing in the system temp dir when it goes (tests/stack_ports.py ``remove_temp_files``),
and takes nothing of another stack's with it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from stack_ports import remove_temp_files

from devstack.serve_haproxy import haproxy_dir
from devstack.services import ray_temp_dir
from mur.settings import Settings


def test_a_stopped_stacks_temp_files_go_and_another_stacks_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    with socket.socket() as probe:  # a GCS port nothing listens on (a test stack may run beside: not 15030)
        probe.bind(("127.0.0.1", 0))
        gcs = probe.getsockname()[1]
    stack = Settings(_env_file=None, runtime_dir=tmp_path / "rt", ray_gcs_port=gcs, s3_port=17650)  # type: ignore[call-arg]
    other = stack.replace(runtime_dir=tmp_path / "other", ray_gcs_port=gcs + 1, s3_port=22070)
    mine = [
        ray_temp_dir(stack) / "session_latest" / "logs" / "raylet.out",
        ray_temp_dir(stack, 2) / "session_latest" / "logs" / "raylet.out",
        haproxy_dir(stack) / "node" / "admin.sock",
        temp / "seaweedfs-s3-17650.sock",
        temp / "seaweedfs-master-grpc-17655.sock",
    ]
    theirs = [
        ray_temp_dir(other) / "session_latest" / "logs" / "raylet.out",
        ray_temp_dir(other, 2) / "ray_current_cluster",
        temp / f"ray-{str(gcs)[:-1]}" / "ray_current_cluster",  # a port that is a prefix of the stack's
        temp / "ray" / "session_latest" / "logs" / "raylet.out",  # Ray's shared default: never ours
        temp / "seaweedfs-s3-22070.sock",
        temp / "seaweedfs-s3-1765.sock",
    ]
    for path in mine + theirs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")

    remove_temp_files(stack)

    assert [p for p in mine if p.exists()] == []
    assert not ray_temp_dir(stack).exists() and not ray_temp_dir(stack, 2).exists()
    assert [p for p in theirs if not p.exists()] == []


def test_a_running_heads_temp_dir_stays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with socket.socket() as gcs:  # a head's GCS listening on the stack's port
        gcs.bind(("127.0.0.1", 0))
        gcs.listen()
        stack = Settings(_env_file=None, runtime_dir=tmp_path / "rt", ray_gcs_port=gcs.getsockname()[1])  # type: ignore[call-arg]
        logs = ray_temp_dir(stack) / "session_latest" / "logs"
        logs.mkdir(parents=True)
        remove_temp_files(stack)
        assert logs.is_dir()
