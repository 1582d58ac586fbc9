"""Serve's HAProxy in the local stack: stats and Prometheus on 127.0.0.1, admin socket owner-only (issue 16 #1/#9).

Ray's own template is rendered here, so a Ray upgrade that changes those lines fails these tests rather
than silently opening the ports again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from devstack import haproxy_wrapper
from devstack.services import haproxy_dir, haproxy_env, prepare_haproxy, stack_services
from mur.settings import Settings
from mur.waiting import wait_until


def ray_config(**overrides: object) -> str:
    """HAProxy's configuration as Ray 2.60's HAProxy manager renders it (no backends yet)."""
    from jinja2 import Environment
    from ray.serve._private.haproxy import HAProxyConfig, _haproxy_fmt_literal
    from ray.serve._private.haproxy_templates import HAPROXY_CONFIG_TEMPLATE

    env = Environment()
    env.filters["haproxy_fmt"] = _haproxy_fmt_literal
    config = HAProxyConfig(**{"metrics_enabled": False, **overrides})  # type: ignore[arg-type]
    return (
        "\n"
        + env.from_string(HAPROXY_CONFIG_TEMPLATE).render(
            {
                "config": config,
                "backends": [],
                "grpc_backends": [],
                "route_info": config.build_health_route_info([]),
                "has_ingress_request_router": False,
                "metrics_enabled": False,
            }
        )
        + "\n"
    )


def binds(config: str) -> list[str]:
    return [line.split()[1] for line in config.splitlines() if line.split()[:1] == ["bind"]]


def test_rays_template_binds_the_side_ports_everywhere_and_the_rewrite_binds_them_to_loopback() -> None:
    original = ray_config(stats_port=18404, metrics_port=19101)
    assert {":19101", "*:18404"} <= set(binds(original))  # what Ray 2.60 writes (and why the wrapper exists)
    assert " mode 666 " in original
    patched = haproxy_wrapper.rewrite(original)
    assert {"127.0.0.1:19101", "127.0.0.1:18404"} <= set(binds(patched))
    assert all(b.startswith(("127.0.0.1:", "[::1]:")) for b in binds(patched)), binds(patched)
    socket_line = next(line for line in patched.splitlines() if "stats socket" in line)
    assert " mode 600 " in socket_line and "level admin" in socket_line
    # an explicitly configured listener (Serve's HTTP frontend, MUR_SERVE_HOST) is left as configured
    assert haproxy_wrapper.rewrite("    bind 0.0.0.0:8000\n") == "    bind 0.0.0.0:8000\n"
    assert haproxy_wrapper.rewrite(patched) == patched


def test_the_real_haproxy_accepts_the_rewritten_configuration(tmp_path: Path) -> None:
    real = haproxy_wrapper.real_binary()
    if real is None:
        pytest.skip("no HAProxy binary (ray[serve] bundles one on Linux)")
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_wrapper.rewrite(ray_config(socket_path=str(tmp_path / "admin.sock"))))
    done = subprocess.run([real, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


def defaults_section(config: str) -> list[str]:
    """The stripped, non-empty lines of the ``defaults`` section."""
    lines = config.split("\ndefaults", 1)[1].splitlines()[1:]
    section = []
    for line in lines:
        if line and not line[0].isspace():
            break
        if line.strip():
            section.append(line.strip())
    return section


def test_the_rewrite_bounds_slow_clients_and_makes_haproxys_own_errors_json(tmp_path: Path) -> None:
    """Ray writes `timeout client 3600s` and no `timeout http-request`: a half-sent request was kept an hour."""
    original = ray_config(socket_path=str(tmp_path / "admin.sock"))
    assert "timeout client 3600s" in defaults_section(original)
    assert not any(line.startswith("timeout http-request") for line in defaults_section(original))
    errors = haproxy_wrapper.write_error_files(tmp_path / "errors")
    patched = haproxy_wrapper.rewrite(original, errors)
    section = defaults_section(patched)
    timeouts = {line.split()[1]: line.split()[2] for line in section if line.startswith("timeout ")}
    assert timeouts["http-request"] == "10s" and timeouts["http-keep-alive"] == "10s"
    assert timeouts["client"] == "30s" and timeouts["connect"] == "5s"  # Ray's other timeouts are kept
    assert sum(line.startswith("timeout client ") for line in section) == 1
    files = {int(line.split()[1]): Path(line.split()[2]) for line in section if line.startswith("errorfile ")}
    assert {400, 408, 413, 429, 500, 502, 503, 504} <= set(files)
    for code, path in files.items():
        head, _, body = path.read_bytes().partition(b"\r\n\r\n")
        status = int(head.split()[1])
        assert status == (500 if code in (502, 503, 504) else code)
        assert b"\r\nContent-Type: application/json\r\n" in head
        assert f"Content-Length: {len(body)}".encode() in head
        assert set(json.loads(body)) == {"error"}
    assert haproxy_wrapper.rewrite(patched, errors) == patched  # idempotent (every reload rewrites the file)
    real = haproxy_wrapper.real_binary()
    if real is not None:  # HAProxy itself accepts the timeouts and reads the error files
        config = tmp_path / "haproxy.cfg"
        config.write_text(patched)
        done = subprocess.run([real, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr


FAKE_HAPROXY = """import sys
print(repr(sys.argv[1:]))
print(open(sys.argv[sys.argv.index("-f") + 1]).read())
"""


def test_the_launcher_patches_the_file_and_runs_haproxy_with_the_same_arguments(tmp_path: Path) -> None:
    fake = tmp_path / "fake-haproxy"
    fake.write_text(f"#!{sys.executable}\n{FAKE_HAPROXY}")
    fake.chmod(0o755)
    launcher = haproxy_wrapper.write_launcher(tmp_path / "bin" / "haproxy", str(fake))
    assert stat.S_IMODE(launcher.stat().st_mode) == 0o700
    config = tmp_path / "haproxy.cfg"
    config.write_text(ray_config(socket_path=str(tmp_path / "admin.sock")))
    args = ["-db", "-f", str(config), "-dR", "-sf", "123"]
    done = subprocess.run([str(launcher), *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == repr(args)  # Ray finds its HAProxy by the config path in argv
    assert "bind 127.0.0.1:9101" in done.stdout and "bind *:8404" not in done.stdout
    errors = config.parent / "errors"  # the JSON error files, beside the configuration
    assert config.read_text() == haproxy_wrapper.rewrite(
        ray_config(socket_path=str(tmp_path / "admin.sock")), errors
    )
    assert sorted(p.name for p in errors.iterdir()) == sorted(
        f"{c}.json.http" for c in haproxy_wrapper.ERRORS
    )


def test_the_ray_head_runs_haproxy_through_the_launcher_in_a_private_directory(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, runtime_dir=tmp_path / "runtime")
    ray = stack_services(settings)["ray"]
    for key, value in haproxy_env(settings).items():
        assert ray.env[key] == value and value.startswith(str(haproxy_dir(settings)))
    for socket_path in (
        ray.env["RAY_SERVE_HAPROXY_SOCKET_PATH"],
        ray.env["RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH"],
    ):
        directory, name = os.path.split(socket_path)
        assert len(os.path.join(directory, "f" * 56, name)) <= 97  # Ray scopes it by node id; HAProxy's max
    assert ray.before_start is not None
    base = haproxy_dir(settings)  # tmp_path's runtime dir is too long for HAProxy's sockets: a /tmp directory
    try:
        ray.before_start()
        assert stat.S_IMODE(base.stat().st_mode) == 0o700  # nobody else reaches the admin socket
        launcher = Path(ray.env["RAY_SERVE_HAPROXY_BINARY_PATH"])
        if haproxy_wrapper.real_binary() is not None:
            assert os.access(launcher, os.X_OK)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_long_runtime_dir_moves_haproxy_to_a_short_private_path(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    settings = Settings(_env_file=None, runtime_dir=deep)
    base = haproxy_dir(settings)
    assert len(str(base / ("f" * 56) / "metrics.sock")) <= 97 and base == haproxy_dir(settings)
    assert not str(base).startswith(str(deep))
    try:
        prepare_haproxy(settings)
        assert stat.S_IMODE(base.stat().st_mode) == 0o700
    finally:
        shutil.rmtree(base, ignore_errors=True)


class ClosesReusedConnections(threading.Thread):
    """A backend that answers the first request of each connection and closes the connection on the next one
    without an answer: what HAProxy meets when it reuses an idle connection to a Serve replica that died."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    @staticmethod
    def serve(conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
            conn.recv(65536)  # the next request on this connection: closed without an answer


def test_haproxy_retries_a_get_whose_reused_server_connection_died(tmp_path: Path) -> None:
    """With Ray's retries (connect failures only) HAProxy closes the client's connection without an answer when
    a reused server connection dies; rewritten, the GET is retried on a new connection. A POST is not retried."""
    real = haproxy_wrapper.real_binary()
    if real is None:
        pytest.skip("no HAProxy binary (ray[serve] bundles one on Linux)")
    backend = ClosesReusedConnections()
    backend.start()
    front = socket.create_server(("127.0.0.1", 0))
    port = front.getsockname()[1]
    front.close()
    ray_like = (
        "defaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n"
        "    option redispatch 1\n    retry-on conn-failure\n"
        f"frontend http_frontend\n    bind 127.0.0.1:{port}\n    default_backend app\n"
        f"backend app\n    http-reuse always\n    server replica 127.0.0.1:{backend.port}\n"
    )

    def answers(config: str, methods: tuple[str, ...]) -> list[int | str]:
        path = tmp_path / "haproxy.cfg"
        path.write_text(config)
        proc = subprocess.Popen([real, "-db", "-f", str(path)], stderr=subprocess.PIPE)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                wait_until(
                    lambda: _get(client) == 200, what="HAProxy to answer", timeout_s=30, interval_s=0.1
                )
                out: list[int | str] = []
                for method in methods:  # one client connection; each request reuses the server connection
                    try:
                        out.append(client.request(method, "/").status_code)
                    except httpx.RemoteProtocolError:
                        out.append("closed without an answer")
                return out
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    assert answers(ray_like, ("GET",)) == ["closed without an answer"]
    assert answers(haproxy_wrapper.rewrite(ray_like), ("GET", "GET", "POST")) == [
        200,
        200,
        "closed without an answer",
    ]


class Replica(threading.Thread):
    """A replica that answers every request (``body``) until :meth:`kill`: then, as after ``kill -9``, each
    connection HAProxy kept open is closed on its next request without an answer and new ones are refused."""

    def __init__(self, body: bytes) -> None:
        super().__init__(daemon=True)
        self.body, self.dead = body, threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]

    def run(self) -> None:
        while not self.dead.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: socket.socket) -> None:
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(self.body)}\r\n\r\n"
        )
        with conn, contextlib.suppress(OSError):
            while True:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk or self.dead.is_set():
                        return
                    data += chunk
                conn.sendall(head.encode() + self.body)

    def kill(self) -> None:
        self.dead.set()
        self.server.shutdown(socket.SHUT_RDWR)  # wakes accept(): the port refuses connections from now on
        self.server.close()


