"""Discord alerts: the embed's fields, a local stand-in for Discord, and the never-raise guarantees."""

from __future__ import annotations

import logging
from functools import partial
from types import SimpleNamespace
from typing import Any

import pytest
from dag_test_stubs import DiscordStub, free_port

from mur.orchestration import alerts
from mur.settings import Settings

LOG_URL = (
    "http://airflow.local:8080/dags/mur_training/runs/"
    "scheduled__2025-03-01T05%3A00%3A00%2B00%3A00/tasks/train_pair/mapped/1?try_number=3"
)


def _context(exc: BaseException | None = None, **overrides: Any) -> dict[str, Any]:
    ti = SimpleNamespace(
        dag_id="mur_training",
        run_id="scheduled__2025-03-01T05:00:00+00:00",
        task_id="train_pair",
        map_index=1,
        try_number=3,
        max_tries=2,
        rendered_map_index="eth_usdt",
        log_url=LOG_URL,  # Airflow's own link (TaskInstance.log_url, on its [api] base_url)
    )
    task = SimpleNamespace(op_kwargs={"pair": "eth_usdt"})
    return {
        "ti": ti,
        "task": task,
        "run_id": ti.run_id,
        "exception": exc,
        "logical_date": "2025-03-01T04:00:00+00:00",
        **overrides,
    }


def _boom() -> RuntimeError:
    try:
        raise RuntimeError("Ray job mur-x failed: unknown pair nope_usdt\nlast job line")
    except RuntimeError as exc:
        return exc


def test_alert_fields_from_a_task_context() -> None:
    alert = alerts.alert_from_context(_context(_boom()), title="t")
    assert (alert.dag_id, alert.task_id, alert.map_index, alert.pair, alert.try_number, alert.max_tries) == (
        "mur_training",
        "train_pair",
        1,
        "eth_usdt",
        3,
        2,
    )
    assert alert.log_url == LOG_URL
    assert alert.error is not None and alert.error.endswith("last job line")
    assert "Traceback" in alert.error


def test_error_tail_keeps_the_last_lines_within_a_field() -> None:
    text = "\n".join(f"line {i} " + "x" * 100 for i in range(100))
    tail = alerts.error_tail(text)
    assert tail is not None and len(tail) <= alerts.FIELD_LIMIT
    assert tail.endswith("line 99 " + "x" * 100)
    assert alerts.error_tail(None) is None


def test_task_failure_alert_posts_an_embed(discord: DiscordStub) -> None:
    settings = Settings(discord_webhook_url=discord.url)
    assert alerts.send(
        alerts.alert_from_context(_context(_boom()), title="❌ training eth_usdt failed"), settings
    )
    [embed] = discord.embeds()
    assert embed["title"] == "❌ training eth_usdt failed"
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["DAG"] == "mur_training"
    assert fields["Run"] == "scheduled__2025-03-01T05:00:00+00:00"
    assert fields["Task"] == "train_pair"
    assert fields["Pair"] == "eth_usdt (map index 1)"
    assert fields["Try"] == "3 of 3"
    assert "/tasks/train_pair/mapped/1?try_number=3" in fields["Log"]
    assert embed["url"] == LOG_URL
    assert "unknown pair nope_usdt" in embed["description"]
    assert embed["color"] == alerts.RED
    assert discord.paths[0].startswith("/api/webhooks/123/secret-token")


def test_callbacks_read_the_url_from_the_settings_they_get_when_they_run(discord: DiscordStub) -> None:
    """Airflow calls a callback with the context alone: the DAG file binds where its settings come from."""
    read: list[Settings] = []

    def settings() -> Settings:
        read.append(Settings(discord_webhook_url=discord.url))
        return read[-1]

    task_failed = partial(alerts.task_failure_alert, settings)
    dag_failed = partial(alerts.dag_failure_alert, settings)
    assert read == []  # nothing read before a callback runs
    task_failed(_context(_boom()))
    dag_failed(
        {
            "dag_run": SimpleNamespace(dag_id="mur_training", run_id="r1", logical_date=None),
            "run_id": "r1",
            "reason": "task_failure",
        }
    )
    assert len(read) == 2
    first, second = discord.embeds()
    assert first["title"] == "❌ training eth_usdt failed"
    assert second["title"] == "🔥 DAG mur_training run failed"
    assert second["description"] == "task_failure"


