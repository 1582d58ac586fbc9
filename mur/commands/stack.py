"""``mur up|down|status`` (:mod:`devstack.stack`) and ``mur services start|stop|status``
(:mod:`devstack.supervisor`)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from mur.commands.db import stdout_console
from mur.commands.local import stack_settings
from mur.errors import MurError

NamesArg = Annotated[
    list[str] | None, typer.Argument(help="services (default: all registered), e.g. s3 mlflow ray")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
services_app = typer.Typer(
    name="services", no_args_is_help=True, help="Start, stop and inspect the local services."
)
commands = typer.Typer()  # up, down, status: mur.cli adds them to the root


def show_status(names: list[str] | None = None, as_json: bool = False) -> None:
    """Print each service's state, pid, port, health, memory and log path."""
    from rich.markup import escape
    from rich.table import Table

    from mur.commands.local import health
    from mur.commands.local import supervisor as services

    settings = stack_settings()
    rows = services.status(settings, names or None)
    ray_up = any(r.name == "ray" and r.healthy for r in rows)
    nodes = health.ray_nodes(settings) if ray_up else None
    if as_json:
        fields = ("state", "pid", "port", "healthy", "processes", "memory_mb", "disk_mb", "restarts")
        payload = [
            {
                "service": r.name,
                **{k: getattr(r, k) for k in fields},
                "log": str(r.log_path),
                **({"nodes": nodes} if r.name == "ray" and nodes is not None else {}),
            }
            for r in rows
        ]
        typer.echo(json.dumps(payload, indent=2))
        return
    colours = {"running": "green", "unhealthy": "yellow", "external": "cyan", "stopped": "dim"}
    colours |= {"restarting": "yellow", "fatal": "red"}
    table = Table(title="mur services")
    for column in ("service", "state", "pid", "port", "health", "procs", "memory", "disk", "restarts"):
        numeric = column in ("pid", "port", "procs", "memory", "disk", "restarts")
        table.add_column(column, justify="right" if numeric else "left", no_wrap=True)
    for r in rows:
        table.add_row(
            escape(r.name),
            f"[{colours[r.state]}]{r.state}[/]",
            str(r.pid) if r.pid is not None else "-",
            str(r.port) if r.port is not None else "-",
            "[green]ok[/]" if r.healthy else "[red]down[/]",
            str(r.processes),
            f"{r.memory_mb:.0f} MiB" if r.memory_mb is not None else "-",
            f"{r.disk_mb:.1f} MiB" if r.disk_mb is not None else "-",
            str(r.restarts),
        )
    console = stdout_console()
    console.print(table)
    if nodes:
        node_table = Table(title="Ray nodes")
        for column in ("node", "role", "state", "CPUs", "GPUs", "placement resource"):
            node_table.add_column(column, justify="right" if column in ("CPUs", "GPUs") else "left")
        for node in nodes:
            node_table.add_row(
                escape(str(node["ip"])),
                "head" if node["head"] else "worker",
                escape(str(node["state"])),
                f"{node['cpus']:g}",
                f"{node['gpus']:g}",
                escape(", ".join(node["resources"]) or "-"),
            )
        console.print(node_table)
    if rows:
        console.print(f"logs: {_short_path(rows[0].log_path.parent)}/NAME.log", highlight=False, markup=False)
    for alert in health.latest_alerts(settings, limit=3):  # the watchdog's, delivered or not
        sent = "sent" if alert["delivered"] else "not delivered (no MUR_DISCORD_WEBHOOK_URL, or it failed)"
        line = f"alert {alert['at']} {alert['service']} {alert['event']}: {alert['message']} [{sent}]"
        console.print(line, highlight=False, markup=False)


class _Clock:
    """Progress lines prefixed with the time since the command started."""

    def __init__(self) -> None:
        self.began = time.monotonic()
        self.lock = threading.Lock()

    def __call__(self, message: str) -> None:
        elapsed = int(time.monotonic() - self.began)
        with self.lock:
            typer.echo(f"[{elapsed // 60:2d}:{elapsed % 60:02d}] {message}")


def use_ray_nodes(nodes: int) -> None:
    """``mur up --nodes N``: the stack's Ray node count for this command (remembered by the stack)."""
    import os

    from mur.settings import get_settings

    os.environ["MUR_RAY_NODES"] = str(nodes)
    get_settings.cache_clear()


