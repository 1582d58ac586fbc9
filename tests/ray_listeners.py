"""What the local stack listens on, and whether each listener beyond the loopback interface requires Ray's token.

Used by ``tests/integration/test_listening_sockets.py`` (a private S3 + Ray head + Serve app) and the
end-to-end test (the whole stack after ``mur up``). A listener beyond 127.0.0.1/::1 passes only if it is a
Ray gRPC server that refuses a real call without the token (``UNAUTHENTICATED``); every other one fails.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import psutil

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
REPLICA_METHOD = "/ray.serve.ASGIService/HandleRequest"
"""The method a Serve replica's inter-deployment gRPC server runs: it unpickles the request's metadata."""
PROBE_METHODS = (
    REPLICA_METHOD,
    "/ray.rpc.NodeManagerService/GetNodeStats",  # a raylet's node manager
    "/ray.rpc.ObjectManagerService/Push",  # a raylet's object manager
    "/ray.rpc.ReporterService/GetTraceback",  # a node's dashboard agent
    "/ray.rpc.CoreWorkerService/NumPendingTasks",  # a worker's core worker (a Serve replica's too)
)
"""One real method of each kind of Ray gRPC server that a node binds beyond 127.0.0.1 (a worker node whose
address is not 127.0.0.1 binds its raylet and dashboard agent on every interface); a server answers
``UNIMPLEMENTED`` for the others' methods."""


@dataclass(frozen=True)
class Listener:
    ip: str
    port: int
    name: str
    pid: int

    @property
    def loopback(self) -> bool:
        return self.ip in LOOPBACK


def marked_processes(runtime_dir: Path) -> list[psutil.Process]:
    """Every process carrying the stack's marker (``MUR_STACK={runtime dir}``: services, Ray workers, Serve
    replicas, Airflow tasks), their descendants, and the HAProxy processes of its private directory."""
    from devstack.processes import STACK_MARKER

    marker = f"{STACK_MARKER}={Path(runtime_dir).resolve()}"
    found: dict[int, psutil.Process] = {}
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.environ().get(STACK_MARKER) == marker.split("=", 1)[1]:
                found[process.pid] = process
                for child in process.children(recursive=True):
                    found[child.pid] = child
    return list(found.values())


def listeners(processes: list[psutil.Process]) -> set[Listener]:
    """Every listening TCP socket of ``processes``."""
    out = set()
    for process in processes:
        with contextlib.suppress(psutil.Error):
            name = process.name()
            for conn in process.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    out.add(Listener(conn.laddr.ip, conn.laddr.port, name, process.pid))
    return out


def http_status_without_token(host: str, port: int) -> int | None:
    """The status of a plain ``GET /`` without the token (None: not an HTTP server)."""
    import httpx

    try:
        return httpx.get(f"http://{host}:{port}/", timeout=5).status_code
    except httpx.HTTPError:
        return None


def grpc_status_without_token(port: int, token: str | None = None, host: str = "127.0.0.1") -> str:
    """Real gRPC calls to ``host:port`` (optionally with a bearer token), one per kind of Ray server
    (:data:`PROBE_METHODS`): the status code's name of the first method the server has (``UNAUTHENTICATED``
    when Ray's interceptor refuses it), ``UNIMPLEMENTED`` when it has none of them."""
    import grpc

    metadata = [("authorization", f"Bearer {token}")] if token else []
    status = "UNIMPLEMENTED"
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        for method in PROBE_METHODS:
            call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
            try:
                # an empty request message (it must parse: the interceptor runs after the request is decoded)
                call(b"", timeout=10, metadata=metadata)
            except grpc.RpcError as exc:
                status = str(exc.code().name)
                if status == "UNIMPLEMENTED":
                    continue
                return status
            return "OK"
    return status


def open_listeners(found: set[Listener]) -> list[str]:
    """The listeners beyond the loopback interface that answer without the token (empty: none)."""
    bad = []
    for listener in sorted(found, key=lambda x: (x.name, x.port)):
        if listener.loopback:
            continue
        if listener.name.startswith("ray::") or listener.name in ("raylet", "gcs_server"):
            host = "127.0.0.1" if listener.ip in ("0.0.0.0", "::") else listener.ip  # a node on 127.0.0.2 too
            status = grpc_status_without_token(listener.port, host=host)
            if status == "UNAUTHENTICATED":
                continue
            http = http_status_without_token(host, listener.port)  # the dashboard agent's HTTP server
            if http in (401, 403):
                continue
            status = f"{status}, HTTP {http}"
            bad.append(
                f"{listener.name} (pid {listener.pid}) on {listener.ip}:{listener.port}: gRPC {status}"
            )
        else:
            bad.append(f"{listener.name} (pid {listener.pid}) on {listener.ip}:{listener.port}")
    return bad
