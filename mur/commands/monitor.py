"""``mur clock`` and ``mur monitor``: the market clock, and one monitoring pass by hand (the mur_monitoring DAG
runs it every market hour)."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("clock")
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
        typer.echo(
            f"started at   {info['start']} (wall time {clock.wall_at(clock.start):%Y-%m-%d %H:%M:%S} UTC)"
        )

    @app.command("monitor")
    def monitor_cmd(
        pairs: Annotated[
            str | None, typer.Option(help="comma-separated pairs (default: MUR_PAIRS)", show_default=False)
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    ) -> None:
        """Resolve the track record, compute each pair's monitoring report and raise alerts, at market now."""
        from mur.monitoring.task import run_monitoring
        from mur.settings import get_settings

        wanted = [p for p in (pairs or "").split(",") if p.strip()] or None
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
