"""Issue 16 #1/#9 and issue 22: the local stack listens only on the loopback interface, and every Ray API
requires Ray's token (``RAY_AUTH_MODE=token``).

A private stack on free ports (the object store and a Ray head from the stack's own service table, in a temporary
runtime dir) runs a Serve app in the stack's HAProxy mode, joined by a driver started with a plain
environment and the token through :func:`serve_app.deploy.connect_ray` (as ``mur serve`` joins the head).
Then every listening TCP socket of every process of those services (their sessions, their descendants, and
HAProxy) is listed with psutil. A listener beyond 127.0.0.1 / ::1 passes only when it refuses a real call
without the token: each Serve replica's inter-deployment gRPC server binds ``[::]:0`` whatever Ray's node
address (``ray/serve/_private/replica.py``) and unpickles what it is sent, so it is called with gRPC, without
the token, and must answer ``UNAUTHENTICATED``. The Jobs API and the dashboard's API refuse a call without
the token (401) and take one with it. Airflow's listeners are checked on the whole stack by the end-to-end
test (tests/e2e), MLflow's, the keeper's and the dashboard's by their command line
(tests/unit/test_stack.py::test_the_table_has_every_service_on_loopback). The private local Ray that
``mur tune`` starts without a cluster is checked the same way, from an environment without Ray's settings.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import psutil
import pytest
from ray_listeners import Listener, grpc_status_without_token, listeners, open_listeners
from stack_ports import free_ray_shift, remove_temp_files
from test_object_store import free_port_block

from devstack import config, seaweed
from devstack import supervisor as svc
from devstack.config import RAY_AUTH_SWITCH, RAY_TOKEN_VAR
from devstack.gcs_redis import redis_dir
from devstack.services import haproxy_dir, stack_services
from mur.errors import ServiceError
from mur.settings import Settings
from mur.waiting import wait_until

pytestmark = [pytest.mark.services, pytest.mark.service_start, pytest.mark.timeout(900)]


DRIVER = """
import time, urllib.request
from mur.settings import Settings
from mur.waiting import wait_until
from serve_app.deploy import connect_ray

connect_ray(Settings(ray_gcs_port={gcs}))  # from a plain environment with the token, before Ray is imported
from ray import serve
serve.start(http_options={{"host": "127.0.0.1", "port": {http}}})

@serve.deployment(ray_actor_options={{"num_cpus": 0}})
class Hello:
    def __call__(self, request):
        return "hello"

serve.run(Hello.bind(), name="hello", route_prefix="/hello")
def hello():
    with urllib.request.urlopen("http://127.0.0.1:{http}/hello", timeout=5) as r:
        return r.read() == b"hello"

wait_until(hello, what="Serve to answer", timeout_s=120, interval_s=1, retry_on=(OSError,))
print("SERVING", flush=True)
time.sleep(600)  # a driver stays connected (as the Serve keeper does) while the sockets are listed
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _redis_answers(port: int, tls: Path | None = None, *, certificate: bool = False) -> bool:
    """Whether Redis answers PING: in plain text (``tls`` None), or over TLS trusting ``tls/ca.pem``, with the
    stack's client certificate or without one."""
    import ssl

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            sock: socket.socket = raw
            if tls is not None:
                context = ssl.create_default_context(cafile=tls / "ca.pem")
                if certificate:
                    context.load_cert_chain(tls / "cert.pem", tls / "key.pem")
                sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
            sock.sendall(b"PING\r\n")
            return b"PONG" in sock.recv(64)
    except (OSError, ssl.SSLError):
        return False


def _stack_processes(sessions: list[int], private_dir: Path) -> list[psutil.Process]:
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


