"""``mur forecast PAIR`` as a user runs it (the console script) against a local HTTP server answering like the
API: the token from the environment or the config file, the ranges per horizon in a table, and one-line errors
for a missing or refused token, an unknown pair and an API that is down. Plus: no command's help shows
reStructuredText."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from json_stand_in import JsonStandIn, Request

pytestmark = pytest.mark.fast

MUR = str(Path(sys.executable).parent / "mur")
TOKEN = "mur_test_token_for_the_stand_in"
ANSWER: dict[str, Any] = {
    "pair": "btc_usdt",
    "forecast": 68_950.5,
    "last_close": 69_000.0,
    "change_pct": -0.07,
    "candle_time": "2024-11-04T06:00:00Z",
    "target_time": "2024-11-04T07:00:00Z",
    "model_version": 3,
    "as_of": "2024-11-04T07:06:00Z",
    "model_age_hours": 2.0,
    "horizons": [
        {"hours": 1, "target_time": "2024-11-04T07:00:00Z", "median": 68_950.5, "lower": 68_300.0,
         "upper": 69_600.0, "level": 0.9},
        {"hours": 24, "target_time": "2024-11-05T06:00:00Z", "close_time": "2024-11-05T07:00:00Z",
         "median": 69_100.0, "lower": 66_000.0, "upper": 72_500.0, "level": 0.9},
    ],
}  # fmt: skip


def api_route(request: Request) -> tuple[int, Any]:
    """``/v1/pairs`` and ``/v1/forecast/{pair}`` with bearer auth, JSON errors like the API's."""
    if request.headers.get("Authorization") != f"Bearer {TOKEN}":
        return 401, {"error": "unauthorized", "message": "invalid or revoked token"}
    if request.path == "/v1/pairs":
        return 200, {"pairs": ["btc_usdt"], "details": {}}
    if request.path == "/v1/forecast/btc_usdt":
        return 200, ANSWER
    if request.path.startswith("/v1/forecast/btc_usdt?as_of="):  # read back from the track record
        return 200, ANSWER | {"source": "track_record"}
    return 404, {"error": "unknown_pair", "message": "no model for pair 'doge_usdt'"}


def auth(stand_in: JsonStandIn) -> list[str | None]:
    return [r.headers.get("Authorization") for r in stand_in.requests]


@pytest.fixture
def api() -> Iterator[JsonStandIn]:
    stand_in = JsonStandIn(api_route)
    try:
        yield stand_in
    finally:
        stand_in.close()


def mur(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base: dict[str, str] = {k: v for k, v in os.environ.items() if not k.startswith("MUR_")}
    base |= {
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "MUR_RUNTIME_DIR": str(tmp_path / "runtime"),
        "COLUMNS": "120",
    }
    return subprocess.run([MUR, *args], env=base | env, capture_output=True, text=True, timeout=120)


def test_forecast_prints_the_range_at_every_horizon(tmp_path: Path, api: JsonStandIn) -> None:
    done = mur(tmp_path, "forecast", "btc_usdt", MUR_API_URL=api.url, MUR_API_TOKEN=TOKEN)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "btc_usdt" in out and "last close 69,000.0000" in out and "model v3" in out
    assert "trained 2 market hour(s) ago" in out
    assert "90 % range" in out
    one = next(line for line in out.splitlines() if " 1 h " in line)
    assert "2024-11-04 08:00" in one  # the 07:00 candle closes at 08:00
    assert "68,950.5000" in one and "68,300.0000 – 69,600.0000" in one and "-0.07 %" in one
    day = next(line for line in out.splitlines() if "24 h" in line)
    assert "2024-11-05 07:00" in day and "66,000.0000 – 72,500.0000" in day
    assert TOKEN not in out + done.stderr  # never printed
    assert auth(api) == [f"Bearer {TOKEN}"]


def test_the_token_file_is_read_and_the_environment_wins(tmp_path: Path, api: JsonStandIn) -> None:
    token_file = tmp_path / "config" / "mur" / "token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    assert mur(tmp_path, "forecast", "btc_usdt", MUR_API_URL=api.url).returncode == 0
    assert auth(api)[-1] == f"Bearer {TOKEN}"
    refused = mur(tmp_path, "forecast", "btc_usdt", MUR_API_URL=api.url, MUR_API_TOKEN="mur_wrong")
    assert auth(api)[-1] == "Bearer mur_wrong"
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "error: the forecast API answered 401: invalid or revoked token; check MUR_API_TOKEN"
    )
    assert "Traceback" not in refused.stderr


def test_all_pairs_and_json(tmp_path: Path, api: JsonStandIn) -> None:
    done = mur(tmp_path, "forecast", "--all", "--json", MUR_API_URL=api.url, MUR_API_TOKEN=TOKEN)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ANSWER
    # the API's answer whole: an as_of answer says it comes from the track record
    args = ("forecast", "btc_usdt", "--as-of", "2024-11-04T07:30", "--json")
    served = mur(tmp_path, *args, MUR_API_URL=api.url, MUR_API_TOKEN=TOKEN)
    assert served.returncode == 0, served.stderr
    assert json.loads(served.stdout) == ANSWER | {"source": "track_record"}


def test_errors_are_one_line(tmp_path: Path, api: JsonStandIn) -> None:
    unknown = mur(tmp_path, "forecast", "doge_usdt", MUR_API_URL=api.url, MUR_API_TOKEN=TOKEN)
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == (
        "error: the forecast API answered 404: no model for pair 'doge_usdt' (the pairs served: mur forecast --all)"
    )
    no_token = mur(tmp_path, "forecast", "btc_usdt", MUR_API_URL=api.url)
    assert no_token.returncode == 1
    assert "error: no API token: set MUR_API_TOKEN, or write one to" in no_token.stderr
    assert str(tmp_path / "config" / "mur" / "token") in no_token.stderr
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = mur(tmp_path, "forecast", "btc_usdt", MUR_API_URL=f"http://127.0.0.1:{port}", MUR_API_TOKEN=TOKEN)
    assert down.returncode == 1
    assert f"error: the forecast API is unreachable at http://127.0.0.1:{port}" in down.stderr
    assert down.stderr.strip().endswith("; is the stack up? (mur status)")
    for done in (unknown, no_token, down):
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_no_help_shows_restructuredtext() -> None:
    import typer
    from typer.testing import CliRunner

    from mur.cli import app

    def walk(command: Any, path: list[str]) -> Iterator[list[str]]:
        yield path
        for name, sub in (getattr(command, "commands", None) or {}).items():
            yield from walk(sub, [*path, name])

    paths = list(walk(typer.main.get_command(app), []))
    assert ["forecast"] in paths and ["airflow", "backfill"] in paths
    runner = CliRunner()
    marked = {}
    for path in paths:
        shown = runner.invoke(app, [*path, "--help"], terminal_width=200).output
        hits = [
            line.strip()
            for line in shown.splitlines()
            if "``" in line or ":func:`" in line or ":mod:`" in line
        ]
        if hits:
            marked[" ".join(path)] = hits
    assert marked == {}
