"""Issue 22 at the database layer and in the CLI: look-alike usernames and guessable passwords are refused
by :func:`mur.db.create_user` (so by every way an account is made), and ``mur users list`` / ``mur tokens
list`` print names with Rich markup literally (a self-registered ``[/x]`` was a MarkupError)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import psycopg
import pytest
from typer.testing import CliRunner

from mur import db as mdb
from mur.db import Database
from mur.errors import ConflictError, InvalidInputError, WeakPasswordError
from mur.security import hash_password
from mur.settings import Settings

pytestmark = pytest.mark.pg  # PostgreSQL only: the postgres tier

PASSWORD = "Sufficiently-str0ng"


def _base() -> str:
    return f"mallory{uuid.uuid4().hex[:6]}"


def _count(database: Database) -> int:
    with database.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM users")
        return int(cur.fetchone()["n"])  # type: ignore[index]


def _insert_raw(settings: Settings, username: str, email: str | None = None) -> None:
    """An account as made before the username rules (straight into the table)."""
    with psycopg.connect(settings.db.dsn(), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (username, email, password_hash) VALUES (%s, %s, %s)",
            (username, email, hash_password(PASSWORD)),
        )


def test_lookalikes_of_an_existing_name_are_refused(database: Database) -> None:
    base = _base()
    mdb.create_user(database, username=base, password=PASSWORD)
    before = _count(database)
    for lookalike in (
        base.upper(),
        base.replace("o", "0"),
        base.replace("l", "1", 1),
        base.replace("l", "I", 1),
        base.replace("m", "rn"),
        "".join(chr(ord(c) + 0xFEE0) if c.isalnum() else c for c in base),  # fullwidth: NFKC gives base
    ):
        with pytest.raises(ConflictError, match="already taken"):
            mdb.create_user(database, username=lookalike, password=PASSWORD)
    for invisible in (base.replace("a", "\u0430"), base + "\u200b", "\u200b" + base):  # Cyrillic а, ZWSP
        with pytest.raises(InvalidInputError, match="username must use only"):
            mdb.create_user(database, username=invisible, password=PASSWORD)
    assert _count(database) == before
    other = mdb.create_user(database, username=base + "x", password=PASSWORD)  # a different name is fine
    assert other.username == base + "x"


def test_a_name_made_before_the_rules_blocks_its_latin_lookalike(
    database: Database, pg_settings: Settings
) -> None:
    base = _base()
    _insert_raw(pg_settings, base.replace("a", "\u0430"))  # Cyrillic а, registered before this fix
    with pytest.raises(ConflictError):
        mdb.create_user(database, username=base, password=PASSWORD)


def test_fullwidth_input_is_stored_normalized(database: Database) -> None:
    base = _base()
    user = mdb.create_user(database, username="".join(chr(ord(c) + 0xFEE0) for c in base), password=PASSWORD)
    assert user.username == base


@pytest.mark.parametrize("password", ["Password1!", "qwerty123456", "Summer2024!", "admin123456"])
def test_guessable_passwords_are_refused(database: Database, password: str) -> None:
    name = _base()
    with pytest.raises(WeakPasswordError, match="too easy to guess"):
        mdb.create_user(database, username=name, password=password)
    assert mdb.get_user_by_username(database, username=name) is None
    user = mdb.create_user(database, username=name, password=PASSWORD)
    with pytest.raises(WeakPasswordError, match="too easy to guess"):
        mdb.set_password(database, user_id=user.id, password=password)


MARKUP = "[/x][bold red]"


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, pg_settings: Settings) -> Callable[..., object]:
    from mur.cli import app

    monkeypatch.setattr("mur.settings.get_settings", lambda: pg_settings)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def test_markup_in_names_is_printed_literally(
    cli: Callable[..., object], database: Database, pg_settings: Settings
) -> None:
    username = f"{MARKUP}eve{uuid.uuid4().hex[:6]}[/x]"  # possible before the username rules
    _insert_raw(pg_settings, username, email=f"{MARKUP}@example.com")
    user = mdb.require_user(database, username=username)
    mdb.create_token(database, user_id=user.id, name=f"{MARKUP} token [/]")
    listed = cli("users", "list")
    assert listed.exit_code == 0, listed.output  # type: ignore[attr-defined]
    assert username in listed.stdout and f"{MARKUP}@example.com" in listed.stdout  # type: ignore[attr-defined]
    tokens = cli("tokens", "list", username)
    assert tokens.exit_code == 0, tokens.output  # type: ignore[attr-defined]
    assert f"tokens of {username}" in tokens.stdout  # type: ignore[attr-defined]
    assert f"{MARKUP} token [/]" in tokens.stdout  # type: ignore[attr-defined]
    assert "Traceback" not in listed.output + tokens.output  # type: ignore[attr-defined]