def test_the_stack_listens_on_loopback_and_ray_requires_its_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(RAY_AUTH_SWITCH, raising=False)  # the stack's default: token auth
    for url_field in config.URL_FIELDS:  # a shared test stack's URLs (its moved ports): these follow ours
        monkeypatch.delenv(f"MUR_{url_field.upper()}", raising=False)
    shift = free_ray_shift(range(3100, 6000, 41))
    settings = config.align_settings(  # URLs follow the private ports
        Settings(
            runtime_dir=tmp_path / "runtime",
            s3_port=free_port_block(),  # the object store opens eight ports
            ray_dashboard_port=8265 + shift,
            ray_gcs_port=6380 + shift,
            ray_redis_port=6381 + shift,
            ray_num_cpus=2,
            ray_object_store_mb=100,
        ),
        export=False,
    )
    table = stack_services(settings)
    token = table["ray"].env[RAY_TOKEN_VAR]
    assert table["ray"].env[RAY_AUTH_SWITCH] == "token" and token == settings.ray.ray_auth_token
    registry = {name: table[name] for name in ("s3", "redis", "ray")}
    http_port = _free_port()
    plain_env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # no switch either
    driver: subprocess.Popen[str] | None = None
    try:
        started = svc.up(settings, list(registry), services=registry)
        [head] = [r for r in started if r.name == "ray"]
        # supervised: the leader is `ray start --block` itself
        assert head.action == "started" and head.pid and "--block" in psutil.Process(head.pid).cmdline()
        # the Jobs API and the dashboard's API: refused without the token, answered with it
        jobs = f"{settings.ray.ray_address}/api/jobs/"
        refused = httpx.post(jobs, json={"entrypoint": 'python -c \'open("/tmp/pwned", "w")\''}, timeout=30)
        assert refused.status_code == 401, refused.text
        assert httpx.get(jobs, timeout=30).status_code == 401
        assert httpx.get(jobs, headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 403
        assert httpx.get(f"{settings.ray.ray_address}/api/serve/applications/", timeout=30).status_code == 401
        assert httpx.get(jobs, headers=settings.ray.headers(), timeout=30).status_code == 200

        driver = subprocess.Popen(  # a plain environment with the token: what a client needs
            [
                sys.executable,
                "-c",
                textwrap.dedent(DRIVER.format(gcs=settings.ray.ray_gcs_port, http=http_port)),
            ],
            env={**plain_env, RAY_TOKEN_VAR: token},
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

        def snapshot() -> set[Listener]:
            processes = _stack_processes([r.pid for r in started if r.pid], private)
            processes.append(psutil.Process(driver.pid))  # its core worker is a Ray process too
            return listeners(processes)

        # Serve may answer through its proxy before HAProxy has started on a busy machine: await HAProxy
        found = wait_until(
            snapshot,
            what="Serve's HAProxy",
            timeout_s=90,
            interval_s=1.0,
            done=lambda f: any(x.name == "haproxy" for x in f),
        )
        # the object store: exactly its eight ports, all on 127.0.0.1 (test_object_store.py: each refuses
        # anonymous use)
        weed = {(x.ip, x.port) for x in found if x.name == "weed"}
        assert weed == {("127.0.0.1", p) for p in seaweed.ports(settings.registry.s3_port).values()}, weed
        # the GCS's Redis: its one port on 127.0.0.1, TLS only, and a client without the stack's certificate
        # is refused (a plain-text command or a TLS client without one)
        redis_port = settings.ray.ray_redis_port
        assert {(x.ip, x.port) for x in found if x.name == "redis-server"} == {("127.0.0.1", redis_port)}
        tls = redis_dir(settings) / "tls"
        assert not _redis_answers(redis_port) and not _redis_answers(redis_port, tls)
        assert _redis_answers(redis_port, tls, certificate=True)  # as the GCS connects
        haproxy_ports = {(x.ip, x.port) for x in found if x.name == "haproxy"}
        for side_port in (9101 + shift, 8404 + shift):  # Prometheus and the stats page
            assert ("127.0.0.1", side_port) in haproxy_ports, sorted(haproxy_ports)
        # Serve's fallback proxy (HAProxy's backup server) moved too: on Ray's fixed 8500 it would share the
        # port with another stack's proxy (SO_REUSEPORT) and answer that stack's requests
        proxy = {(x.ip, x.port) for x in found if x.name == "ray::ProxyActor"}
        assert ("127.0.0.1", 8500 + shift) in proxy and ("127.0.0.1", 8500) not in proxy, sorted(proxy)

        # each Serve replica's gRPC server is beyond loopback: a real call without the token is refused
        replicas = [x for x in found if x.name.startswith("ray::ServeReplica") and not x.loopback]
        assert replicas, f"no replica gRPC server found: {sorted(map(str, found))}"
        for replica in replicas:
            assert grpc_status_without_token(replica.port) == "UNAUTHENTICATED"
            assert grpc_status_without_token(replica.port, "wrong-token") == "UNAUTHENTICATED"
        bad = open_listeners(found)
        assert not bad, f"listening beyond the loopback interface without requiring the token: {bad}"
        assert not Path("/tmp/pwned").exists()
        # the admin socket: owner-only directory, owner-only socket
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
        [admin] = private.glob("*/admin.sock")  # Ray scopes the files by node id
        assert stat.S_ISSOCK(admin.stat().st_mode) and stat.S_IMODE(admin.stat().st_mode) & 0o077 == 0
    finally:
        if driver is not None:
            driver.kill()
            driver.wait()
        stopped = svc.down(settings, list(registry), services=registry)
        remove_temp_files(settings)  # Ray's temp dir, SeaweedFS's sockets, HAProxy's dir: in /tmp
    # stopped cleanly: every service, and nothing answers on the head's port
    assert all(r.action in ("stopped", "killed") for r in stopped), stopped
    assert not svc.probe(registry["ray"])


PRIVATE_RAY = """
import os
import sys
from mur.training.tune import private_ray_env, start_ray

private_ray_env(os.environ)  # as `mur tune` does, from an environment without any Ray setting
start_ray(None, 1)
import ray

assert ray.get(ray.remote(lambda: 42).remote()) == 42
print("READY", flush=True)
sys.stdin.readline()
ray.shutdown()
"""


def test_mur_tunes_private_ray_listens_on_loopback_behind_a_token_of_its_own(tmp_path: Path) -> None:
    """``mur tune`` without a cluster starts a private local Ray (mur/training/tune.py::start_ray). Before
    2026-11-24 it listened on every interface (its metrics exporters among them) and Ray left the token it
    generated in ``~/.ray/auth_token``: now every socket of its processes is on 127.0.0.1, its raylet refuses a
    call without the token, and nothing was written to the home directory."""
    home = tmp_path / "home"
    home.mkdir()
    unset = {RAY_AUTH_SWITCH, RAY_TOKEN_VAR, config.RAY_LOOPBACK_SWITCH, "RAY_ADDRESS"}
    env = {k: v for k, v in os.environ.items() if k not in unset} | {"HOME": str(home)}
    with (tmp_path / "driver.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", PRIVATE_RAY],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
            start_new_session=True,
        )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        ready = proc.stdout.readline()  # the driver's line once a task ran, or '' if it died
        assert ready.strip() == "READY", (tmp_path / "driver.log").read_text()[-3000:]
        driver = psutil.Process(proc.pid)
        found = listeners([driver, *driver.children(recursive=True)])
        assert {"gcs_server", "raylet"} <= {x.name for x in found}, found
        assert [f"{x.name} on {x.ip}:{x.port}" for x in found if not x.loopback] == []
        raylet = [x.port for x in found if x.name == "raylet"]
        assert "UNAUTHENTICATED" in {grpc_status_without_token(port) for port in raylet}
        assert not (home / ".ray").exists(), "no token left in the home directory"
    finally:
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # the driver shuts its Ray down
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
