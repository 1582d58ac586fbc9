"""Operator commands: ``mur db``, ``mur users``, ``mur tokens`` and ``mur quota`` over :mod:`mur.db`.

Secrets (generated passwords, API tokens) are the only thing these commands print on stdout, once, so
``TOKEN=$(mur tokens create alice)`` works; everything informative goes to stderr.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from mur.errors import InvalidInputError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from mur.db import Database

db_app = typer.Typer(name="db", no_args_is_help=True, help="Database schema: apply and inspect migrations.")
users_app = typer.Typer(name="users", no_args_is_help=True, help="User accounts and roles.")
tokens_app = typer.Typer(
    name="tokens", no_args_is_help=True, help="API tokens (only their SHA-256 is stored)."
)
quota_app = typer.Typer(name="quota", no_args_is_help=True, help="Monthly API quotas.")

UserArg = Annotated[str, typer.Argument(help="username (case-insensitive)")]
RoleArg = Annotated[str, typer.Argument(help="admin or member")]
TokenIdArg = Annotated[int, typer.Argument(help="token id from `mur tokens list`")]
PasswordStdinOpt = Annotated[
    bool, typer.Option("--password-stdin", help="read the password from stdin's first line")
]


def _info(message: str) -> None:
    """Informative output: stderr, so stdout carries only secrets/data."""
    typer.echo(message, err=True)


def _database() -> Database:
    """A small pool on the configured database, closed at the end of ``with _database() as database:``."""
    from mur.db import Database
    from mur.settings import get_settings

    return Database(get_settings(), maxconn=2)


def stdout_console(*, markup: bool = True) -> Console:
    """A console on stdout; when piped, wide enough that names are never wrapped (grep-friendly)."""
    from rich.console import Console

    console = Console(markup=markup)
    return console if console.is_terminal else Console(width=200, markup=markup)


def print_table(table: Table) -> None:
    """Print on :func:`stdout_console`. On a narrow terminal the key columns (the first two: id and name, pair
    and state...) stay whole; the others wrap.

    Markup is off: names, emails and token labels are anyone's text (a self-registered ``[/x]`` would be a
    MarkupError, ``[red]`` a style), and every cell and title is printed literally.
    """
    for column in table.columns[:2]:
        column.no_wrap = True
    stdout_console(markup=False).print(table)


def fmt_when(value: datetime | None) -> str:
    """A time as ``2024-11-04 08:00`` (these commands' times are UTC); ``-`` for none."""
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


# --- mur db -------------------------------------------------------------------------------------------------


@db_app.command("migrate")
def db_migrate() -> None:
    """Create the database if missing and apply pending migrations from sql/ (idempotent)."""
    from mur.db import migrate
    from mur.settings import get_settings

    settings = get_settings()
    report = migrate(settings)
    if report.created_database:
        typer.echo(f"created database {settings.db.pg_database}")
    for name in report.already_applied:
        typer.echo(f"  already applied  {name}")
    for name in report.applied_now:
        typer.echo(f"  applied          {name}")
    total = len(report.already_applied) + len(report.applied_now)
    typer.echo(
        f"{settings.db.pg_database}: {len(report.applied_now)} applied now, {total} in total, 0 pending"
    )


@db_app.command("status")
def db_status() -> None:
    """Show applied and pending migrations (changes nothing)."""
    from mur.db import migration_status
    from mur.settings import get_settings

    status = migration_status(get_settings())
    for name in status.applied:
        typer.echo(f"  applied  {name}")
    for name in status.pending:
        typer.echo(f"  pending  {name}")
    typer.echo(f"{len(status.applied)} applied, {len(status.pending)} pending")


# --- mur users ----------------------------------------------------------------------------------------------


def _read_password_stdin() -> str:
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise InvalidInputError("no password on stdin")
    return password


@users_app.command("create")
def users_create(
    username: UserArg,
    email: Annotated[str | None, typer.Option(help="contact email")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="also grant the admin role")] = False,
    quota: Annotated[
        int | None, typer.Option(help="monthly API call limit (default: MUR_DEFAULT_MONTHLY_QUOTA)")
    ] = None,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Create a user; without --password-stdin a strong password is generated and printed once."""
    from mur.db import create_user
    from mur.security import generate_password

    password = _read_password_stdin() if password_stdin else generate_password()
    roles = ("admin", "member") if admin else ("member",)
    with _database() as database:
        user = create_user(
            database, username=username, email=email, password=password, roles=roles, monthly_quota=quota
        )
    _info(f"created user {user.username} (id {user.id}, roles {', '.join(user.roles)})")
    if not password_stdin:
        _info("generated password (shown once):")
        typer.echo(password)


@users_app.command("list")
def users_list() -> None:
    """List users with roles, quota and this month's usage."""
    from rich.table import Table

    from mur.db import list_users

    with _database() as database:
        users = list_users(database)
    table = Table(title=f"{len(users)} user(s)")
    for column in ("id", "username", "email", "roles", "status", "used / quota", "created"):
        table.add_column(column, justify="right" if column in ("id", "used / quota") else "left")
    for user in users:
        quota = f"{user.used_this_month} / {user.monthly_limit}" + (
            " (default)" if user.quota_is_default else ""
        )
        table.add_row(
            str(user.id),
            user.username,
            user.email or "-",
            ", ".join(user.roles) or "-",
            "disabled" if user.disabled else "active",
            quota,
            fmt_when(user.created_at),
        )
    print_table(table)


def _set_disabled(username: str, disabled: bool) -> None:
    from mur.db import require_user, set_user_disabled

    with _database() as database:
        user = set_user_disabled(
            database, user_id=require_user(database, username=username).id, disabled=disabled
        )
    _info(f"user {user.username} is now {'disabled' if user.disabled else 'enabled'}")


@users_app.command("disable")
def users_disable(username: UserArg) -> None:
    """Disable a user: no login, and their API tokens stop working (not revoked)."""
    _set_disabled(username, True)


@users_app.command("enable")
def users_enable(username: UserArg) -> None:
    """Re-enable a disabled user."""
    _set_disabled(username, False)


def _change_role(username: str, role: str, grant: bool) -> None:
    from mur.db import add_role, remove_role, require_user

    change = add_role if grant else remove_role
    with _database() as database:
        roles = change(database, user_id=require_user(database, username=username).id, role=role)
    _info(f"{username}: roles {', '.join(roles) or '-'}")


@users_app.command("grant")
def users_grant(username: UserArg, role: RoleArg) -> None:
    """Grant a role."""
    _change_role(username, role, True)


@users_app.command("ungrant")
def users_ungrant(username: UserArg, role: RoleArg) -> None:
    """Take a role away."""
    _change_role(username, role, False)


@users_app.command("set-password")
def users_set_password(username: UserArg, password_stdin: PasswordStdinOpt = False) -> None:
    """Replace a user's password; without --password-stdin a new one is generated and printed once."""
    from mur.db import require_user, set_password
    from mur.security import generate_password

    password = _read_password_stdin() if password_stdin else generate_password()
    with _database() as database:
        set_password(database, user_id=require_user(database, username=username).id, password=password)
    _info(f"password of {username} replaced")
    if not password_stdin:
        _info("generated password (shown once):")
        typer.echo(password)


# --- mur tokens ---------------------------------------------------------------------------------------------


@tokens_app.command("create")
def tokens_create(
    username: UserArg,
    name: Annotated[str, typer.Option(help="label to recognise the token by")] = "default",
    expires_in: Annotated[
        str | None,
        typer.Option("--expires-in", help="lifetime such as 90d, 12h, 2w or 30m (default: never expires)"),
    ] = None,
) -> None:
    """Create an API token and print it on stdout, once (nothing else goes to stdout)."""
    from mur.db import create_token, parse_lifetime, require_user

    lifetime = parse_lifetime(expires_in) if expires_in is not None else None
    with _database() as database:
        token, row = create_token(
            database, user_id=require_user(database, username=username).id, name=name, expires_in=lifetime
        )
    expiry = f"expires {fmt_when(row.expires_at)} UTC, wall clock" if row.expires_at else "never expires"
    _info(
        f"created token {row.id} ({row.prefix}…, name {row.name!r}, {expiry}) for {username}; "
        "it is shown only once"
    )
    typer.echo(token)


@tokens_app.command("list")
def tokens_list(
    username: UserArg,
    active: Annotated[bool, typer.Option("--active", help="hide revoked and expired tokens")] = False,
) -> None:
    """List a user's tokens (prefix only: the full token is never stored)."""
    from rich.table import Table

    from mur.db import list_tokens, require_user

    with _database() as database:
        tokens = list_tokens(
            database, user_id=require_user(database, username=username).id, include_revoked=not active
        )
    columns = ("id", "name", "prefix", "created", "last used", "expires", "status")
    table = Table(*columns, title=f"tokens of {username} (wall-clock UTC times)")
    for token in tokens:
        state, when = token.status  # active, expired or revoked (when)
        table.add_row(
            str(token.id),
            token.name,
            token.prefix + "…",
            fmt_when(token.created_at),
            fmt_when(token.last_used_at),
            fmt_when(token.expires_at) if token.expires_at else "never",
            f"{state} {fmt_when(when)}" if when else state,
        )
    print_table(table)


@tokens_app.command("revoke")
def tokens_revoke(username: UserArg, token_id: TokenIdArg) -> None:
    """Revoke a token (immediately rejected by the API)."""
    from mur.db import require_user, revoke_token

    with _database() as database:
        token = revoke_token(
            database, user_id=require_user(database, username=username).id, token_id=token_id
        )
    _info(f"token {token.id} ({token.prefix}…) of {username} revoked at {fmt_when(token.revoked_at)}")


@tokens_app.command("rotate")
def tokens_rotate(username: UserArg, token_id: TokenIdArg) -> None:
    """Revoke a token and print its replacement (same name) on stdout, once."""
    from mur.db import require_user, rotate_token

    with _database() as database:
        token, row = rotate_token(
            database, user_id=require_user(database, username=username).id, token_id=token_id
        )
    _info(f"token {token_id} revoked; replacement is token {row.id} ({row.prefix}…), shown only once")
    typer.echo(token)


# --- mur quota ----------------------------------------------------------------------------------------------


@quota_app.command("set")
def quota_set(
    username: UserArg, limit: Annotated[int, typer.Argument(help="API calls per UTC calendar month")]
) -> None:
    """Set a user's monthly API call limit."""
    from mur.db import get_usage, require_user, set_quota

    with _database() as database:
        user = require_user(database, username=username)
        set_quota(database, user_id=user.id, monthly_limit=limit)
        used, effective = get_usage(database, user_id=user.id)
    _info(f"{user.username}: monthly quota {effective} ({used} used this month)")


@quota_app.command("reset")
def quota_reset(username: UserArg) -> None:
    """Put a user back on the default monthly quota (MUR_DEFAULT_MONTHLY_QUOTA)."""
    from mur.db import require_user, set_quota

    with _database() as database:
        user = require_user(database, username=username)
        effective = set_quota(database, user_id=user.id, monthly_limit=None)
    _info(f"{user.username}: back on the default monthly quota ({effective})")


@quota_app.command("show")
def quota_show(username: UserArg) -> None:
    """Print ``used/limit`` for this month on stdout."""
    from mur.db import get_usage, month_start, next_month_start, require_user

    with _database() as database:
        used, limit = get_usage(database, user_id=require_user(database, username=username).id)
    _info(f"resets at {next_month_start(month_start()).isoformat()} (wall clock)")
    typer.echo(f"{used}/{limit}")
