"""``mur backup DEST`` and ``mur restore SRC`` (:mod:`devstack.backup`): progress on stderr."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mur.commands.local import stack_settings

commands = typer.Typer()  # backup, restore: mur.cli adds them to the root


@commands.command("backup")
def backup_cmd(dest: Annotated[Path, typer.Argument(help="a new (or empty) directory")]) -> None:
    """Back up the three databases (pg_dump, custom format) and the S3 bucket into DEST, with a manifest
    (market and wall time, versions, a SHA-256 per file)."""
    from mur.commands.local import backup

    manifest = backup.backup(stack_settings(), dest, say=lambda m: typer.echo(m, err=True))
    typer.echo(f"backup of {manifest['wall_time']} in {dest} ({len(manifest['files'])} files)", err=True)


@commands.command("restore")
def restore_cmd(
    src: Annotated[Path, typer.Argument(help="a directory `mur backup` wrote")],
    force: Annotated[bool, typer.Option("--force", help="even while the stack runs")] = False,
) -> None:
    """Restore a backup into the stopped stack: checksums verified first, databases recreated from the
    dumps, the bucket refilled. `mur up` then starts the stack on it."""
    from mur.commands.local import backup

    backup.restore(stack_settings(), src, force=force, say=lambda m: typer.echo(m, err=True))