def test_a_get_on_a_kept_connection_to_a_replica_just_killed_reaches_the_backup(tmp_path: Path) -> None:
    """Ray marks a replica DOWN after ``error-limit`` refused connections (``observe layer4 ... on-error
    mark-down``), then a retry goes to the ``backup`` server (the fallback proxy, which waits for a new replica).
    A GET that met the dead replica on a kept server connection first (an empty response, retried) has, with
    HAProxy's 3 retries, spent its last one on the third refusal: HAProxy then closes a keep-alive client's
    connection without an answer (the e2e fault matrix met it once in 1,998 requests, 0.3 s after killing the
    API replica). With the stack's ``RAY_SERVE_HAPROXY_RETRIES`` the GET reaches the backup."""
    from ray.serve._private.constants import RAY_SERVE_HAPROXY_OBSERVE_ERROR_LIMIT as LIMIT
    from ray.serve._private.haproxy_templates import HAPROXY_CONFIG_TEMPLATE as TEMPLATE

    from devstack.services import LOCAL_DRAIN_ENV

    real = haproxy_wrapper.real_binary()
    if real is None:
        pytest.skip("no HAProxy binary (ray[serve] bundles one on Linux)")
    # what the configuration below copies from Ray's
    assert "observe layer4 error-limit {{ config.observe_error_limit }} on-error mark-down" in TEMPLATE
    assert "check backup" in TEMPLATE
    front = socket.create_server(("127.0.0.1", 0))
    port = front.getsockname()[1]
    front.close()

    def answer(retries: str) -> str:
        replica, backup = Replica(b'{"from": "replica"}'), Replica(b'{"from": "backup"}')
        replica.start()
        backup.start()
        config = haproxy_wrapper.rewrite(
            "defaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n"
            f"    option redispatch 1\n    retry-on conn-failure\n    retries {retries}\n"
            f"frontend http_frontend\n    bind 127.0.0.1:{port}\n    default_backend app\n"
            "backend app\n    http-reuse always\n    option httpchk GET /\n    default-server inter 5s\n"
            f"    server replica 127.0.0.1:{replica.port} check observe layer4 error-limit {LIMIT} on-error"
            f" mark-down\n    server fallback 127.0.0.1:{backup.port} check backup\n"
        )
        (tmp_path / "haproxy.cfg").write_text(config)
        proc = subprocess.Popen([real, "-db", "-f", str(tmp_path / "haproxy.cfg")], stderr=subprocess.PIPE)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                wait_until(
                    lambda: _get(client) == 200, what="HAProxy to answer", timeout_s=30, interval_s=0.1
                )
                replica.kill()
                try:
                    response = client.get("/")  # the next request of the client's kept connection
                except httpx.RemoteProtocolError:
                    return "closed without an answer"
                return f"{response.status_code} {response.json()['from']}"
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            backup.kill()

    assert answer("3") == "closed without an answer"  # HAProxy's default, Ray's unless set
    assert answer(LOCAL_DRAIN_ENV["RAY_SERVE_HAPROXY_RETRIES"]) == "200 backup"


def _get(client: httpx.Client) -> int:
    try:
        return client.get("/").status_code
    except httpx.HTTPError:
        return 0


def test_two_stacks_never_share_a_fixed_serve_port(
    tmp_path: Path,
) -> None:
    """Serve's fallback proxy binds with SO_REUSEPORT (Ray's default), so a second stack's proxy on the same
    port does not fail: the kernel splits the connections between both, and one stack's requests reach the
    other's API. Every fixed port of Serve's HAProxy mode moves with the stack's Ray ports."""
    default = Settings(_env_file=None, runtime_dir=tmp_path / "a")
    shifted = default.replace(ray_dashboard_port=8265 + 8650, runtime_dir=tmp_path / "b")
    envs = [stack_services(s)["ray"].env for s in (default, shifted)]
    for key in ("RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT",
                "RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_HAPROXY_STATS_PORT"):  # fmt: skip
        assert int(envs[1][key]) == int(envs[0][key]) + 8650, key
    assert envs[0]["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"] == "8500"  # Ray's default, for `mur up`'s stack
