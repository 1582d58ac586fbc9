"""``mur clock``, ``mur monitor`` and ``mur alerts``: the market clock, one monitoring pass by hand (the
mur_monitoring DAG runs it every market hour), and the Discord channel's state and a test alert."""

from __future__ import annotations

import json
from typing import Annotated

import typer

alerts_cli = typer.Typer(
    name="alerts", help="Discord alerts: the channel's state, a test alert.", no_args_is_help=True
)
commands = typer.Typer()  # clock, monitor: mur.cli adds them to the root


def _channel() -> tuple[str | None, str]:
    """The webhook URL (None: not configured) and how to name it: its host only (the path is the secret)."""
    from urllib.parse import urlsplit

    from mur.orchestration.alerts import CONNECTION_ID, webhook_url
    from mur.settings import get_settings

    url = webhook_url(get_settings())
    if url:
        return url, f"configured ({urlsplit(url).netloc})"
    return (
        None,
        f"not configured (alerts are only logged): set MUR_DISCORD_WEBHOOK_URL or Connection {CONNECTION_ID}",
    )


@alerts_cli.command("status")
def alerts_status() -> None:
    """Whether a Discord webhook is configured, the last alert monitoring raised and the last one of the local
    stack's watchdog (a service that died), each with whether Discord took it."""
    from mur.commands import local
    from mur.commands.db import _database
    from mur.errors import ConfigError
    from mur.monitoring.store import latest_alerts
    from mur.settings import get_settings

    typer.echo(f"Discord      {_channel()[1]}")
    with _database() as db:
        last = next(iter(latest_alerts(db, limit=1)), None)
    if last is None:
        typer.echo("last alert   none yet")
    else:
        state = "delivered" if last.delivered else "NOT delivered"
        typer.echo(
            f"last alert   {last.pair} at market hour {last.as_of:%Y-%m-%d %H:%M} UTC: {state} ({last.message})"
        )
    try:  # the local stack's watchdog: a service that died (where the local platform is installed)
        service = local.health.latest_alerts(get_settings(), limit=1)
    except ConfigError:
        service = []
    for alert in service:
        state = "delivered" if alert["delivered"] else "NOT delivered"
        typer.echo(f"service      {alert['service']} {alert['event']} at {alert['at']} (wall clock): {state}")


@alerts_cli.command("test")
def alerts_test() -> None:
    """Send a test alert to the configured Discord channel."""
    from mur.errors import ConfigError, ServiceError
    from mur.orchestration.alerts import GREEN, Alert, send
    from mur.settings import get_settings

    url, state = _channel()
    if url is None:
        raise ConfigError(f"Discord {state}")
    alert = Alert(title="🔔 test alert (mur alerts test)", dag_id="-", run_id="-", color=GREEN)
    alert.reason = "Alerts of Make Us Rich reach this channel."
    if not send(alert, get_settings()):
        raise ServiceError(f"Discord {state} did not take the test alert: check the webhook URL")
    typer.echo(f"test alert sent: Discord {state}")


@commands.command("clock")
def clock_cmd(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Show the market clock: market now, its start, speed and origin (docs/monitoring.md)."""
    from mur.clock import market_clock
    from mur.settings import get_settings

    clock = market_clock(get_settings())
    info = clock.as_dict() | {"seconds_per_market_hour": clock.seconds_per_hour}
    if as_json:
        typer.echo(json.dumps(info, default=str))
        return
    if clock.live:
        typer.echo(f"market now {info['now']} (real time: live Binance data)")
        return
    typer.echo(f"market now   {info['now']}")
    typer.echo(f"speed        {clock.speed:g} (a market hour every {clock.seconds_per_hour:g} s)")
    typer.echo(f"started at   {info['start']} (wall time {clock.wall_at(clock.start):%Y-%m-%d %H:%M:%S} UTC)")


@commands.command("monitor")
def monitor_cmd(
    pairs: Annotated[
        str | None, typer.Option(help="comma-separated pairs (default: MUR_PAIRS)", show_default=False)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Resolve the track record, compute each pair's monitoring report and raise alerts, at market now."""
    from mur.monitoring.task import run_monitoring
    from mur.orchestration.tasks import parse_pairs
    from mur.settings import get_settings

    wanted = parse_pairs(pairs) or None
    lines: list[str] = []
    summary = run_monitoring(get_settings(), pairs=wanted, say=lines.append)
    if as_json:
        typer.echo(json.dumps(summary, default=str))
        return
    for line in lines:
        typer.echo(line)
    failed = [p for p, s in summary.items() if s.get("status") == "error"]
    for pair in failed:
        typer.echo(f"{pair}: monitoring failed: {summary[pair]['error']}", err=True)
    if failed:
        raise typer.Exit(1)
