"""A local HTTP server standing in for Discord's webhook endpoint, shared by the DAG, monitoring and
end-to-end tests (``tests/`` is on ``sys.path`` through the root conftest)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class DiscordStub:
    """Keeps every JSON body posted; answers ``status`` with a message JSON, as Discord does for
    ``?wait=true`` (which discord-webhook reads)."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.status = status
        self.arrived = threading.Condition()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with stub.arrived:
                    stub.paths.append(self.path)
                    stub.requests.append(json.loads(body or b"{}"))
                    stub.arrived.notify_all()
                answer = json.dumps({"id": str(len(stub.requests))}).encode()
                self.send_response(stub.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/webhooks/123/secret-token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def embeds(self) -> list[dict[str, Any]]:
        return [embed for body in self.requests for embed in body.get("embeds", [])]

    def wait_for(self, *texts: str, timeout_s: float) -> dict[str, Any] | None:
        """The first body whose JSON mentions every one of ``texts``, waiting up to ``timeout_s`` for it."""
        deadline = time.monotonic() + timeout_s
        with self.arrived:
            while True:
                found = next((b for b in self.requests if all(t in json.dumps(b) for t in texts)), None)
                left = deadline - time.monotonic()
                if found is not None or left <= 0:
                    return found
                self.arrived.wait(left)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
