"""``mur`` command line: thin Typer wrappers over the core package.

Sub-command groups live in :mod:`mur.commands`; heavy libraries are imported inside commands so that
``mur --help`` stays fast. Expected errors (:class:`mur.errors.MurError`) print one line and exit 1.
"""

from __future__ import annotations

import inspect
import re
import sys

import typer

from mur.commands import airflow as airflow_cmd
from mur.commands import backup as backup_cmd
from mur.commands import dash as dash_cmd
from mur.commands import data as data_cmd
from mur.commands import db as db_cmd
from mur.commands import forecast as forecast_cmd
from mur.commands import local
from mur.commands import ml as ml_cmd
from mur.commands import mlflow_login as mlflow_cmd
from mur.commands import models as models_cmd
from mur.commands import monitor as monitor_cmd
from mur.commands import pairs as pairs_cmd
from mur.commands import serve as serve_cmd
from mur.commands import stack as stack_cmd
from mur.commands import tune as tune_cmd
from mur.errors import MurError

app = typer.Typer(
    name="mur",
    help="Make Us Rich: train, register, serve and watch crypto forecasting models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # click's plain help: Typer's rich panels print flags as `--help <bool>`
)
for module in (ml_cmd, monitor_cmd, stack_cmd, dash_cmd, forecast_cmd, tune_cmd, backup_cmd):
    app.add_typer(module.commands)  # no name: its commands join the root's
for group in (
    monitor_cmd.alerts_cli,
    stack_cmd.services_app,
    db_cmd.db_app,
    db_cmd.users_app,
    db_cmd.tokens_app,
    db_cmd.quota_app,
    airflow_cmd.airflow_app,
    serve_cmd.serve_cli,
    serve_cmd.ray_cli,
    pairs_cmd.pairs_app,
    models_cmd.models_app,
    mlflow_cmd.mlflow_app,
    data_cmd.app,
):
    app.add_typer(group)

_REST_ROLE = re.compile(r":(?:func|class|mod|meth|data|attr|obj):`~?([^`]+)`")


def plain_help(typer_app: typer.Typer) -> None:
    """Command help comes from docstrings written for the code's readers: show it without reStructuredText
    (``--at`` reads --at, :func:`x` reads x) in every command of ``typer_app`` and its groups."""
    for info in typer_app.registered_commands:
        text = info.help if info.help is not None else inspect.getdoc(info.callback)
        if text:
            info.help = _REST_ROLE.sub(r"\1", text).replace("``", "")
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            plain_help(group.typer_instance)


plain_help(app)


def main() -> None:
    """Console-script entry point: run the app, turning known errors into one clean line."""
    try:
        local.use_stack_secrets()
        app()
    except MurError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)
    except ValueError as exc:  # pydantic's ValidationError: an invalid MUR_* variable
        from mur.settings import invalid_settings

        line = invalid_settings(exc)
        if line is None:
            raise
        typer.secho(f"error: {line}", fg=typer.colors.RED, err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
