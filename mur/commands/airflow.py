"""``mur airflow start|stop|status|trigger|backfill|env|password``: the local Airflow
(:mod:`devstack.airflow`) and the REST client (:mod:`mur.orchestration.airflow_client`)."""

from __future__ import annotations

import json
import shlex
from typing import Annotated

import typer

from mur.commands.stack import JsonOpt, show_status
from mur.orchestration import DAG_ID

airflow_app = typer.Typer(
    name="airflow", no_args_is_help=True, help="Run Airflow locally; trigger and backfill the training DAG."
)
PairsOpt = Annotated[list[str] | None, typer.Option("--pair", help="pair to train (repeat; default: all)")]


@airflow_app.command("start")
def start() -> None:
    """Start the Airflow api-server, scheduler, DAG processor and triggerer (metadata DB migrated first)."""
    from mur.commands.local import airflow, stack_settings
    from mur.commands.local import supervisor as services

    settings = stack_settings(export=True)  # as `mur up` and `mur services start` start it
    services.up(settings, list(airflow.SERVICE_NAMES), progress=typer.echo)
    password = airflow.admin_password(settings)
    shown = password if not settings.airflow.airflow_password else "(MUR_AIRFLOW_PASSWORD)"
    typer.echo(
        f"\nAirflow UI: {settings.airflow.airflow_url}  user {settings.airflow.airflow_user}  password {shown}\n"
        f"AIRFLOW_HOME {airflow.airflow_home(settings)}; logs under {settings.general.runtime_dir}/logs/airflow-*.log"
    )


@airflow_app.command("stop")
def stop() -> None:
    """Stop the Airflow components that mur started."""
    from mur.commands.local import airflow, stack_settings
    from mur.commands.local import supervisor as services

    settings = stack_settings(export=True)
    services.down(settings, list(airflow.SERVICE_NAMES), progress=typer.echo)


@airflow_app.command("status")
def status(as_json: JsonOpt = False) -> None:
    """State, pid, port, health and memory of each Airflow component (the table of ``mur services status``)."""
    from mur.commands.local import airflow

    show_status(list(airflow.SERVICE_NAMES), as_json)


@airflow_app.command("trigger")
def trigger(
    pair: PairsOpt = None,
    end: Annotated[
        str | None,
        typer.Option(help="train on candles before this market time (ISO-8601 UTC, not after market now)"),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="max epochs")] = None,
    arch: Annotated[str | None, typer.Option(help="lstm or gru")] = None,
    hidden_size: Annotated[int | None, typer.Option(help="recurrent hidden size")] = None,
    train_days: Annotated[int | None, typer.Option(help="training window length in days")] = None,
    num_workers: Annotated[int | None, typer.Option(help="Ray Train workers per job")] = None,
    logical_date: Annotated[
        str | None,
        typer.Option(
            help="market hour the run stands for (default: none, the market hour it is triggered in)"
        ),
    ] = None,
    unpause: Annotated[bool, typer.Option(help="unpause the DAG (a paused DAG's runs wait)")] = True,
    wait: Annotated[bool, typer.Option("--wait", help="wait until the run finishes")] = False,
) -> None:
    """Trigger the training DAG through the REST API, like the UI's trigger form (same Params).

    Dates are market times (mur clock): one after market now is refused.
    """
    from mur.clock import market_clock
    from mur.commands.local import airflow, first_run
    from mur.errors import MurError
    from mur.orchestration.airflow_client import FINISHED_STATES
    from mur.orchestration.market_dates import parse_utc, require_closed
    from mur.settings import get_settings
    from mur.waiting import wait_until

    settings = get_settings()
    clock = market_clock(settings)
    if end is not None:
        closed = require_closed(parse_utc(end, what="--end"), clock, what="--end")
        end = closed.strftime("%Y-%m-%dT%H:%M:%SZ")
    if logical_date is not None:
        at = require_closed(parse_utc(logical_date, what="--logical-date"), clock, what="--logical-date")
        logical_date = at.isoformat()
    conf = {
        k: v
        for k, v in {
            "pairs": pair or [],
            "end": end,
            "epochs": epochs,
            "arch": arch,
            "hidden_size": hidden_size,
            "train_days": train_days,
            "num_workers": num_workers,
        }.items()
        if v not in (None, [])
    }
    with airflow.client(settings) as client:
        if unpause:
            client.set_paused(DAG_ID, False)
        run = client.trigger(DAG_ID, conf, logical_date=logical_date)
        typer.echo(f"triggered {DAG_ID} run {run.run_id} with {json.dumps(conf)}")
        typer.echo(f"  {client.run_url(DAG_ID, run.run_id)}")
        if wait:  # each task's state as it changes, this run's and the other active runs' it may queue behind
            seen: dict[str, str] = {}
            final = wait_until(
                lambda: first_run.follow_runs(client, run.run_id, seen, typer.echo)[0],
                what=f"run {run.run_id} to finish",
                timeout_s=settings.training.job_timeout_s * 2,
                interval_s=2,
                done=lambda state: state in FINISHED_STATES,
                error=MurError,
            )
            typer.echo(f"run {run.run_id}: {final}")
            if final != "success":
                raise MurError(f"run {run.run_id} ended {final}")


