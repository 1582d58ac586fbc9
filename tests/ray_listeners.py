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
    from mur.devstack.processes import STACK_MARKER

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


def grpc_status_without_token(port: int, token: str | None = None) -> str:
    """A real gRPC call to a replica's method on ``127.0.0.1:port`` (optionally with a bearer token); the
    status code's name (``UNAUTHENTICATED`` when Ray's interceptor refuses it)."""
    import grpc

    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(REPLICA_METHOD, request_serializer=None, response_deserializer=None)
        try:
            # an empty request message (it must parse: the interceptor runs after the request is decoded)
            call(b"", timeout=10, metadata=metadata)
        except grpc.RpcError as exc:
            return str(exc.code().name)
    return "OK"


def open_listeners(found: set[Listener]) -> list[str]:
    """The listeners beyond the loopback interface that answer without the token (empty: none)."""
    bad = []
    for listener in sorted(found, key=lambda x: (x.name, x.port)):
        if listener.loopback:
            continue
        if listener.name.startswith("ray::") or listener.name in ("raylet", "gcs_server"):
            status = grpc_status_without_token(listener.port)
            if status == "UNAUTHENTICATED":
                continue
            bad.append(
                f"{listener.name} (pid {listener.pid}) on {listener.ip}:{listener.port}: gRPC {status}"
            )
        else:
            bad.append(f"{listener.name} (pid {listener.pid}) on {listener.ip}:{listener.port}")
    return bad
