"""Starting the dashboard: ``mur dash`` (Typer command), ``python -m dash_app``, and its early checks."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import httpx
import pytest
import typer
from dash_fakes import free_port
from typer.testing import CliRunner

from dash_app.server import check_database
from mur.commands.dash import commands
from mur.errors import DatabaseError
from mur.settings import PROJECT_ROOT, Settings
from mur.waiting import wait_until


def test_mur_dash_command_is_registered() -> None:
    app = typer.Typer()
    app.add_typer(commands)
    app.command("other")(lambda: None)  # two commands: Typer keeps `dash` as a sub-command
    result = CliRunner().invoke(app, ["dash", "--help"])
    assert result.exit_code == 0
    assert "--host" in result.output and "--port" in result.output and "8050" in result.output


def test_pending_migrations_stop_the_start(pg_database_factory: Callable[..., Settings]) -> None:
    settings = pg_database_factory(migrated=False, create=True)
    with pytest.raises(DatabaseError, match="mur db migrate"):
        check_database(settings)


def test_python_m_dash_app_serves_the_login_page(dash_db_settings: Settings) -> None:
    port = free_port()
    env = {
        **os.environ,
        "MUR_ENV": "test",
        "MUR_SECRET_KEY": "a-test-secret-key-that-is-long-enough",
        "MUR_PG_DATABASE": dash_db_settings.db.pg_database,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "dash_app", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def login_page() -> httpx.Response:
            if process.poll() is not None:
                raise AssertionError(process.stdout.read() if process.stdout else "no output")
            return httpx.get(f"http://127.0.0.1:{port}/login", timeout=2)

        retry_on = (httpx.TransportError,)
        response = wait_until(
            login_page, what="the dashboard", timeout_s=60, interval_s=0.3, retry_on=retry_on
        )
        assert response.status_code == 200 and "Log in" in response.text
        assert (
            response.headers["server"] == "mur-dash"
        )  # waitress (dash_app.server), not werkzeug's dev server
        assert httpx.get(f"http://127.0.0.1:{port}/forecast", timeout=5).status_code == 302
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_python_m_dash_app_refuses_a_missing_secret_outside_development() -> None:
    env = {
        **os.environ,
        "MUR_ENV": "test",
        "MUR_SECRET_KEY": "",
        "MUR_PG_DATABASE": "mur_missing_db_for_test",
    }
    result = subprocess.run(
        [sys.executable, "-m", "dash_app", "--port", str(free_port())],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and result.stderr.startswith("error: MUR_SECRET_KEY must be set")
