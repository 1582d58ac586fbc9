"""A local HTTP server that answers JSON from a function of the request: the stand-in for a REST API (Airflow's,
the forecast API) in the CLI tests (``tests/`` is on ``sys.path`` through the root conftest)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    """With the query string."""
    headers: dict[str, str]
    body: Any


Route = Callable[[Request], tuple[int, Any]]


class JsonStandIn:
    """Serves ``route(request) -> (status, JSON body)`` on a free port of 127.0.0.1; keeps every request."""

    def __init__(self, route: Route) -> None:
        self.requests: list[Request] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                request = Request(
                    self.command, self.path, dict(self.headers), json.loads(raw) if raw else None
                )
                stand_in.requests.append(request)
                status, body = route(request)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
