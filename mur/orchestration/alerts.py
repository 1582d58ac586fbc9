"""Discord alerts for Airflow callbacks, built with the ``discord-webhook`` package.

Callbacks (``task_failure_alert``, ``dag_failure_alert``) post one embed: DAG id, run id, task id, pair (map
index), try number, a link to the task's log in the Airflow UI and the error's last lines. They never raise:
no webhook configured → one log line; Discord down or slow → logged; the task's own state is untouched.
Airflow calls them with the context alone, so the DAG file binds their first argument, where the settings
come from (``partial(task_failure_alert, get_settings)``): they are created when a callback runs, by the
DAG file's :func:`~mur.settings.get_settings`, never here.

The webhook URL is a secret: ``MUR_DISCORD_WEBHOOK_URL`` or the Airflow Connection ``mur_discord`` (its
password, its host, or ``extra.webhook_url`` holding the full URL). Import-light: the DAG file imports this
module at parse time; ``discord_webhook`` and Airflow are imported when an alert is sent.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from mur.settings import Settings

log = logging.getLogger(__name__)

CONNECTION_ID = "mur_discord"
RED, ORANGE, GREEN = 0xE74C3C, 0xE67E22, 0x2ECC71
ERROR_LINES = 15
FIELD_LIMIT = 1024  # Discord's limit for one embed field value
DESCRIPTION_LIMIT = 4000  # Discord allows 4096
TIMEOUT_S = 10.0
SettingsSource = Callable[[], Settings]
"""Where a callback gets its settings when it runs (the DAG file passes :func:`mur.settings.get_settings`)."""


@dataclass
class Alert:
    """What an embed says; built from an Airflow context by :func:`alert_from_context`."""

    title: str
    dag_id: str
    run_id: str
    task_id: str | None = None
    map_index: int | None = None
    pair: str | None = None
    try_number: int | None = None
    max_tries: int | None = None
    log_url: str | None = None
    error: str | None = None
    reason: str | None = None
    logical_date: str | None = None
    color: int = RED
    extra_fields: dict[str, str] = field(default_factory=dict)


# --- building -------------------------------------------------------------------------------------
def error_tail(error: BaseException | str | None, lines: int = ERROR_LINES) -> str | None:
    """The last ``lines`` lines of a traceback (or message), at most one embed field long."""
    if error is None:
        return None
    if isinstance(error, BaseException):
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    else:
        text = str(error)
    tail = "\n".join(text.rstrip().splitlines()[-lines:])
    limit = FIELD_LIMIT - 10
    return tail if len(tail) <= limit else "…" + tail[-(limit - 1) :]


def alert_from_context(context: Mapping[str, Any], *, title: str, color: int = RED) -> Alert:
    """Collect the alert's fields from a task or DAG callback context (tolerates missing keys); the link to
    the task's log is Airflow's own (``ti.log_url``: its UI at ``[api] base_url``)."""
    ti = context.get("ti") or context.get("task_instance")
    dag = context.get("dag")
    dag_run = context.get("dag_run")
    dag_id = str(
        getattr(ti, "dag_id", None) or getattr(dag, "dag_id", None) or getattr(dag_run, "dag_id", "?")
    )
    run_id = str(context.get("run_id") or getattr(ti, "run_id", None) or getattr(dag_run, "run_id", "?"))
    task_id = getattr(ti, "task_id", None)
    map_index = getattr(ti, "map_index", None)
    map_index = map_index if isinstance(map_index, int) and map_index >= 0 else None
    try_number = getattr(ti, "try_number", None)
    max_tries = getattr(ti, "max_tries", None)
    pair = _pair_of(context, ti)
    logical = context.get("logical_date") or getattr(dag_run, "logical_date", None)
    return Alert(
        title=title,
        dag_id=dag_id,
        run_id=run_id,
        task_id=task_id,
        map_index=map_index,
        pair=pair,
        try_number=try_number if isinstance(try_number, int) else None,
        max_tries=max_tries if isinstance(max_tries, int) else None,
        error=error_tail(context.get("exception")),
        reason=str(context["reason"]) if context.get("reason") else None,
        log_url=getattr(ti, "log_url", None),
        logical_date=str(logical) if logical else None,
        color=color,
    )


def _pair_of(context: Mapping[str, Any], ti: Any) -> str | None:
    """The mapped task's ``pair`` argument (or its rendered map index)."""
    task = context.get("task") or getattr(ti, "task", None)
    kwargs = getattr(task, "op_kwargs", None)
    if isinstance(kwargs, Mapping) and isinstance(kwargs.get("pair"), str):
        return kwargs["pair"]
    rendered = getattr(ti, "rendered_map_index", None)
    return str(rendered) if rendered else None


