"""``mur models history/rollback`` and ``mur forecast --as-of`` as a user runs them (the console script): errors
are one line, never a traceback (no reason, PostgreSQL or MLflow down, nothing served then), and an as_of
answer is printed with when it was served."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from json_stand_in import JsonStandIn, Request
from test_forecast_cli import ANSWER, TOKEN, mur

pytestmark = pytest.mark.fast


def free_port() -> int:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def as_of_route(request: Request) -> tuple[int, Any]:
    if "as_of=2024-11-04T07%3A30" in request.path:
        return 200, ANSWER | {"as_of": "2024-11-04T07:06:00Z", "source": "track_record"}
    return 404, {
        "error": "not_found",
        "message": "no forecast of btc_usdt was served at 2020-01-01T00:00:00+00:00",
    }


@pytest.fixture
def api() -> Iterator[JsonStandIn]:
    stand_in = JsonStandIn(as_of_route)
    try:
        yield stand_in
    finally:
        stand_in.close()


def one_line(done: Any) -> str:
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    return str(done.stderr.strip())


def test_models_errors_are_one_line(tmp_path: Path) -> None:
    down = {"MUR_PG_PORT": str(free_port()), "MUR_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    blank = mur(tmp_path, "models", "rollback", "btc_usdt", "--reason", " ", **down)
    assert one_line(blank) == "error: a rollback needs a reason: say why it goes back"
    assert "cannot connect to PostgreSQL" in one_line(mur(tmp_path, "models", "history", "btc_usdt", **down))
    registry = one_line(mur(tmp_path, "models", "rollback", "btc_usdt", "--reason", "bad ranges", **down))
    assert registry.startswith("error: model registry")
    missing = mur(tmp_path, "models", "rollback", "btc_usdt")
    assert missing.returncode == 2 and "--reason" in missing.stderr and "Traceback" not in missing.stderr


def test_forecast_as_of(tmp_path: Path, api: JsonStandIn) -> None:
    env = {"MUR_API_URL": api.url, "MUR_API_TOKEN": TOKEN}
    done = mur(tmp_path, "forecast", "btc_usdt", "--as-of", "2024-11-04T07:30", **env)
    assert done.returncode == 0, done.stderr
    assert "served at 2024-11-04 07:06 UTC (from the track record)" in done.stdout
    assert "model v3" in done.stdout and "market now" not in done.stdout
    gone = one_line(mur(tmp_path, "forecast", "btc_usdt", "--as-of", "2020-01-01", **env))
    assert "404: no forecast of btc_usdt was served at 2020-01-01" in gone
