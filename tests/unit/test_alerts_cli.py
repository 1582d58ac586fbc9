"""``mur alerts test|status``: a test alert reaches the channel (a local stand-in for Discord), the channel's
state names the host only (the URL's path is the secret), and the last alert says whether Discord took it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from discord_stub import DiscordStub
from typer.testing import CliRunner

from mur.cli import app
from mur.settings import Settings, get_settings


@pytest.fixture
def discord(monkeypatch: pytest.MonkeyPatch) -> Iterator[DiscordStub]:
    stub = DiscordStub()
    monkeypatch.setenv("MUR_DISCORD_WEBHOOK_URL", stub.url)
    get_settings.cache_clear()
    yield stub
    stub.close()
    get_settings.cache_clear()


def test_a_test_alert_reaches_the_channel(discord: DiscordStub) -> None:
    result = CliRunner().invoke(app, ["alerts", "test"])
    assert result.exit_code == 0, result.output
    assert (
        "test alert sent: Discord configured (127.0.0.1:" in result.stdout and "secret" not in result.stdout
    )
    assert discord.wait_for("mur alerts test", timeout_s=10) is not None
    discord.status = 404  # a webhook that was deleted: one line, exit 1
    failed = CliRunner().invoke(app, ["alerts", "test"])
    assert failed.exit_code == 1 and "did not take the test alert" in str(failed.exception)


def test_without_a_webhook_it_says_how_to_set_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MUR_DISCORD_WEBHOOK_URL", raising=False)
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["alerts", "test"])
    assert result.exit_code == 1 and "MUR_DISCORD_WEBHOOK_URL" in str(result.exception)


def test_status_shows_the_channel_and_the_last_alert(
    discord: DiscordStub, pg_settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from devstack.health import ALERTS_FILE
    from mur.db import Database
    from mur.monitoring.store import record_alert

    monkeypatch.setenv("MUR_PG_DATABASE", pg_settings.db.pg_database)
    monkeypatch.setenv("MUR_RUNTIME_DIR", str(tmp_path))  # the watchdog's alert of a service that died
    watchdog = {
        "at": "2026-11-25T12:00:00Z",
        "service": "mlflow",
        "event": "died",
        "message": "x",
        "delivered": False,
    }
    (tmp_path / ALERTS_FILE).write_text(json.dumps(watchdog) + "\n")
    get_settings.cache_clear()
    with Database(pg_settings, maxconn=1) as db:
        record_alert(
            db,
            pair="btc_usdt",
            as_of=datetime(2024, 11, 5, 12, tzinfo=UTC),
            kinds=["skill"],
            message="rolling skill -0.08",
            delivered=False,
            retrain_run_id=None,
        )
    result = CliRunner().invoke(app, ["alerts", "status"])
    assert result.exit_code == 0, result.output
    assert "Discord      configured (127.0.0.1:" in result.stdout
    assert (
        "btc_usdt at market hour 2024-11-05 12:00 UTC: NOT delivered (rolling skill -0.08)" in result.stdout
    )
    assert "service      mlflow died at 2026-11-25T12:00:00Z (wall clock): NOT delivered" in result.stdout
