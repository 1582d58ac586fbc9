"""Fixtures for the security tests: the HTTP API in-process (tests/serve/api_fakes.py) over the real
PostgreSQL, and the same app served by uvicorn on a loopback port for schemathesis."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))  # api_fakes, serve_helpers

from api_fakes import Api, running_api  # noqa: E402
from serve_helpers import free_port  # noqa: E402

from mur.settings import Settings  # noqa: E402
from mur.waiting import wait_until


@pytest.fixture
def api(pg_settings: Settings) -> Iterator[Api]:
    with running_api(pg_settings) as api:
        yield api


@dataclass
class LiveApi:
    api: Api
    url: str


@pytest.fixture
def live_api(api: Api) -> Iterator[LiveApi]:
    """``api``'s app served over HTTP on 127.0.0.1 (a real server: what schemathesis talks to)."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(api.client.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, what="uvicorn to start", timeout_s=10, interval_s=0.05)
    try:
        yield LiveApi(api, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