def _short_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@services_app.command("start")
def services_start(names: NamesArg = None) -> None:
    """Start services (default: all) and their dependencies; already healthy ones are left alone."""
    from mur.commands.local import supervisor

    supervisor.up(stack_settings(export=True), names or None, progress=typer.echo)


@services_app.command("stop")
def services_stop(names: NamesArg = None) -> None:
    """Stop services (default: all) that mur started."""
    from mur.commands.local import supervisor

    supervisor.down(stack_settings(export=True), names or None, progress=typer.echo)


@services_app.command("status")
def services_status(names: NamesArg = None, as_json: JsonOpt = False) -> None:
    """Show state, pid, port, health, memory and log of each service."""
    show_status(names, as_json)


@commands.command("up")
def up_cmd(
    pairs: Annotated[
        str | None, typer.Option(help="pairs to train and wait for, comma-separated (default: MUR_PAIRS)")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="first training: max epochs (default MUR_EPOCHS)")
    ] = None,
    train_days: Annotated[
        int | None, typer.Option(help="first training: window length in days (default MUR_TRAIN_DAYS)")
    ] = None,
    hidden_size: Annotated[int | None, typer.Option(help="first training: hidden size")] = None,
    num_workers: Annotated[
        int | None, typer.Option(help="first training: Ray Train workers per pair")
    ] = None,
    train: Annotated[
        bool,
        typer.Option("--train/--no-train", help="train pairs without a champion and wait for forecasts"),
    ] = True,
    retrain: Annotated[
        bool, typer.Option(help="trigger a training run even if every pair has a champion")
    ] = False,
    timeout: Annotated[
        float, typer.Option(help="seconds to wait for the forecasts (training included)")
    ] = 1800,
    parallel: Annotated[int, typer.Option(help="services started side by side when dependencies allow")] = 3,
    admin_user: Annotated[str, typer.Option(envvar="MUR_ADMIN_USER", help="the admin's username")] = "admin",
    admin_password: Annotated[
        str | None,
        typer.Option(
            envvar="MUR_ADMIN_PASSWORD",
            show_default=False,
            help="the admin's password (default: generated once and printed once)",
        ),
    ] = None,
    nodes: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=8,
            show_default=False,
            help="Ray nodes: 2 adds a worker node on 127.0.0.2 that joins the head (default MUR_RAY_NODES, "
            "else what the last `mur up --nodes` chose, else 1)",
        ),
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option(
            min=0,
            max=100_000,
            show_default=False,
            help="market clock speed: 60 = a market hour per minute (default MUR_CLOCK_SPEED, else 1)",
        ),
    ] = None,
) -> None:
    """Bring the whole local stack up, train the pairs that have no model yet, wait for their forecasts.

    Idempotent: running services are kept, the admin is created once, trained pairs are not retrained.
    """
    from mur.commands.local import services, stack
    from mur.orchestration.tasks import parse_pairs
    from mur.settings import get_settings

    if nodes is not None:
        use_ray_nodes(nodes)
    options = stack.UpOptions(
        pairs=parse_pairs(pairs) or None,
        epochs=epochs,
        train_days=train_days,
        hidden_size=hidden_size,
        num_workers=num_workers,
        train=train,
        retrain=retrain,
        timeout_s=timeout,
        parallel=parallel,
        admin_user=admin_user,
        admin_password=admin_password,
        speed=speed,
    )
    say = _Clock()
    try:
        report = stack.bring_up(get_settings(), options, say=say)
    except KeyboardInterrupt:
        typer.echo(
            "interrupted: services that started keep running (mur status; mur down stops them)", err=True
        )
        raise
    except MurError:
        typer.echo(
            "services already healthy keep running: fix the cause and run `mur up` again (it resumes), "
            "or `mur down`",
            err=True,
        )
        raise
    for line in stack.summary_lines(report, services.stack_services(report.settings).keys()):
        typer.echo(line)


@commands.command("down")
def down_cmd() -> None:
    """Stop every service mur started (dependents first); data (databases, S3, registry) is kept."""
    from mur.commands.local import stack
    from mur.settings import get_settings

    say = _Clock()
    results = stack.bring_down(get_settings(), say=say)
    stopped = [r.name for r in results if r.action in ("stopped", "killed")]
    say(
        f"stopped {len(stopped)} service(s)"
        + (f": {', '.join(stopped)}" if stopped else "")
        + "; data is kept (databases, S3, registry): mur up brings it all back"
    )


@commands.command("status")
def status_cmd(as_json: JsonOpt = False) -> None:
    """Show the state of every registered service."""
    show_status(None, as_json)