def test_no_webhook_is_a_log_line_not_an_error(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(alerts, "webhook_url", lambda settings: None)
    with caplog.at_level(logging.INFO, logger="mur.orchestration.alerts"):
        assert alerts.send(alerts.Alert(title="x", dag_id="d", run_id="r"), Settings()) is False
    assert "no webhook configured" in caplog.text


def test_discord_outage_is_logged_and_swallowed(caplog: pytest.LogCaptureFixture) -> None:
    dead = Settings(discord_webhook_url=f"http://127.0.0.1:{free_port()}/api/webhooks/1/t")
    with caplog.at_level(logging.WARNING, logger="mur.orchestration.alerts"):
        assert alerts.send(alerts.Alert(title="x", dag_id="d", run_id="r"), dead) is False
    assert "failed: ConnectionError" in caplog.text
    assert "/api/webhooks/1/t" not in caplog.text  # the token part of the URL is never logged


def test_discord_error_status_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    stub = DiscordStub(status=500)
    try:
        with caplog.at_level(logging.WARNING, logger="mur.orchestration.alerts"):
            assert (
                alerts.send(
                    alerts.Alert(title="x", dag_id="d", run_id="r"), Settings(discord_webhook_url=stub.url)
                )
                is False
            )
        assert "HTTP 500" in caplog.text
    finally:
        stub.close()


def test_callbacks_never_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(alerts, "alert_from_context", broken)
    alerts.task_failure_alert(Settings, {})
    alerts.dag_failure_alert(Settings, {})
    alerts.task_failure_alert(broken, {})  # settings that cannot be read: logged, not raised
    alerts.dag_failure_alert(broken, {})
    assert alerts.send_summary(Settings(), {}, {}) is False


def test_webhook_url_from_an_airflow_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "https://discord.com/api/webhooks/42/token"
    monkeypatch.setenv("AIRFLOW_CONN_MUR_DISCORD", f'{{"conn_type": "generic", "password": "{url}"}}')
    assert alerts.webhook_url(Settings(discord_webhook_url=None)) == url
    monkeypatch.setenv(
        "AIRFLOW_CONN_MUR_DISCORD", f'{{"conn_type": "generic", "extra": {{"webhook_url": "{url}"}}}}'
    )
    assert alerts.webhook_url(Settings(discord_webhook_url=None)) == url
    assert alerts.webhook_url(Settings(discord_webhook_url="https://x/y")) == "https://x/y"  # settings win


def test_success_summary(discord: DiscordStub) -> None:
    settings = Settings(discord_webhook_url=discord.url)
    summary = {
        "results": [
            {"pair": "btc_usdt", "version": 7, "alias": "champion", "mae": 1.5, "skill": 0.01},
            {
                "pair": "eth_usdt",
                "version": 3,
                "alias": "challenger",
                "reused": True,
                "mae": None,
                "skill": None,
            },
        ],
        "failed": ["nope_usdt"],
    }
    ctx = {
        "ti": SimpleNamespace(
            dag_id="mur_training", run_id="r1", task_id="summarize", map_index=-1, try_number=1, max_tries=0
        ),
        "run_id": "r1",
    }
    assert alerts.send_summary(settings, ctx, summary)
    [embed] = discord.embeds()
    assert embed["color"] == alerts.GREEN
    assert "btc_usdt: v7 → champion, MAE 1.5, skill +0.0100" in embed["description"]
    assert "eth_usdt: v3 → challenger (reused)" in embed["description"]
    assert {f["name"]: f["value"] for f in embed["fields"]}["Failed"] == "nope_usdt"
