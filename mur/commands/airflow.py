"""``mur airflow start|stop|status|trigger|backfill|env|password``: the local Airflow
(:mod:`mur.devstack.airflow`) and the REST client (:mod:`mur.orchestration.airflow_client`)."""

from __future__ import annotations

import json
import shlex
from typing import Annotated

import typer

from mur.orchestration import DAG_ID


def start() -> None:
    """Start the Airflow api-server, scheduler, DAG processor and triggerer (metadata DB migrated first)."""
    from mur.devstack import supervisor as services
    from mur.devstack.airflow import SERVICE_NAMES, admin_password, airflow_home
    from mur.settings import get_settings

    settings = get_settings()
    services.up(settings, list(SERVICE_NAMES), progress=typer.echo)
    password = admin_password(settings)
    shown = password if not settings.airflow_password else "(MUR_AIRFLOW_PASSWORD)"
    typer.echo(
        f"\nAirflow UI: {settings.airflow_url}  user {settings.airflow_user}  password {shown}\n"
        f"AIRFLOW_HOME {airflow_home(settings)}; logs under {settings.runtime_dir}/logs/airflow-*.log"
    )


def stop() -> None:
    """Stop the Airflow components that mur started."""
    from mur.devstack import supervisor as services
    from mur.devstack.airflow import SERVICE_NAMES
    from mur.settings import get_settings

    settings = get_settings()
    services.down(settings, list(SERVICE_NAMES), progress=typer.echo)


def status(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """State, pid, port and health of each Airflow component."""
    from mur.devstack import supervisor as services
    from mur.devstack.airflow import SERVICE_NAMES
    from mur.settings import get_settings

    settings = get_settings()
    rows = services.status(settings, list(SERVICE_NAMES))
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "service": r.name,
                        "state": r.state,
                        "pid": r.pid,
                        "port": r.port,
                        "healthy": r.healthy,
                        "memory_mb": r.memory_mb,
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
        return
    for r in rows:
        memory = f"{r.memory_mb:.0f} MiB" if r.memory_mb is not None else "-"
        typer.echo(f"{r.name:<24} {r.state:<10} pid {r.pid or '-':<8} port {r.port or '-':<6} {memory}")


def trigger(
    pair: Annotated[
        list[str] | None, typer.Option("--pair", help="pair to train (repeat; default: all)")
    ] = None,
    end: Annotated[str | None, typer.Option(help="train on candles before this ISO-8601 UTC time")] = None,
    epochs: Annotated[int | None, typer.Option(help="max epochs")] = None,
    arch: Annotated[str | None, typer.Option(help="lstm or gru")] = None,
    hidden_size: Annotated[int | None, typer.Option(help="recurrent hidden size")] = None,
    train_days: Annotated[int | None, typer.Option(help="training window length in days")] = None,
    num_workers: Annotated[int | None, typer.Option(help="Ray Train workers per job")] = None,
    logical_date: Annotated[str | None, typer.Option(help="logical date of the run (default: none)")] = None,
    unpause: Annotated[bool, typer.Option(help="unpause the DAG (a paused DAG's runs wait)")] = True,
    wait: Annotated[bool, typer.Option("--wait", help="wait until the run finishes")] = False,
) -> None:
    """Trigger the training DAG through the REST API, like the UI's trigger form (same Params)."""
    from mur.devstack import airflow
    from mur.errors import MurError
    from mur.settings import get_settings

    settings = get_settings()
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
        if wait:
            final = client.wait_for_run(DAG_ID, run.run_id, timeout_s=settings.job_timeout_s * 2)
            typer.echo(f"run {run.run_id}: {final['state']}")
            if final["state"] != "success":
                raise MurError(f"run {run.run_id} ended {final['state']}")


def backfill(
    from_date: Annotated[str, typer.Option("--from", help="first logical date (inclusive), e.g. 2025-06-01")],
    to_date: Annotated[
        str, typer.Option("--to", help="last logical date (inclusive), e.g. 2025-06-02T00:00")
    ],
    pair: Annotated[
        list[str] | None, typer.Option("--pair", help="pair to train (repeat; default: all)")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="max epochs")] = None,
    max_active_runs: Annotated[int, typer.Option(help="runs of the backfill at a time")] = 1,
    reprocess: Annotated[str, typer.Option(help="none | failed | completed: redo existing runs?")] = "none",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only list the runs it would create")] = False,
) -> None:
    """``airflow backfill create`` for the training DAG (one run per schedule interval in the range)."""
    from mur.devstack.airflow import airflow_cli
    from mur.settings import get_settings

    conf = {k: v for k, v in {"pairs": pair or [], "epochs": epochs}.items() if v not in (None, [])}
    args = [
        "backfill",
        "create",
        "--dag-id",
        DAG_ID,
        "--from-date",
        from_date,
        "--to-date",
        to_date,
        "--max-active-runs",
        str(max_active_runs),
        "--reprocess-behavior",
        reprocess,
    ]
    if conf:
        args += ["--dag-run-conf", json.dumps(conf)]
    if dry_run:
        args.append("--dry-run")
    typer.echo("airflow " + shlex.join(args))
    proc = airflow_cli(get_settings(), *args)
    typer.echo(proc.stdout.strip())


def env() -> None:
    """Print ``export`` lines for running ``airflow …`` by hand against the local instance (``eval "$(…)"``)."""
    from mur.devstack.airflow import airflow_env
    from mur.settings import get_settings

    for key, value in sorted(airflow_env(get_settings()).items()):
        typer.echo(f"export {key}={shlex.quote(value)}")


def password() -> None:
    """Print the UI admin's user name and password."""
    from mur.devstack.airflow import admin_password
    from mur.settings import get_settings

    settings = get_settings()
    typer.echo(f"{settings.airflow_user} {admin_password(settings)}")


def register(app: typer.Typer) -> None:
    """Add the ``mur airflow …`` group."""
    group = typer.Typer(
        no_args_is_help=True, help="Run Airflow locally; trigger and backfill the training DAG."
    )
    group.command("start")(start)
    group.command("stop")(stop)
    group.command("status")(status)
    group.command("trigger")(trigger)
    group.command("backfill")(backfill)
    group.command("env")(env)
    group.command("password")(password)
    app.add_typer(group, name="airflow")
