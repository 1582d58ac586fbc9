"""``mur mlflow password``: how to log in to the local stack's MLflow UI (docs/services.md, "MLflow accounts")."""

from __future__ import annotations

import typer

mlflow_app = typer.Typer(name="mlflow", no_args_is_help=True, help="The local stack's MLflow.")


@mlflow_app.command("password")
def password() -> None:
    """Print the MLflow UI's admin (mur-admin) and its password, from the stack's secrets file (its owner only)."""
    from mur.commands.local import config, stack_secret

    value = stack_secret(
        "mlflow_admin_password", "no MLflow password in {path}: start the stack first (mur up)"
    )
    typer.echo(f"{config.MLFLOW_ADMIN} {value}")