@airflow_app.command("backfill")
def backfill(
    from_date: Annotated[
        str | None,
        typer.Option("--from", help="first market hour (logical date, inclusive), e.g. 2024-10-01"),
    ] = None,
    to_date: Annotated[
        str | None,
        typer.Option(
            "--to", help="last market hour (inclusive), e.g. 2024-10-01T03:00; clamped to market now"
        ),
    ] = None,
    pair: PairsOpt = None,
    epochs: Annotated[int | None, typer.Option(help="max epochs")] = None,
    max_active_runs: Annotated[int, typer.Option(help="runs of the backfill at a time")] = 1,
    reprocess: Annotated[str, typer.Option(help="none | failed | completed: redo existing runs?")] = "none",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only list the runs it would create")] = False,
    list_: Annotated[bool, typer.Option("--list", help="list the DAG's backfills and exit")] = False,
    cancel: Annotated[
        int | None,
        typer.Option("--cancel", metavar="ID", help="cancel backfill ID (its queued runs fail) and exit"),
    ] = None,
) -> None:
    """Backfill the training DAG over market hours (one run per hour, each trained on candles before its end).

    Dates are market times (mur clock): a start after market now is refused, an end after it is clamped.

    One backfill runs at a time: --list shows them, --cancel ID stops one.
    """
    from mur.clock import market_clock
    from mur.commands.local import airflow
    from mur.errors import ConfigError
    from mur.orchestration.market_dates import backfill_range, parse_utc, show
    from mur.settings import get_settings

    settings = get_settings()
    if list_ or cancel is not None:
        with airflow.client(settings) as client:
            if cancel is not None:
                done = client.cancel_backfill(cancel)
                typer.echo(f"cancelled backfill {cancel} of {done.get('dag_id', DAG_ID)}: queued runs failed")
                return
            print_backfills(client.backfills(DAG_ID))
        return
    if from_date is None or to_date is None:
        raise ConfigError("give --from and --to (market dates), or --list / --cancel ID")
    clock = market_clock(settings)
    span = backfill_range(parse_utc(from_date, what="--from"), parse_utc(to_date, what="--to"), clock)
    if span.warning is not None:
        typer.secho(f"warning: {span.warning}", fg=typer.colors.YELLOW, err=True)
    conf = {k: v for k, v in {"pairs": pair or [], "epochs": epochs}.items() if v not in (None, [])}
    with airflow.client(settings) as client:
        body = client.backfill_body(
            DAG_ID,
            span.start.isoformat(),
            span.end.isoformat(),
            conf=conf,
            max_active_runs=max_active_runs,
            reprocess=reprocess,
        )
        dates = client.backfill_dry_run(body)
        hours = f"{show(span.start)} .. {show(span.end)}"
        if dry_run:
            typer.echo(f"would create {len(dates)} run(s) of {DAG_ID} for market hours {hours}:")
            for date in dates:
                typer.echo(f"  {date}")
            return
        created = client.create_backfill(body)
    typer.echo(
        f"backfill {created.get('id')} of {DAG_ID}: {len(dates)} run(s), market hours {hours}, "
        f"conf {json.dumps(conf)}\n"
        f"  follow: mur airflow backfill --list    cancel: mur airflow backfill --cancel {created.get('id')}"
    )


def print_backfills(rows: list[dict]) -> None:
    """The backfills as a table: id, market hours, state, created."""
    from rich.console import Console
    from rich.table import Table

    if not rows:
        typer.echo(f"no backfill of {DAG_ID}")
        return
    table = Table("id", "from", "to", "state", "created", "conf", title=f"backfills of {DAG_ID}")
    for row in rows:
        state = "completed" if row.get("completed_at") else ("paused" if row.get("is_paused") else "running")
        table.add_row(
            str(row.get("id")),
            str(row.get("from_date", ""))[:16],
            str(row.get("to_date", ""))[:16],
            state,
            str(row.get("created_at", ""))[:16],
            json.dumps(row.get("dag_run_conf") or {}),
        )
    Console(width=120).print(table)


@airflow_app.command("env")
def env() -> None:
    """Print ``export`` lines for running ``airflow …`` by hand against the local instance (``eval "$(…)"``)."""
    from mur.commands.local import airflow
    from mur.settings import get_settings

    for key, value in sorted(airflow.airflow_env(get_settings()).items()):
        typer.echo(f"export {key}={shlex.quote(value)}")


@airflow_app.command("password")
def password() -> None:
    """Print the UI admin's user name and password."""
    from mur.commands.local import airflow
    from mur.settings import get_settings

    settings = get_settings()
    typer.echo(f"{settings.airflow.airflow_user} {airflow.admin_password(settings)}")
