"""Schemathesis against the API's OpenAPI document, with a valid token and every check (``--checks all``):
no 5xx, every status and body as documented, 405 with ``Allow``, invalid input rejected, JSON errors.

The app runs in-process over the real PostgreSQL with a stand-in model (tests/serve/api_fakes.py), served by
uvicorn on a loopback port. The run is bounded by its example count and seed, not by time: the same ~1,700
cases on every machine (~15 s on one of 18 M Python loop steps/s; a time budget of 45 s ran ~4,700 there and
fewer on a slower one).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import LiveApi

CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = 100


@pytest.mark.long  # ~15 s: started first in its tier
def test_schemathesis_all_checks_pass(live_api: LiveApi, tmp_path: Path) -> None:
    user_id, token = live_api.api.user(quota=1_000_000)
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(CONFIG),
        "run",
        f"{live_api.url}/openapi.json",
        "--checks",
        "all",
        "--header",
        f"Authorization: Bearer {token}",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        "16",
        "--request-timeout",
        "10",
        "--workers",
        "1",
        "--no-color",
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=150,
        cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
    print(result.stdout[-4000:])  # the summary, shown with -s or on failure
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert live_api.api.usage(user_id) > 0  # the valid token did reach the forecasts
