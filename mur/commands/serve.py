"""``mur serve``: deploy the Ray Serve API on the running Ray head; ``mur serve status|stop``; ``mur ray token``.

Thin wrappers over :mod:`serve_app.deploy` (declarative, like ``serve deploy serve_app/config.yaml``). The
Ray head comes from ``mur up``; replicas take their settings from this command's ``MUR_*`` settings. Ray's REST
API is behind the stack's token: ``RAY_AUTH_TOKEN``, else the one ``mur up`` keeps in its secrets file.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mur.commands.local import stack_settings

serve_cli = typer.Typer(
    name="serve",
    help="Ray Serve API: deploy it (no sub-command), show its status, stop it.",
    invoke_without_command=True,
    no_args_is_help=False,
)
ray_cli = typer.Typer(name="ray", help="The stack's Ray head.", no_args_is_help=True)


@ray_cli.command("token")
def ray_token() -> None:
    """Print the Ray token (RAY_AUTH_TOKEN, else the stack's secrets file, which only its owner can read):
    the Ray dashboard asks for it."""
    from mur.commands.local import stack_secret
    from mur.settings import get_settings

    missing = "no Ray token in RAY_AUTH_TOKEN or {path}: start the stack first (mur up)"
    typer.echo(stack_secret("ray_auth_token", missing, env=get_settings().ray.ray_auth_token))


@serve_cli.callback()
def serve(
    ctx: typer.Context,
    pair: Annotated[
        list[str] | None, typer.Option("--pair", "-p", help="serve only these pairs (repeat); default: all")
    ] = None,
    force: Annotated[bool, typer.Option(help="rebuild and restart replicas even if nothing changed")] = False,
    wait: Annotated[bool, typer.Option(help="wait until the app is RUNNING")] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait for RUNNING")] = 300.0,
) -> None:
    """Deploy (or update) the API and print its URL."""
    if ctx.invoked_subcommand is not None:
        return
    from serve_app.args import AppArgs
    from serve_app.deploy import app_config, deploy

    settings = stack_settings()
    args = AppArgs(**app_config(settings)["applications"][0]["args"])  # the config file's, with the settings
    if pair:
        args.pairs = pair
    typer.echo(
        f"deploying {settings.serving.serve_app_name!r} to Ray at {settings.ray.ray_address} …", err=True
    )
    url = deploy(
        settings, args, wait=wait, timeout_s=timeout, force=force, progress=lambda m: typer.echo(m, err=True)
    )
    typer.echo(url)
    typer.echo(f"docs: {url}/docs   ready: {url}/readyz", err=True)


@serve_cli.command("status")
def status(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """The app's status, deployments and running replicas, and /readyz."""
    import httpx

    from serve_app.deploy import app_details, replica_counts, serve_details

    settings = stack_settings()
    details = app_details(settings)
    if details is None:
        typer.echo(f"{settings.serving.serve_app_name}: not deployed (run `mur serve`)")
        raise typer.Exit(1)
    port = (serve_details(settings).get("http_options") or {}).get("port", settings.serving.serve_port)
    url = f"http://{settings.serving.serve_host}:{port}"
    try:
        ready = httpx.get(f"{url}/readyz", timeout=5).json()
    except (httpx.HTTPError, ValueError) as exc:
        ready = {"status": "unreachable", "problems": [str(exc)]}
    replicas = replica_counts(details)
    if as_json:
        payload = {"url": url, "status": details.get("status"), "replicas": replicas, "readyz": ready}
        typer.echo(json.dumps(payload, indent=2))
        return
    typer.echo(
        f"{settings.serving.serve_app_name}: {details.get('status')} at {url} (readyz: {ready.get('status')})"
    )
    for name, deployment in sorted((details.get("deployments") or {}).items()):
        typer.echo(f"  {name:<14} {deployment.get('status', '?'):<10} replicas {replicas.get(name, 0)}")
    for problem in ready.get("problems") or []:
        typer.echo(f"  ! {problem}")


@serve_cli.command("stop")
def stop() -> None:
    """Delete the app and shut Serve down on the Ray head."""
    from serve_app.deploy import undeploy

    undeploy(stack_settings())
    typer.echo("Serve stopped")
