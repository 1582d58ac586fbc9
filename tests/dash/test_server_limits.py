"""The dashboard's WSGI server (waitress, :func:`dash_app.server.make_server`): bounded threads, and slow
clients (half-sent or trickled requests) are closed within the request timeout without holding a thread."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from dash_app.server import CONNECTION_LIMIT, THREADS, DashServer, make_server

HALF_REQUEST = b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


@pytest.fixture
def serve() -> Iterator[Callable[..., DashServer]]:
    """Start :func:`make_server` on a free loopback port in a thread; stopped afterwards."""
    started: list[DashServer] = []

    def start(**limits: Any) -> DashServer:
        server = make_server(hello, host="127.0.0.1", port=0, **limits)
        assert isinstance(server, DashServer)
        threading.Thread(target=server.run, daemon=True).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()
        server.task_dispatcher.shutdown(timeout=5)


def connect(server: DashServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.effective_port), timeout=5)


def closed_by_server(sock: socket.socket, timeout: float, trickle: bool = False) -> float | None:
    """Seconds until the server closes ``sock`` (None: still open after ``timeout``); with ``trickle``, one
    more header byte every 0.2 s, so the connection is never idle."""
    start = time.monotonic()
    while (waited := time.monotonic() - start) < timeout:
        readable, _, _ = select.select([sock], [], [], 0.2)
        if readable:
            try:
                if sock.recv(4096) == b"":
                    return waited
            except ConnectionResetError:
                return waited
        elif trickle:
            try:
                sock.sendall(b"x")
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - start
    return None


def test_defaults_are_bounded() -> None:
    server = make_server(hello, host="127.0.0.1", port=0)
    try:
        assert isinstance(server, DashServer)
        assert server.adj.threads == THREADS and 1 <= THREADS <= 16
        assert server.adj.connection_limit == CONNECTION_LIMIT
        assert server.adj.channel_timeout <= 60 and server.request_timeout_s <= 15
        assert server.adj.cleanup_interval <= 1  # timeouts are looked at every second
        assert server.adj.clear_untrusted_proxy_headers is False  # the app's ProxyFix decides (hops)
    finally:
        server.close()


def test_a_half_sent_request_is_closed_after_the_idle_timeout(serve: Callable[..., DashServer]) -> None:
    server = serve(threads=2, idle_timeout_s=1, request_timeout_s=30)
    with connect(server) as sock:
        sock.sendall(HALF_REQUEST)
        waited = closed_by_server(sock, timeout=10)
    assert waited is not None and waited < 4, waited


def test_a_trickling_client_is_closed_after_the_request_timeout(serve: Callable[..., DashServer]) -> None:
    """Never idle (a byte every 0.2 s), yet its request is incomplete after the request timeout."""
    server = serve(threads=2, idle_timeout_s=30, request_timeout_s=1.5)
    with connect(server) as sock:
        sock.sendall(HALF_REQUEST)
        waited = closed_by_server(sock, timeout=10, trickle=True)
    assert waited is not None and 1.0 <= waited < 5, waited


def test_slow_clients_hold_no_worker_thread(serve: Callable[..., DashServer]) -> None:
    """More half-sent requests than threads: a complete request is still answered at once."""
    server = serve(threads=2, idle_timeout_s=30, request_timeout_s=30)
    slow = [connect(server) for _ in range(6)]
    try:
        for sock in slow:
            sock.sendall(HALF_REQUEST)
        response = httpx.get(f"http://127.0.0.1:{server.effective_port}/", timeout=3)
        assert response.status_code == 200 and response.text == "hello"
        assert response.headers["server"] == "mur-dash"
        assert all(closed_by_server(sock, timeout=0.1) is None for sock in slow)  # still open, only waiting
    finally:
        for sock in slow:
            sock.close()