def build_webhook(alert: Alert, url: str, *, username: str = "Make Us Rich") -> Any:
    """A ``DiscordWebhook`` with one embed describing ``alert``."""
    from discord_webhook import DiscordEmbed, DiscordWebhook

    embed = DiscordEmbed(title=alert.title[:256], color=alert.color)
    if alert.error:
        embed.set_description(f"```\n{alert.error[: DESCRIPTION_LIMIT - 8]}\n```")
    elif alert.reason:
        embed.set_description(alert.reason[:DESCRIPTION_LIMIT])
    embed.add_embed_field(name="DAG", value=alert.dag_id, inline=True)
    embed.add_embed_field(name="Run", value=alert.run_id[:FIELD_LIMIT], inline=True)
    if alert.task_id:
        embed.add_embed_field(name="Task", value=alert.task_id, inline=True)
    if alert.pair or alert.map_index is not None:
        label = alert.pair or "?"
        if alert.map_index is not None:
            label += f" (map index {alert.map_index})"
        embed.add_embed_field(name="Pair", value=label, inline=True)
    if alert.try_number is not None:
        total = f" of {alert.max_tries + 1}" if alert.max_tries is not None else ""
        embed.add_embed_field(name="Try", value=f"{alert.try_number}{total}", inline=True)
    if alert.logical_date:
        embed.add_embed_field(name="Logical date", value=alert.logical_date, inline=True)
    if alert.reason and alert.error:
        embed.add_embed_field(name="Reason", value=alert.reason[:FIELD_LIMIT], inline=False)
    for name, value in alert.extra_fields.items():
        embed.add_embed_field(name=name[:256], value=value[:FIELD_LIMIT] or "-", inline=False)
    if alert.log_url:
        embed.set_url(alert.log_url)
        embed.add_embed_field(name="Log", value=f"[task log]({alert.log_url})", inline=False)
    embed.set_timestamp()
    embed.set_footer(text="mur · Airflow")
    webhook = DiscordWebhook(url=url, username=username, timeout=TIMEOUT_S)
    webhook.add_embed(embed)
    return webhook


# --- sending --------------------------------------------------------------------------------------
def webhook_url(settings: Settings) -> str | None:
    """``MUR_DISCORD_WEBHOOK_URL``, else the Airflow Connection ``mur_discord``, else None."""
    if settings.airflow.discord_webhook_url:
        return settings.airflow.discord_webhook_url
    try:
        from airflow.sdk import Connection

        conn = Connection.get(CONNECTION_ID)
    except Exception:  # not defined, or no Airflow here
        return None
    candidates = [(conn.extra_dejson or {}).get("webhook_url"), conn.password, conn.host]
    return next((c for c in candidates if isinstance(c, str) and c.startswith(("http://", "https://"))), None)


def send(alert: Alert, settings: Settings) -> bool:
    """Post ``alert``; True when Discord accepted it. Never raises."""
    try:
        url = webhook_url(settings)
    except Exception as exc:
        log.warning("Discord alert not sent: cannot read the webhook URL (%s)", exc)
        return False
    if not url:
        log.info(
            "Discord alert not sent (no webhook configured: set MUR_DISCORD_WEBHOOK_URL or Connection %s): %s",
            CONNECTION_ID,
            alert.title,
        )
        return False
    where = urlsplit(url).netloc  # never log the token part
    try:
        response = build_webhook(alert, url).execute()
    except Exception as exc:  # connection refused, timeout, non-JSON answer, rate limit…
        message = str(exc).replace(urlsplit(url).path, "/…")  # requests quotes the URL (token included)
        log.warning("Discord alert to %s failed: %s: %s", where, type(exc).__name__, message)
        return False
    status = getattr(response, "status_code", None)
    if status not in (200, 204):
        log.warning("Discord alert to %s answered HTTP %s", where, status)
        return False
    log.info("Discord alert sent to %s: %s", where, alert.title)
    return True


# --- Airflow callbacks (the DAG file binds ``settings``: Airflow passes the context alone) ---------
def task_failure_alert(settings: SettingsSource, context: Mapping[str, Any]) -> None:
    """Task ``on_failure_callback`` (runs once the retries are exhausted)."""
    try:
        current = settings()
        alert = alert_from_context(context, title="")
        alert.title = (
            f"❌ training {alert.pair} failed" if alert.pair else f"❌ {alert.task_id or 'task'} failed"
        )
        send(alert, current)
    except Exception:  # an alert must never change what happens to the task
        log.exception("task failure alert could not be built")


def dag_failure_alert(settings: SettingsSource, context: Mapping[str, Any]) -> None:
    """DAG ``on_failure_callback``: the run failed (names the task that caused it when known)."""
    try:
        current = settings()
        alert = alert_from_context(context, title="🔥 training run failed", color=ORANGE)
        alert.title = f"🔥 DAG {alert.dag_id} run failed"
        send(alert, current)
    except Exception:
        log.exception("DAG failure alert could not be built")


def send_summary(settings: Settings, context: Mapping[str, Any], summary: Mapping[str, Any]) -> bool:
    """Optional success summary (``MUR_DISCORD_NOTIFY_SUCCESS=true``): versions and gate decisions per pair."""
    try:
        alert = alert_from_context(context, title="✅ training run finished", color=GREEN)
        lines = [
            f"{r['pair']}: v{r['version']} → {r['alias']}"
            + (" (reused)" if r.get("reused") else "")
            + (
                f", MAE {r['mae']:.6g}, skill {r['skill']:+.4f}"
                if r.get("mae") is not None and r.get("skill") is not None
                else ""
            )
            for r in summary.get("results", [])
        ]
        alert.reason = "\n".join(lines) or "no pairs"
        if summary.get("failed"):
            alert.extra_fields["Failed"] = ", ".join(summary["failed"])
        return send(alert, settings)
    except Exception:
        log.exception("success summary could not be sent")
        return False
