"""``mur mlflow password``: how to log in to the local stack's MLflow UI (docs/services.md, "MLflow accounts")."""

from __future__ import annotations

import typer


def password() -> None:
    """Print the MLflow UI's admin (mur-admin) and its password, from the stack's secrets file (its owner only)."""
    from mur.commands.local import config, stack_secret

    value = stack_secret(
        "mlflow_admin_password", "no MLflow password in {path}: start the stack first (mur up)"
    )
    typer.echo(f"{config.MLFLOW_ADMIN} {value}")


def register(app: typer.Typer) -> None:
    """Add the ``mur mlflow …`` group."""
    group = typer.Typer(no_args_is_help=True, help="The local stack's MLflow.")
    group.command("password")(password)
    app.add_typer(group, name="mlflow")
