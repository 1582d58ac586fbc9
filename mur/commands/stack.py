"""``mur services start|stop|status`` and ``mur up|down|status``: thin wrappers over :mod:`mur.services`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

NamesArg = Annotated[
    list[str] | None, typer.Argument(help="services (default: all registered), e.g. s3 mlflow ray")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


def start_services(names: list[str] | None = None) -> None:
    """Start services (and what they depend on), skipping those already healthy."""
    from mur import services
    from mur.settings import get_settings

    services.up(get_settings(), names or None, progress=typer.echo)


def stop_services(names: list[str] | None = None) -> None:
    """Stop services that mur started (SIGTERM to each one's process session, SIGKILL after a timeout)."""
    from mur import services
    from mur.settings import get_settings

    services.down(get_settings(), names or None, progress=typer.echo)


def show_status(names: list[str] | None = None, as_json: bool = False) -> None:
    """Print each service's state, pid, port, health, memory and log path."""
    from rich.console import Console
    from rich.table import Table

    from mur import services
    from mur.settings import get_settings

    rows = services.status(get_settings(), names or None)
    if as_json:
        payload = [
            {
                "service": r.name,
                "state": r.state,
                "pid": r.pid,
                "port": r.port,
                "healthy": r.healthy,
                "processes": r.processes,
                "memory_mb": r.memory_mb,
                "log": str(r.log_path),
            }
            for r in rows
        ]
        typer.echo(json.dumps(payload, indent=2))
        return
    colours = {"running": "green", "unhealthy": "yellow", "external": "cyan", "stopped": "dim"}
    table = Table(title="mur services")
    for column in ("service", "state", "pid", "port", "health", "procs", "memory", "log"):
        table.add_column(column, justify="right" if column in ("pid", "port", "procs", "memory") else "left")
    for r in rows:
        table.add_row(
            r.name,
            f"[{colours[r.state]}]{r.state}[/]",
            str(r.pid) if r.pid is not None else "-",
            str(r.port) if r.port is not None else "-",
            "[green]ok[/]" if r.healthy else "[red]down[/]",
            str(r.processes),
            f"{r.memory_mb:.0f} MiB" if r.memory_mb is not None else "-",
            _short_path(r.log_path),
        )
    Console().print(table)


def _short_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def register(app: typer.Typer) -> None:
    """Add ``mur services …`` and the top-level ``mur up``, ``mur down``, ``mur status``."""
    group = typer.Typer(no_args_is_help=True, help="Start, stop and inspect the local services.")

    @group.command("start")
    def services_start(names: NamesArg = None) -> None:
        """Start services (default: all) and their dependencies; already healthy ones are left alone."""
        start_services(names)

    @group.command("stop")
    def services_stop(names: NamesArg = None) -> None:
        """Stop services (default: all) that mur started."""
        stop_services(names)

    @group.command("status")
    def services_status(names: NamesArg = None, as_json: JsonOpt = False) -> None:
        """Show state, pid, port, health, memory and log of each service."""
        show_status(names, as_json)

    app.add_typer(group, name="services")

    @app.command("up")
    def up_cmd() -> None:
        """Bring the local stack up: every registered service, in dependency order."""
        start_services(None)

    @app.command("down")
    def down_cmd() -> None:
        """Stop every service mur started, dependents first."""
        stop_services(None)

    @app.command("status")
    def status_cmd(as_json: JsonOpt = False) -> None:
        """Show the state of every registered service."""
        show_status(None, as_json)
