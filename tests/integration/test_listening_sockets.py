"""Issue 16 #1/#9: every socket the local stack listens on is on the loopback interface, Serve included.

A private stack on free ports (S3 and a Ray head from the stack's own service table, in a temporary
runtime dir) runs a Serve app in the stack's HAProxy mode, joined by a driver started with a plain
environment through :func:`serve_app.deploy.connect_ray` (as ``mur serve`` joins the head). Then every listening TCP socket of every process of those
services (their sessions, their descendants, and HAProxy) is listed with psutil; any address that is not
127.0.0.1 / ::1 fails the test unless :func:`documented_exception` allows it (docs/services.md says why): each
Serve replica's inter-deployment gRPC server, and Ray's core processes only when the environment opts out of
the stack's loopback default (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1``).
MLflow, Airflow, the Serve keeper and the dashboard bind 127.0.0.1 by their command line
(tests/unit/test_stack.py::test_the_table_has_every_service_on_loopback).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mur.devstack import config
from mur.devstack import supervisor as svc
from mur.devstack.config import RAY_LOOPBACK_SWITCH as LOOPBACK_SWITCH  # "0": node address 127.0.0.1
from mur.devstack.services import haproxy_dir, stack_services
from mur.errors import ServiceError
from mur.settings import Settings

pytestmark = [pytest.mark.services, pytest.mark.service_start, pytest.mark.timeout(900)]

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


RAY_IMPORT = re.compile(r"\b(import|from) ray\b")
"""A ``python -c`` driver that imports Ray (its core worker listens like Ray's own processes)."""
DIRECT_INGRESS_PORTS = (range(30000, 31001), range(40000, 41001))
"""Serve replicas' own HTTP and gRPC servers in HAProxy mode: they bind Serve's host, 127.0.0.1."""


def documented_exception(name: str, cmdline: list[str], port: int, loopback_only: bool) -> bool:
    """Whether a listener beyond the loopback interface is one docs/services.md documents.

    1. A Serve replica's inter-deployment gRPC server: Ray 2.60 hardcodes ``[::]:0`` for it
       (``ray/serve/_private/replica.py``, ``_on_initialized``); its direct-ingress ports are not exempt.
    2. Opted out of the switch (``=1``), Ray's core processes: `ray start` replaces `--node-ip-address 127.0.0.1` with
       the LAN address, and its GCS, raylet, workers, agents and client server listen there or on every
       interface.
    HAProxy, S3 and everything else never may.
    """
    if name.startswith("ray::ServeReplica") and not any(port in ports for ports in DIRECT_INGRESS_PORTS):
        return True
    if loopback_only or name == "haproxy":
        return False
    ray_core = name in ("gcs_server", "raylet") or name.startswith(("ray::", "ray-dashboard"))
    ray_python = any("/ray/" in arg or arg.startswith("ray.") or RAY_IMPORT.search(arg) for arg in cmdline)
    return ray_core or ray_python  # Ray's dashboard, client server and the driver's core worker


DRIVER = """
import sys, time, urllib.request
from ray import serve
from mur.errors import ServiceError
from mur.settings import Settings
from serve_app.deploy import connect_ray

connect_ray(Settings(ray_gcs_port={gcs}))  # as `mur serve` joins the head, from a plain environment
serve.start(http_options={{"host": "127.0.0.1", "port": {http}}})

@serve.deployment(ray_actor_options={{"num_cpus": 0}})
class Hello:
    def __call__(self, request):
        return "hello"

serve.run(Hello.bind(), name="hello", route_prefix="/hello")
deadline = time.time() + 120
while True:
    try:
        with urllib.request.urlopen("http://127.0.0.1:{http}/hello", timeout=5) as r:
            if r.read() == b"hello":
                break
    except OSError:
        pass
    if time.time() > deadline:
        sys.exit("Serve did not answer")
    time.sleep(1)
print("SERVING", flush=True)
time.sleep(600)  # a driver stays connected (as the Serve keeper does) while the sockets are listed
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _free_ray_shift() -> int:
    for shift in range(3100, 6000, 41):
        try:
            for port in (8265, 10001, 52365, 9101, 8404, 6380):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port + shift))
        except OSError:
            continue
        return shift
    raise RuntimeError("no free port range for a private Ray head")


def _stack_processes(sessions: list[int], private_dir: Path) -> list[object]:
    import psutil

    found: dict[int, psutil.Process] = {}
    for sid in sessions:
        for pid in svc.session_members(sid):
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(pid)
                found[pid] = process
                for child in process.children(recursive=True):
                    found[child.pid] = child
    for process in psutil.process_iter(["cmdline"]):  # HAProxy, by its private configuration file
        with contextlib.suppress(psutil.Error, TypeError):
            if any(str(private_dir) in arg for arg in process.info["cmdline"] or []):
                found[process.pid] = process
    return list(found.values())


def _listening(processes: list[object], loopback_only: bool) -> set[tuple[str, int, str, bool]]:
    """``(address, port, process name, documented exception)`` of every listening TCP socket."""
    import psutil

    out = set()
    for process in processes:
        assert isinstance(process, psutil.Process)
        with contextlib.suppress(psutil.Error):
            name, cmdline = process.name(), process.cmdline()
            for conn in process.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    allowed = documented_exception(name, cmdline, conn.laddr.port, loopback_only)
                    out.add((conn.laddr.ip, conn.laddr.port, name, allowed))
    return out


@pytest.mark.parametrize("loopback_only", [True, False], ids=["default", "ray-opt-out"])
def test_the_stack_with_serve_listens_only_on_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loopback_only: bool
) -> None:
    import psutil

    if loopback_only:  # the stack's default: the head's environment gets the switch from the service table
        monkeypatch.delenv(LOOPBACK_SWITCH, raising=False)
    else:  # the environment opts out (inherited by the head: the supervisor passes it on)
        monkeypatch.setenv(LOOPBACK_SWITCH, "1")

    shift = _free_ray_shift()
    settings = config.align_settings(  # URLs follow the private ports
        Settings(
            runtime_dir=tmp_path / "runtime",
            s3_port=_free_port(),
            ray_dashboard_port=8265 + shift,
            ray_gcs_port=6380 + shift,
            ray_num_cpus=2,
            ray_object_store_mb=100,
        ),
        export=False,
    )
    assert settings.s3_endpoint_url.endswith(f":{settings.s3_port}")
    table = stack_services(settings)
    assert table["ray"].env[LOOPBACK_SWITCH] == ("0" if loopback_only else "1")
    registry = {name: table[name] for name in ("s3", "ray")}
    http_port = _free_port()
    plain_env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # no switch either
    driver: subprocess.Popen[str] | None = None
    try:
        started = svc.up(settings, list(registry), services=registry)
        driver = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(DRIVER.format(gcs=settings.ray_gcs_port, http=http_port))],
            env=plain_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        seen: list[str] = []
        assert driver.stdout is not None
        for line in driver.stdout:  # the driver exits (EOF) if Serve does not come up
            seen.append(line)
            if line.strip() == "SERVING":
                break
        if not seen or seen[-1].strip() != "SERVING":  # a start-up failure (one rerun), not a finding
            raise ServiceError("the Serve driver did not come up:\n" + "".join(seen)[-4000:])
        private = haproxy_dir(settings)

        def snapshot() -> set[tuple[str, int, str, bool]]:
            processes = _stack_processes([r.pid for r in started if r.pid], private)
            processes.append(psutil.Process(driver.pid))  # its core worker is a Ray process too
            return _listening(processes, loopback_only)

        # Serve may answer through its proxy before HAProxy has started on a busy machine: await HAProxy
        deadline = time.monotonic() + 90
        listening = snapshot()
        while not any(name == "haproxy" for _, _, name, _ in listening) and time.monotonic() < deadline:
            time.sleep(1.0)
            listening = snapshot()
        names = {name for _, _, name, _ in listening}
        assert "haproxy" in names, f"Serve's HAProxy is not running: {sorted(listening)}"
        haproxy_ports = {(ip, port) for ip, port, name, _ in listening if name == "haproxy"}
        for side_port in (9101 + shift, 8404 + shift):  # Prometheus and the stats page
            assert ("127.0.0.1", side_port) in haproxy_ports, sorted(haproxy_ports)
        public = sorted(a[:3] for a in listening if a[0] not in LOOPBACK and not a[3])
        assert not public, f"the stack listens beyond the loopback interface: {public}"
        # the admin socket: owner-only directory, owner-only socket
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
        [admin] = private.glob("*/admin.sock")  # Ray scopes the files by node id
        assert stat.S_ISSOCK(admin.stat().st_mode) and stat.S_IMODE(admin.stat().st_mode) & 0o077 == 0
    finally:
        if driver is not None:
            driver.kill()
            driver.wait()
        svc.down(settings, list(registry), services=registry)
        shutil.rmtree(haproxy_dir(settings), ignore_errors=True)  # in /tmp when tmp_path is too deep
