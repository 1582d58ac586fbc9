"""mur.db against the real PostgreSQL: migrations, users, roles, tokens, quotas, login attempts, forecasts.

Fixtures (``pg_database_factory``, ``pg_settings``, ``database``) live in ``tests/conftest.py``; each test
uses random usernames so tests stay independent within the shared session database.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from argon2 import PasswordHasher
from psycopg import sql
from typer.testing import CliRunner

from mur import db as mdb
from mur.db import Database, logins
from mur.db.migrations import MigrationReport, MigrationStatus, discover_migrations
from mur.db.users import user_roles
from mur.errors import (
    ConflictError,
    DatabaseError,
    InvalidInputError,
    MigrationError,
    NotFoundError,
    TokenExpiredError,
    UnknownPairError,
    WeakPasswordError,
)
from mur.security import hash_token, needs_rehash, verify_password
from mur.settings import PROJECT_ROOT, Settings

pytestmark = pytest.mark.pg  # PostgreSQL only: the postgres tier (parallel workers, random names)

PASSWORD = "Sufficiently-str0ng"
TOKEN_RE = re.compile(r"^mur_[A-Za-z0-9_-]{43}$")


def _name(prefix: str = "user") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def _new_user(database: Database, **kwargs: object) -> mdb.User:
    kwargs.setdefault("username", _name())
    kwargs.setdefault("password", PASSWORD)
    return mdb.create_user(database, **kwargs)  # type: ignore[arg-type]


def _scalar(settings: Settings, query: str, params: tuple = ()) -> object:
    with psycopg.connect(settings.db.dsn(), autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


# ------------------------------------------------------------------------------------------------
# Migrations
# ------------------------------------------------------------------------------------------------


def test_migrate_creates_database_and_is_idempotent(pg_database_factory: Callable[..., Settings]) -> None:
    settings = pg_database_factory(migrated=False, create=False)
    files = [m.name for m in discover_migrations()]
    assert files[:2] == ["0001_users_tokens_quotas", "0002_forecasts_and_login_attempts"]
    assert mdb.migration_status(settings) == MigrationStatus(applied=[], pending=files)

    first = mdb.migrate(settings)
    assert first.created_database and first.applied_now == files and first.already_applied == []
    second = mdb.migrate(settings)
    assert not second.created_database and second.applied_now == [] and second.already_applied == files
    assert mdb.migration_status(settings) == MigrationStatus(applied=files, pending=[])
    assert _scalar(settings, "SELECT count(*) FROM schema_migrations") == len(files)
    assert _scalar(settings, "SELECT array_agg(name ORDER BY name) FROM roles") == ["admin", "member"]


def test_the_application_connects_with_its_own_least_privilege_role(pg_settings: Settings) -> None:
    """Issue 22: the stack no longer runs as superuser ``postgres``: migrations (the owner) create the role
    ``pg_app_user``, and the application's pool connects with it: it reads and writes the app's tables, and
    cannot change the schema, rewrite the migration log, read another database or escalate."""
    assert pg_settings.db.pg_app_user == "mur_app"
    with Database(pg_settings, maxconn=1) as db:
        with db.cursor() as cur:
            cur.execute("SELECT current_user, rolsuper, rolcreatedb, rolcreaterole FROM pg_roles "
                        "WHERE rolname = current_user")  # fmt: skip
            assert cur.fetchone() == {"current_user": "mur_app", "rolsuper": False, "rolcreatedb": False,
                                      "rolcreaterole": False}  # fmt: skip
            cur.execute("SELECT count(*) AS n FROM roles")
            assert cur.fetchone()["n"] >= 2
        for statement in (
            "CREATE TABLE evil (a int)",
            "DROP TABLE api_usage",
            "ALTER TABLE users ADD COLUMN evil int",
            "DELETE FROM schema_migrations",
            "CREATE ROLE evil SUPERUSER",
            "SELECT rolpassword FROM pg_authid",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                with db.cursor() as cur:
                    cur.execute(statement)
    other = sql.SQL("CREATE DATABASE {}").format(sql.Identifier("evil_" + uuid.uuid4().hex[:8]))
    with psycopg.connect(pg_settings.db.app_dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(other)
    assert mdb.migrate(pg_settings).applied_now == []  # idempotent with the role in place


def test_migrate_refuses_an_edited_migration(
    pg_database_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = pg_database_factory(migrated=False)
    migrations = tmp_path / "sql"
    shutil.copytree(PROJECT_ROOT / "sql", migrations)
    mdb.migrate(settings, migrations_dir=migrations)

    (migrations / "0001_users_tokens_quotas.sql").write_text(
        (migrations / "0001_users_tokens_quotas.sql").read_text() + "\n-- a harmless-looking edit\n"
    )
    with pytest.raises(MigrationError, match="0001_users_tokens_quotas.sql was edited.*never edit"):
        mdb.migrate(settings, migrations_dir=migrations)
    with pytest.raises(MigrationError, match="edited"):
        mdb.migration_status(settings, migrations_dir=migrations)

    (migrations / "0001_users_tokens_quotas.sql").unlink()
    with pytest.raises(MigrationError, match="missing"):
        mdb.migrate(settings, migrations_dir=migrations)


def test_migrate_applies_only_new_files_and_rolls_back_a_failing_one(
    pg_database_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = pg_database_factory(migrated=False)
    migrations = tmp_path / "sql"
    shutil.copytree(PROJECT_ROOT / "sql", migrations)
    mdb.migrate(settings, migrations_dir=migrations)

    (migrations / "0090_extra.sql").write_text("CREATE TABLE extra (id int);")
    assert mdb.migrate(settings, migrations_dir=migrations).applied_now == ["0090_extra"]

    (migrations / "0091_broken.sql").write_text("CREATE TABLE half_done (id int);\nSELECT * FROM nowhere;")
    with pytest.raises(MigrationError, match="0091_broken.sql failed and was rolled back"):
        mdb.migrate(settings, migrations_dir=migrations)
    assert _scalar(settings, "SELECT to_regclass('half_done')") is None
    assert _scalar(settings, "SELECT count(*) FROM schema_migrations WHERE version = '0091'") == 0
    assert mdb.migration_status(settings, migrations_dir=migrations).pending == ["0091_broken"]


def test_bad_migration_file_names_are_refused(tmp_path: Path) -> None:
    (tmp_path / "1_oops.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="bad migration file name"):
        discover_migrations(tmp_path)
    (tmp_path / "1_oops.sql").unlink()
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0001_b.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="share version 0001"):
        discover_migrations(tmp_path)


def test_concurrent_migrators_do_not_race(pg_database_factory: Callable[..., Settings]) -> None:
    settings = pg_database_factory(migrated=False, create=False)  # the database does not exist yet
    barrier = threading.Barrier(4)

    def run() -> MigrationReport:
        barrier.wait()
        return mdb.migrate(settings)

    with ThreadPoolExecutor(4) as pool:
        reports = list(pool.map(lambda _: run(), range(4)))
    files = [m.name for m in discover_migrations()]
    assert sorted(name for r in reports for name in r.applied_now) == files  # each file applied once
    assert _scalar(settings, "SELECT count(*) FROM schema_migrations") == len(files)


def test_migrators_of_different_databases_share_the_app_role(
    pg_database_factory: Callable[..., Settings],
) -> None:
    """The app role is cluster-wide: migrators of several databases at once (parallel test workers, two
    stacks on one server) alter it concurrently, which PostgreSQL answers with "tuple concurrently updated"
    unless it is retried."""
    from mur.db.migrations import ensure_app_role

    databases = [pg_database_factory() for _ in range(3)]
    barrier = threading.Barrier(len(databases))

    def run(settings: Settings) -> int:
        with psycopg.connect(settings.db.dsn(), autocommit=True) as conn:
            barrier.wait()
            for _ in range(40):
                ensure_app_role(conn, settings)
        return 40

    with ThreadPoolExecutor(len(databases)) as pool:
        assert sum(pool.map(run, databases)) == 40 * len(databases)


def test_unmigrated_database_gives_a_clear_error(pg_database_factory: Callable[..., Settings]) -> None:
    settings = pg_database_factory(migrated=False)
    with Database(settings) as database, pytest.raises(DatabaseError, match="mur db migrate"):
        mdb.get_user_by_username(database, username="alice")


def test_missing_database_gives_a_clear_error() -> None:
    settings = Settings(env="test", pg_database=f"mur_missing_{uuid.uuid4().hex[:8]}")
    with Database(settings) as database, pytest.raises(DatabaseError, match="does not exist.*mur db migrate"):
        mdb.get_user_by_username(database, username="alice")


def test_pool_waits_then_fails_clearly_when_exhausted(pg_settings: Settings) -> None:
    with Database(pg_settings, maxconn=1, pool_timeout_s=0.2) as database:
        assert _backend_pid(database)
        with database.connection(), pytest.raises(DatabaseError, match="no free database connection"):
            with database.connection():
                pass
        assert _backend_pid(database)  # the slot came back


def _backend_pid(database: Database) -> int:
    with database.cursor() as cur:
        cur.execute("SELECT pg_backend_pid() AS pid")
        row = cur.fetchone()
    assert row is not None
    return int(row["pid"])


def _terminate(settings: Settings, pid: int) -> None:
    """Kill one server backend and wait (up to 5 s) until it is gone."""
    assert _scalar(settings, "SELECT pg_terminate_backend(%s, 5000)", (pid,)) is True


def test_pool_replaces_idle_connections_the_server_dropped(pg_settings: Settings) -> None:
    with Database(pg_settings, minconn=1, maxconn=1) as database:
        pid = _backend_pid(database)
        _terminate(pg_settings, pid)
        assert mdb.get_user_by_id(database, user_id=-1) is None  # checked on checkout, replaced unseen
        assert _backend_pid(database) != pid


def test_a_pool_whose_idle_connections_all_died_answers_the_next_request(pg_settings: Settings) -> None:
    """Serve's request pool keeps 8 connections open: after the server dropped them all, the first request
    is answered within the pool's timeout (psycopg_pool alone met the dead ones one back-off at a time, 1 + 2
    s, and both requests of a 2.5 s timeout failed)."""
    with Database(pg_settings, minconn=4, maxconn=4, pool_timeout_s=2.5) as database:
        with database.connection(), database.connection(), database.connection(), database.connection():
            pass  # all four opened
        for pid in _pool_backends(pg_settings):
            _terminate(pg_settings, pid)
        assert _backend_pid(database) and _backend_pid(database)


def _pool_backends(settings: Settings) -> list[int]:
    """The backends of the pools on the settings' database (this test worker's own)."""
    from mur.db.pool import APPLICATION_NAME

    with psycopg.connect(settings.db.dsn("postgres"), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
            (settings.db.pg_database, APPLICATION_NAME),
        ).fetchall()
    assert len(rows) >= 4, rows  # this pool's four, and any other pool of this worker on its database
    return [row[0] for row in rows]


def test_connection_lost_mid_transaction_fails_clearly_then_recovers(pg_settings: Settings) -> None:
    with Database(pg_settings, minconn=1, maxconn=1) as database:
        with pytest.raises(DatabaseError, match="failed"), database.cursor() as cur:
            cur.execute("SELECT pg_backend_pid() AS pid")
            row = cur.fetchone()
            assert row is not None
            _terminate(pg_settings, row["pid"])
            cur.execute("SELECT 1")
        assert _backend_pid(database)  # a fresh connection replaced the dead one


def test_pool_connections_have_timeouts_keepalives_and_utc(pg_settings: Settings) -> None:
    with Database(pg_settings, maxconn=1, statement_timeout_s=0.2) as database:
        with database.connection() as conn:
            params = conn.info.get_parameters()
            assert params["connect_timeout"] == "10" and params["keepalives_idle"] == "60"
        with database.cursor() as cur:
            cur.execute(
                "SELECT current_setting('TimeZone') AS tz, current_setting('statement_timeout') AS st"
            )
            assert cur.fetchone() == {"tz": "UTC", "st": "200ms"}
        with pytest.raises(DatabaseError, match="statement timeout"), database.cursor() as cur:
            cur.execute("SELECT pg_sleep(2)")
        assert _backend_pid(database)


# ------------------------------------------------------------------------------------------------
# Users and roles
# ------------------------------------------------------------------------------------------------


def test_create_and_fetch_user(database: Database) -> None:
    username = _name("Alice")
    user = _new_user(database, username=username, email="alice@example.com")
    assert user.username == username and user.email == "alice@example.com"
    assert user.roles == ("member",) and not user.is_admin and not user.disabled
    assert user.created_at.tzinfo is not None
    assert mdb.get_user_by_id(database, user_id=user.id) == user
    assert mdb.get_user_by_username(database, username=username.upper()) == user
    assert mdb.get_user_by_username(database, username=_name()) is None
    assert mdb.get_user_by_id(database, user_id=-1) is None
    with pytest.raises(NotFoundError, match="unknown user"):
        mdb.require_user(database, username=_name())


def test_password_hash_is_argon2_and_never_plaintext(database: Database, pg_settings: Settings) -> None:
    user = _new_user(database)
    stored = _scalar(pg_settings, "SELECT password_hash FROM users WHERE id = %s", (user.id,))
    assert isinstance(stored, str) and stored.startswith("$argon2id$") and PASSWORD not in stored
    assert verify_password(stored, PASSWORD)


def test_duplicate_username_is_a_conflict_case_insensitively(
    database: Database, pg_settings: Settings
) -> None:
    username = _name("Bob")
    _new_user(database, username=username)
    before = _scalar(pg_settings, "SELECT count(*) FROM users")
    for taken in (username, username.lower(), username.upper()):
        with pytest.raises(ConflictError, match="already taken"):
            _new_user(database, username=taken)
    assert _scalar(pg_settings, "SELECT count(*) FROM users") == before


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"username": ""}, InvalidInputError, "non-empty"),
        ({"username": " padded"}, InvalidInputError, "leading or trailing"),
        ({"username": "x" * 65}, InvalidInputError, "at most 64"),
        ({"username": "tab\tname"}, InvalidInputError, "control characters"),
        ({"email": "not-an-email"}, InvalidInputError, "invalid email"),
        ({"roles": ("root",)}, InvalidInputError, "unknown role"),
        ({"monthly_quota": -1}, InvalidInputError, "between 0 and"),
        ({"password": "short"}, WeakPasswordError, "at least 10 characters"),
    ],
)
def test_create_user_rejects_bad_input(
    database: Database, kwargs: dict, error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        _new_user(database, **kwargs)


def test_roles(database: Database) -> None:
    admin = _new_user(database, roles=("admin", "member"))
    assert admin.roles == ("admin", "member") and admin.is_admin
    member = _new_user(database)
    assert mdb.add_role(database, user_id=member.id, role="admin") == ("admin", "member")
    assert mdb.add_role(database, user_id=member.id, role="admin") == ("admin", "member")  # idempotent
    assert mdb.remove_role(database, user_id=member.id, role="member") == ("admin",)
    assert mdb.remove_role(database, user_id=member.id, role="admin") == ()
    assert user_roles(database, user_id=member.id) == ()
    with pytest.raises(InvalidInputError, match="unknown role"):
        mdb.add_role(database, user_id=member.id, role="superuser")
    with pytest.raises(NotFoundError):
        mdb.add_role(database, user_id=-1, role="member")


def test_authenticate(database: Database) -> None:
    user = _new_user(database, username=_name("Carol"))
    assert mdb.authenticate(database, username=user.username, password=PASSWORD) == user
    assert mdb.authenticate(database, username=user.username.lower(), password=PASSWORD) == user
    assert mdb.authenticate(database, username=user.username, password=PASSWORD + "x") is None
    assert mdb.authenticate(database, username=user.username, password="") is None
    assert mdb.authenticate(database, username=_name(), password=PASSWORD) is None
    mdb.set_user_disabled(database, user_id=user.id, disabled=True)
    assert mdb.authenticate(database, username=user.username, password=PASSWORD) is None
    mdb.set_user_disabled(database, user_id=user.id, disabled=False)
    assert mdb.authenticate(database, username=user.username, password=PASSWORD) is not None


def test_authenticate_upgrades_outdated_hashes(database: Database, pg_settings: Settings) -> None:
    user = _new_user(database)
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    with database.cursor() as cur:
        cur.execute("UPDATE users SET password_hash = %s WHERE id = %s", (weak, user.id))
    assert mdb.authenticate(database, username=user.username, password=PASSWORD) is not None
    upgraded = _scalar(pg_settings, "SELECT password_hash FROM users WHERE id = %s", (user.id,))
    assert upgraded != weak and not needs_rehash(upgraded) and verify_password(upgraded, PASSWORD)


def test_set_password(database: Database) -> None:
    user = _new_user(database)
    mdb.set_password(database, user_id=user.id, password="Another-passw0rd")
    assert mdb.authenticate(database, username=user.username, password=PASSWORD) is None
    assert mdb.authenticate(database, username=user.username, password="Another-passw0rd") is not None
    with pytest.raises(WeakPasswordError):
        mdb.set_password(database, user_id=user.id, password="weak")
    with pytest.raises(NotFoundError):
        mdb.set_password(database, user_id=-1, password="Another-passw0rd")


def test_list_users_shows_roles_quota_and_usage(database: Database, pg_settings: Settings) -> None:
    own = _new_user(database, monthly_quota=7, roles=("admin", "member"))
    default = _new_user(database)
    mdb.consume_quota(database, user_id=own.id)
    mdb.consume_quota(database, user_id=own.id)
    by_id = {u.id: u for u in mdb.list_users(database)}
    assert by_id[own.id].roles == ("admin", "member")
    assert (by_id[own.id].monthly_limit, by_id[own.id].quota_is_default, by_id[own.id].used_this_month) == (
        7,
        False,
        2,
    )
    expected_default = (pg_settings.serving.default_monthly_quota, True, 0)
    assert (
        by_id[default.id].monthly_limit,
        by_id[default.id].quota_is_default,
        by_id[default.id].used_this_month,
    ) == (expected_default)


# ------------------------------------------------------------------------------------------------
# API tokens
# ------------------------------------------------------------------------------------------------


def _all_text_values(settings: Settings) -> list[str]:
    """Every text-like value in every table of the public schema."""
    conn = psycopg.connect(settings.db.dsn())
    values: list[str] = []
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = 'public' AND data_type IN ('text', 'character varying', 'character')"
            )
            for table, column in cur.fetchall():
                cur.execute(
                    sql.SQL("SELECT {} FROM {}").format(sql.Identifier(column), sql.Identifier(table))
                )
                values.extend(v for (v,) in cur.fetchall() if v is not None)
    finally:
        conn.close()
    return values


def test_token_lifecycle_and_plaintext_never_stored(database: Database, pg_settings: Settings) -> None:
    user = _new_user(database, roles=("admin", "member"))
    token, row = mdb.create_token(database, user_id=user.id, name="laptop")
    assert TOKEN_RE.match(token)
    assert row.prefix == token[:12] and row.name == "laptop" and row.is_active and row.last_used_at is None

    stored_hash = _scalar(pg_settings, "SELECT token_hash FROM api_tokens WHERE id = %s", (row.id,))
    assert stored_hash == hash_token(token)
    secret_part = token[len("mur_") :]
    assert not [v for v in _all_text_values(pg_settings) if token in v or secret_part in v]

    owner = mdb.lookup_token(database, token=token)
    assert owner == mdb.TokenOwner(
        token_id=row.id, user_id=user.id, username=user.username, roles=("admin", "member")
    )
    assert owner.is_admin
    assert mdb.list_tokens(database, user_id=user.id)[0].last_used_at is not None

    assert mdb.lookup_token(database, token=token + "x") is None
    assert mdb.lookup_token(database, token=token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert mdb.lookup_token(database, token="") is None

    revoked = mdb.revoke_token(database, user_id=user.id, token_id=row.id)
    assert revoked.revoked_at is not None and not revoked.is_active
    assert mdb.lookup_token(database, token=token) is None
    assert mdb.revoke_token(database, user_id=user.id, token_id=row.id).revoked_at == revoked.revoked_at
    assert mdb.list_tokens(database, user_id=user.id, include_revoked=False) == []
    assert len(mdb.list_tokens(database, user_id=user.id)) == 1


def test_tokens_belong_to_their_user(database: Database) -> None:
    alice, mallory = _new_user(database), _new_user(database)
    _, row = mdb.create_token(database, user_id=alice.id)
    with pytest.raises(NotFoundError):
        mdb.revoke_token(database, user_id=mallory.id, token_id=row.id)
    with pytest.raises(NotFoundError):
        mdb.rotate_token(database, user_id=mallory.id, token_id=row.id)
    with pytest.raises(NotFoundError):
        mdb.create_token(database, user_id=-1)
    with pytest.raises(InvalidInputError, match="token name"):
        mdb.create_token(database, user_id=alice.id, name="  ")


def test_rotate_token(database: Database) -> None:
    user = _new_user(database)
    old, old_row = mdb.create_token(database, user_id=user.id, name="ci")
    new, new_row = mdb.rotate_token(database, user_id=user.id, token_id=old_row.id)
    assert new != old and new_row.name == "ci" and new_row.id != old_row.id
    assert mdb.lookup_token(database, token=old) is None
    assert mdb.lookup_token(database, token=new).token_id == new_row.id
    with pytest.raises(NotFoundError, match="no active token"):
        mdb.rotate_token(database, user_id=user.id, token_id=old_row.id)


def _expire(settings: Settings, token_id: int) -> None:
    """Move a token's creation and expiry into the past (it was given an hour and two have gone by)."""
    with psycopg.connect(settings.db.dsn(), autocommit=True) as conn:
        conn.execute(
            "UPDATE api_tokens SET created_at = now() - interval '2 hours', "
            "expires_at = now() - interval '1 hour' WHERE id = %s",
            (token_id,),
        )


def test_token_expiry(database: Database, pg_settings: Settings) -> None:
    """An optional expiry: listed, honoured by the lookup (TokenExpiredError, no last_used_at touch), hidden
    from the active list, kept as a lifetime by rotation; lifetimes are validated."""
    user = _new_user(database)
    forever, forever_row = mdb.create_token(database, user_id=user.id, name="forever")
    assert forever_row.expires_at is None and forever_row.status == ("active", None)
    token, row = mdb.create_token(database, user_id=user.id, name="ci", expires_in=timedelta(days=90))
    assert row.expires_at is not None and row.is_active and not row.is_expired
    assert row.expires_at - row.created_at == timedelta(days=90)
    assert mdb.lookup_token(database, token=token) is not None

    _expire(pg_settings, row.id)
    with pytest.raises(TokenExpiredError, match="expired at") as raised:
        mdb.lookup_token(database, token=token)
    assert raised.value.expired_at < datetime.now(UTC)
    (listed,) = [t for t in mdb.list_tokens(database, user_id=user.id) if t.id == row.id]
    assert listed.is_expired and not listed.is_active and listed.status == ("expired", listed.expires_at)
    assert [t.id for t in mdb.list_tokens(database, user_id=user.id, include_revoked=False)] == [
        forever_row.id
    ]
    assert mdb.lookup_token(database, token=forever) is not None

    # rotation replaces an expired token; the replacement gets the same lifetime, from now
    new, new_row = mdb.rotate_token(database, user_id=user.id, token_id=row.id)
    assert new_row.expires_at is not None and new_row.expires_at - new_row.created_at == timedelta(hours=1)
    assert mdb.lookup_token(database, token=new) is not None

    for bad in (timedelta(0), timedelta(seconds=-5), timedelta(days=3651)):
        with pytest.raises(InvalidInputError, match="lifetime"):
            mdb.create_token(database, user_id=user.id, expires_in=bad)
    assert mdb.parse_lifetime("90d") == timedelta(days=90)
    assert mdb.parse_lifetime(" 12h ") == timedelta(hours=12)
    assert mdb.parse_lifetime("2w") == timedelta(weeks=2) and mdb.parse_lifetime("30m") == timedelta(
        minutes=30
    )
    for bad_text in ("", "90", "d", "1.5d", "-1d", "0d", "99999d", "90 days"):
        with pytest.raises(InvalidInputError, match="lifetime"):
            mdb.parse_lifetime(bad_text)


def test_disabled_users_tokens_stop_working(database: Database) -> None:
    user = _new_user(database)
    token, _ = mdb.create_token(database, user_id=user.id)
    mdb.set_user_disabled(database, user_id=user.id, disabled=True)
    assert mdb.lookup_token(database, token=token) is None
    mdb.set_user_disabled(database, user_id=user.id, disabled=False)
    assert mdb.lookup_token(database, token=token) is not None
    with pytest.raises(NotFoundError):
        mdb.set_user_disabled(database, user_id=-1)


# ------------------------------------------------------------------------------------------------
# Quotas
# ------------------------------------------------------------------------------------------------


def test_quota_edit_and_usage(database: Database, pg_settings: Settings) -> None:
    user = _new_user(database)
    assert mdb.get_usage(database, user_id=user.id) == (0, pg_settings.serving.default_monthly_quota)
    assert mdb.set_quota(database, user_id=user.id, monthly_limit=5) == 5
    assert mdb.set_quota(database, user_id=user.id, monthly_limit=3) == 3
    assert mdb.get_usage(database, user_id=user.id) == (0, 3)
    assert (
        mdb.set_quota(database, user_id=user.id, monthly_limit=None)
        == pg_settings.serving.default_monthly_quota
    )
    assert mdb.get_usage(database, user_id=user.id) == (0, pg_settings.serving.default_monthly_quota)
    with pytest.raises(InvalidInputError):
        mdb.set_quota(database, user_id=user.id, monthly_limit=-5)
    with pytest.raises(NotFoundError):
        mdb.set_quota(database, user_id=-1, monthly_limit=5)
    with pytest.raises(NotFoundError):
        mdb.get_usage(database, user_id=-1)


def test_consume_quota_until_exhausted(database: Database) -> None:
    user = _new_user(database, monthly_quota=3)
    at = datetime(2031, 5, 17, 13, 0, tzinfo=UTC)
    results = [mdb.consume_quota(database, user_id=user.id, at=at) for _ in range(5)]
    assert [r.allowed for r in results] == [True, True, True, False, False]
    assert [r.used for r in results] == [1, 2, 3, 3, 3]
    assert [r.remaining for r in results] == [2, 1, 0, 0, 0]
    assert {r.limit for r in results} == {3}
    assert {r.reset_at for r in results} == {datetime(2031, 6, 1, tzinfo=UTC)}
    assert mdb.get_usage(database, user_id=user.id, month=date(2031, 5, 1)) == (3, 3)

    # a new month starts from zero; December resets into the next year
    december = mdb.consume_quota(database, user_id=user.id, at=datetime(2031, 12, 31, 23, 59, tzinfo=UTC))
    assert december.allowed and december.used == 1 and december.reset_at == datetime(2032, 1, 1, tzinfo=UTC)

    # raising the limit lets calls through again; lowering it below usage blocks them
    mdb.set_quota(database, user_id=user.id, monthly_limit=4)
    assert mdb.consume_quota(database, user_id=user.id, at=at).allowed
    mdb.set_quota(database, user_id=user.id, monthly_limit=1)
    assert mdb.consume_quota(database, user_id=user.id, at=at) == mdb.QuotaResult(
        allowed=False, used=4, limit=1, reset_at=datetime(2031, 6, 1, tzinfo=UTC)
    )


def test_zero_quota_refuses_the_very_first_call(database: Database, pg_settings: Settings) -> None:
    user = _new_user(database, monthly_quota=0)
    result = mdb.consume_quota(database, user_id=user.id)
    assert (result.allowed, result.used, result.limit) == (False, 0, 0)
    assert _scalar(pg_settings, "SELECT count(*) FROM api_usage WHERE user_id = %s", (user.id,)) == 0


def test_consume_quota_units_and_bad_input(database: Database) -> None:
    user = _new_user(database, monthly_quota=5)
    assert mdb.consume_quota(database, user_id=user.id, units=3).used == 3
    refused = mdb.consume_quota(database, user_id=user.id, units=3)
    assert not refused.allowed and refused.used == 3  # all or nothing
    assert mdb.consume_quota(database, user_id=user.id, units=2).used == 5
    with pytest.raises(InvalidInputError):
        mdb.consume_quota(database, user_id=user.id, units=0)
    with pytest.raises(NotFoundError):
        mdb.consume_quota(database, user_id=-1)


def test_peek_quota_spends_nothing(database: Database) -> None:
    user = _new_user(database, monthly_quota=1)
    assert [mdb.peek_quota(database, user_id=user.id).allowed for _ in range(3)] == [True, True, True]
    assert mdb.consume_quota(database, user_id=user.id).allowed
    peeked = mdb.peek_quota(database, user_id=user.id)
    assert (peeked.allowed, peeked.used, peeked.limit, peeked.remaining) == (False, 1, 1, 0)
    assert mdb.get_usage(database, user_id=user.id) == (1, 1)


def test_a_charge_its_caller_abandoned_rolls_back(database: Database) -> None:
    """``commit_if`` is asked after the statement spent the unit; False rolls the charge back."""
    user = _new_user(database, monthly_quota=5)
    asked: list[bool] = []

    def no() -> bool:
        asked.append(False)
        return False

    with pytest.raises(DatabaseError, match="abandoned"):
        mdb.consume_quota(database, user_id=user.id, commit_if=no)
    assert asked == [False] and mdb.get_usage(database, user_id=user.id) == (0, 5)
    assert mdb.consume_quota(database, user_id=user.id, commit_if=lambda: True).used == 1


@pytest.mark.parametrize(
    ("table", "mode", "ready"),
    [
        ("api_usage", "ACCESS EXCLUSIVE", False),
        ("api_usage", "EXCLUSIVE", False),  # reads pass, a charge would not
        ("api_tokens", "SHARE", False),  # the token lookup's last_used_at update would wait
        ("quotas", "ACCESS EXCLUSIVE", False),
        ("api_usage", "ROW EXCLUSIVE", True),  # ordinary traffic
        ("quotas", "SHARE", True),  # reads only
    ],
)
def test_probe_request_tables_fails_like_a_request(
    pg_settings: Settings, table: str, mode: str, ready: bool
) -> None:
    with (
        Database(pg_settings, maxconn=1, lock_timeout_s=0.2) as database,
        psycopg.connect(pg_settings.db.dsn()) as locker,
    ):
        mdb.probe_request_tables(database)
        locker.execute(sql.SQL("LOCK TABLE {} IN " + mode + " MODE").format(sql.Identifier(table)))
        if ready:
            mdb.probe_request_tables(database)
        else:
            with pytest.raises(DatabaseError, match="lock timeout"):
                mdb.probe_request_tables(database)
        locker.rollback()
        mdb.probe_request_tables(database)


def test_default_quota_applies_without_a_quota_row(pg_settings: Settings) -> None:
    settings = pg_settings.replace(default_monthly_quota=2)
    with Database(settings) as database:
        user = _new_user(database)
        assert [mdb.consume_quota(database, user_id=user.id).allowed for _ in range(3)] == [True, True, False]


def test_quota_race_allows_exactly_the_limit(pg_settings: Settings) -> None:
    """200 simultaneous calls from 4 pools (think: 4 API replicas) for a quota of 50: exactly 50 pass."""
    pools = [Database(pg_settings, maxconn=10) for _ in range(4)]
    try:
        user = _new_user(pools[0], monthly_quota=50)
        for pool in pools:  # open every connection up front so the calls really overlap
            with pool.connection(), pool.connection():
                pass
        calls = 200
        barrier = threading.Barrier(calls)

        def call(i: int) -> mdb.QuotaResult:
            barrier.wait()
            return mdb.consume_quota(pools[i % len(pools)], user_id=user.id)

        with ThreadPoolExecutor(calls) as executor:
            results = list(executor.map(call, range(calls)))
        allowed = [r for r in results if r.allowed]
        assert len(allowed) == 50
        assert sorted(r.used for r in allowed) == list(range(1, 51))  # every unit handed out exactly once
        assert all(r.used == 50 and r.limit == 50 for r in results if not r.allowed)
        assert mdb.get_usage(pools[0], user_id=user.id) == (50, 50)
    finally:
        for pool in pools:
            pool.close()


# ------------------------------------------------------------------------------------------------
# Hostile input
# ------------------------------------------------------------------------------------------------

INJECTIONS = [
    "robert'); DROP TABLE users;--",
    "' OR '1'='1",
    '" OR ""="',
    "admin'--",
    "x; DELETE FROM api_tokens; --",
    "%s %(user_id)s {0} $1",
    "\\'; SELECT pg_sleep(5); --",
    "ünï'cødé\"💥",
]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_sql_injection_strings_are_stored_verbatim(
    database: Database, pg_settings: Settings, payload: str
) -> None:
    with pytest.raises(InvalidInputError, match="username must"):  # outside the username alphabet
        _new_user(database, username=payload + uuid.uuid4().hex[:6])
    username = _name("inj")
    email = payload + "@example.com"
    user = _new_user(database, username=username, email=email)
    assert (user.username, user.email) == (username, email)
    fetched = mdb.get_user_by_username(database, username=username)
    assert fetched is not None and (fetched.username, fetched.email) == (username, email)
    assert mdb.authenticate(database, username=payload, password=payload) is None
    assert mdb.authenticate(database, username=username, password=PASSWORD) == user
    assert mdb.lookup_token(database, token=payload) is None
    record_login_attempt(database, username=payload, ip=payload, success=False)
    assert _failures(database, payload, payload, window_s=60)[0] >= 1
    limits = mdb.LoginLimits(per_user_ip=100, per_ip=100, per_user=100, window_s=60)
    assert mdb.begin_login_attempt(database, username=payload, ip=payload, limits=limits) is not None
    assert mdb.begin_registration_attempt(database, ip=payload, limit=100, window_s=60)
    with pytest.raises(UnknownPairError):  # pair names follow the one pair rule (mur.pairs)
        mdb.record_forecast(
            database,
            pair=payload,
            model_version="1",
            target_time=datetime.now(UTC),
            predicted=1,
            last_close=1,
        )
    forecast = mdb.record_forecast(
        database,
        pair="inj_usdt",
        model_version=payload,
        target_time=datetime(2030, 1, 1, tzinfo=UTC),
        predicted=1.0,
        last_close=1.0,
    )
    assert forecast.model_version == payload
    assert mdb.list_forecasts(database, pair="inj_usdt", model_version=payload)[0].id == forecast.id
    for table in ("users", "roles", "user_roles", "api_tokens", "quotas", "api_usage", "schema_migrations"):
        assert _scalar(pg_settings, "SELECT to_regclass(%s) IS NOT NULL", (table,)) is True
    assert _scalar(pg_settings, "SELECT count(*) FROM users WHERE username = %s", (username,)) == 1
    assert _scalar(pg_settings, "SELECT count(*) FROM roles") == 2


# ------------------------------------------------------------------------------------------------
# Login attempts
# ------------------------------------------------------------------------------------------------


def record_login_attempt(database: Database, *, username: str, ip: str | None, success: bool) -> None:
    """One finished login attempt, recorded as the dashboard records it (limits that never refuse; a window
    of a day, so recording prunes no attempt a test backdated)."""
    limits = mdb.LoginLimits(per_user_ip=10**6, per_ip=10**6, per_user=10**6, window_s=86_400)
    attempt_id = mdb.begin_login_attempt(database, username=username, ip=ip, limits=limits)
    assert attempt_id is not None
    if success:
        mdb.mark_login_succeeded(database, attempt_id=attempt_id)


def _failures(database: Database, username: str, ip: str | None, window_s: int = 300) -> tuple[int, ...]:
    """The recent failures the login limits count, as ``begin_login_attempt`` reads them."""
    with database.cursor() as cur:
        counts = logins._recent_failures(cur, username, ip, window_s)
    return counts.per_user_ip, counts.per_ip, counts.per_user


def test_login_failures_are_counted_per_username_ip_and_both(database: Database) -> None:
    username, ip, other_ip = _name(), f"10.0.{uuid.uuid4().int % 250}.1", f"192.0.2.{uuid.uuid4().int % 250}"
    for _ in range(3):
        record_login_attempt(database, username=username, ip=ip, success=False)
    assert _failures(database, username.upper(), ip) == (3, 3, 3)  # usernames are case-insensitive
    assert _failures(database, _name(), ip) == (0, 3, 0)  # same IP, another username
    assert _failures(database, username, other_ip + "9") == (0, 0, 3)  # same username, another IP
    # a success from that IP forgives earlier failures of this username, not the IP's count
    record_login_attempt(database, username=username, ip=ip, success=True)
    assert _failures(database, username, ip) == (0, 3, 0)
    record_login_attempt(database, username=username, ip=other_ip, success=False)
    assert _failures(database, username, ip) == (0, 3, 1)
    assert _failures(database, username, other_ip) == (1, 1, 1)


def test_login_failures_outside_the_window_do_not_count(database: Database) -> None:
    username = _name()
    record_login_attempt(database, username=username, ip=None, success=False)
    with database.cursor() as cur:
        cur.execute(
            "UPDATE login_attempts SET attempted_at = now() - interval '1 hour' WHERE username = %s",
            (username,),
        )
    record_login_attempt(database, username=username, ip=None, success=False)
    assert _failures(database, username, None) == (1, 0, 1)
    assert _failures(database, username, None, window_s=7200) == (2, 0, 2)


def test_recording_an_attempt_deletes_the_ones_older_than_its_window(
    database: Database, pg_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without pruning the attempt tables would grow forever: each recorded attempt deletes old ones."""
    # this worker's database may hold old attempts of earlier tests: delete them all, not the first 100
    monkeypatch.setattr("mur.db.logins.PRUNE_BATCH", 1_000_000)
    username, ip = _name(), f"10.4.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
    record_login_attempt(database, username=username, ip=ip, success=False)
    record_login_attempt(database, username=username, ip=ip, success=True)
    assert mdb.begin_registration_attempt(database, ip=ip, limit=5, window_s=600)
    ago = "SET attempted_at = now() - interval '20 minutes' WHERE ip = %s"
    with database.cursor() as cur:
        cur.execute("UPDATE login_attempts " + ago, (ip,))
        cur.execute("UPDATE registration_attempts " + ago, (ip,))
    limits = mdb.LoginLimits(per_user_ip=5, per_ip=5, per_user=5, window_s=600)
    assert mdb.begin_login_attempt(database, username=username, ip=ip, limits=limits) is not None
    assert mdb.begin_registration_attempt(database, ip=ip, limit=5, window_s=600)
    # the new attempts alone are left: the old ones are gone
    assert _scalar(pg_settings, "SELECT count(*) FROM login_attempts WHERE ip = %s", (ip,)) == 1
    assert _scalar(pg_settings, "SELECT count(*) FROM registration_attempts WHERE ip = %s", (ip,)) == 1


@pytest.mark.parametrize("table", ["login_attempts", "registration_attempts"])
def test_pruning_finds_old_attempts_through_an_index(database: Database, table: str) -> None:
    """The prune's scan for old attempts can use an index on attempted_at (sql/0014), not the whole table."""
    with database.cursor() as cur:
        cur.execute("SET LOCAL enable_seqscan = off")
        cur.execute(
            sql.SQL(
                "EXPLAIN SELECT id FROM {} WHERE attempted_at < now() - make_interval(secs => 60)"
            ).format(sql.Identifier(table))
        )
        plan = "\n".join(row["QUERY PLAN"] for row in cur.fetchall())
    assert f"{table}_attempted_at_idx" in plan and "Index Cond" in plan


def test_begin_login_attempt_is_atomic_under_parallel_calls(
    database: Database, pg_settings: Settings
) -> None:
    """20 parallel attempts with a limit of 5 on one (username, IP): exactly 5 are let through."""
    username, ip = _name(), f"10.1.{uuid.uuid4().int % 250}.7"
    limits = mdb.LoginLimits(per_user_ip=5, per_ip=50, per_user=50, window_s=300)
    start = threading.Barrier(20)
    with Database(pg_settings, maxconn=20) as db:

        def attempt(_: int) -> int | None:
            start.wait()
            return mdb.begin_login_attempt(db, username=username, ip=ip, limits=limits)

        with ThreadPoolExecutor(20) as pool:
            ids = list(pool.map(attempt, range(20)))
    assert sum(i is not None for i in ids) == 5
    assert _failures(database, username, ip)[0] == 5


def test_login_attempt_lifecycle(database: Database) -> None:
    username, ip = _name(), f"10.2.{uuid.uuid4().int % 250}.9"
    limits = mdb.LoginLimits(per_user_ip=2, per_ip=10, per_user=10, window_s=300)
    first = mdb.begin_login_attempt(database, username=username, ip=ip, limits=limits)
    assert first is not None and _failures(database, username, ip)[0] == 1  # counted until it succeeds
    mdb.cancel_login_attempt(database, attempt_id=first)  # never checked: forgotten
    assert _failures(database, username, ip)[0] == 0
    ids = [mdb.begin_login_attempt(database, username=username, ip=ip, limits=limits) for _ in range(3)]
    assert ids[0] is not None and ids[1] is not None and ids[2] is None
    assert _failures(database, username, ip)[0] == 2  # a refused attempt is not recorded
    mdb.mark_login_succeeded(database, attempt_id=ids[1])
    assert _failures(database, username, ip) == (0, 1, 0)  # the other failure still counts for the IP
    # per IP and per username limits
    other = _name()
    ip_limits = mdb.LoginLimits(per_user_ip=10, per_ip=1, per_user=10, window_s=300)
    assert mdb.begin_login_attempt(database, username=other, ip=ip, limits=ip_limits) is None
    user_limits = mdb.LoginLimits(per_user_ip=10, per_ip=10, per_user=1, window_s=300)
    assert mdb.begin_login_attempt(database, username=other, ip="192.0.2.1", limits=user_limits) is not None
    assert mdb.begin_login_attempt(database, username=other, ip="192.0.2.2", limits=user_limits) is None


def test_registration_attempts_are_limited_per_ip(database: Database) -> None:
    ip = f"10.3.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
    assert [mdb.begin_registration_attempt(database, ip=ip, limit=2, window_s=60) for _ in range(3)] == [
        True,
        True,
        False,
    ]
    assert mdb.begin_registration_attempt(database, ip=ip + "0", limit=2, window_s=60)


# ------------------------------------------------------------------------------------------------
# Sessions, invites, account edits
# ------------------------------------------------------------------------------------------------


def test_end_sessions_and_new_passwords_bump_the_session_generation(database: Database) -> None:
    user = _new_user(database)
    assert user.session_generation == 0
    assert mdb.end_sessions(database, user_id=user.id) == 1
    mdb.set_password(database, user_id=user.id, password="Brand-new-Pw-99")
    again = mdb.get_user_by_id(database, user_id=user.id)
    assert again is not None and again.session_generation == 2
    with pytest.raises(NotFoundError):
        mdb.end_sessions(database, user_id=-1)


def test_invites_are_single_use_and_expire(database: Database) -> None:
    invite = mdb.create_invite(database, created_by=None)
    assert invite.expires_at > datetime.now(UTC) + timedelta(days=6)
    user = _new_user(database, invite_code=invite.code)
    with pytest.raises(InvalidInputError, match="invite"):
        _new_user(database, invite_code=invite.code)
    expired = mdb.create_invite(database, created_by=user.id, lifetime=timedelta(seconds=-1))
    name = _name()
    with pytest.raises(InvalidInputError, match="invite"):
        _new_user(database, username=name, invite_code=expired.code)
    assert mdb.get_user_by_username(database, username=name) is None
    with database.cursor() as cur:
        cur.execute("SELECT used_by FROM invites WHERE code_hash = %s", (hash_token(invite.code),))
        assert cur.fetchone() == {"used_by": user.id}


def test_update_account_changes_all_or_nothing(database: Database, pg_settings: Settings) -> None:
    user = _new_user(database)
    assert mdb.update_account(database, user_id=user.id, roles=["admin"], monthly_limit=9, disabled=True) == 9
    summary = next(u for u in mdb.list_users(database) if u.id == user.id)
    assert (summary.roles, summary.monthly_limit, summary.disabled) == (("admin",), 9, True)
    default = pg_settings.serving.default_monthly_quota
    assert (
        mdb.update_account(database, user_id=user.id, roles=[], monthly_limit=None, disabled=False) == default
    )
    with pytest.raises(InvalidInputError):
        mdb.update_account(database, user_id=user.id, roles=["root"], monthly_limit=1, disabled=True)
    with pytest.raises(InvalidInputError):
        mdb.update_account(database, user_id=user.id, roles=["admin"], monthly_limit=-1, disabled=True)
    with pytest.raises(NotFoundError):
        mdb.update_account(database, user_id=-1, roles=["admin"], monthly_limit=1, disabled=True)
    summary = next(u for u in mdb.list_users(database) if u.id == user.id)
    assert (summary.roles, summary.quota_is_default, summary.disabled) == ((), True, False)


# ------------------------------------------------------------------------------------------------
# Forecast track record
# ------------------------------------------------------------------------------------------------


def test_forecasts_upsert_fill_and_list(database: Database) -> None:
    pair = _name("pair")
    base = datetime(2030, 3, 1, tzinfo=UTC)
    for i in range(5):
        mdb.record_forecast(
            database,
            pair=pair.upper(),
            model_version="7",
            target_time=base + timedelta(hours=i),
            predicted=100.0 + i,
            last_close=99.0 + i,
        )
    again = mdb.record_forecast(
        database, pair=pair, model_version="7", target_time=base, predicted=123.0, last_close=99.0
    )
    assert again.predicted == 123.0 and again.pair == pair
    mdb.record_forecast(
        database, pair=pair, model_version="8", target_time=base, predicted=101.5, last_close=99.0
    )

    rows = mdb.list_forecasts(database, pair=pair, limit=100)
    assert len(rows) == 6  # the upsert did not duplicate
    assert [r.target_time for r in rows] == sorted((r.target_time for r in rows), reverse=True)
    assert len(mdb.list_forecasts(database, pair=pair, limit=2)) == 2
    assert {r.model_version for r in mdb.list_forecasts(database, pair=pair, model_version="8")} == {"8"}

    candles = [(base.replace(tzinfo=None), 110.0), (base + timedelta(hours=1), float("nan"))]
    assert mdb.fill_actuals(database, pair=pair, candles=candles) == 2  # both versions at `base`
    assert mdb.fill_actuals(database, pair=pair, candles=[(base, 999.0)]) == 0  # known actuals are kept
    actuals = {(r.model_version, r.target_time): r.actual for r in mdb.list_forecasts(database, pair=pair)}
    assert actuals[("7", base)] == 110.0 and actuals[("8", base)] == 110.0
    assert actuals[("7", base + timedelta(hours=1))] is None
    assert (
        mdb.record_forecast(
            database, pair=pair, model_version="7", target_time=base, predicted=1.0, last_close=1.0
        ).actual
        == 110.0
    )  # re-recording keeps the observed value
    assert mdb.fill_actuals(database, pair=pair, candles=[]) == 0
    with pytest.raises(InvalidInputError):
        mdb.record_forecast(
            database, pair=pair, model_version="7", target_time=base, predicted=float("inf"), last_close=1.0
        )


def test_fill_actuals_accepts_pandas_timestamps(database: Database) -> None:
    pd = pytest.importorskip("pandas")
    pair = _name("pair")
    target = datetime(2030, 4, 1, 5, tzinfo=UTC)
    mdb.record_forecast(
        database, pair=pair, model_version="1", target_time=target, predicted=1.0, last_close=1.0
    )
    frame = pd.DataFrame({"close": [2.5]}, index=pd.DatetimeIndex([pd.Timestamp(target)]))
    assert mdb.fill_actuals(database, pair=pair, candles=zip(frame.index, frame["close"], strict=True)) == 1


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, pg_settings: Settings) -> Callable[..., object]:
    """Invoke the real ``mur`` Typer app against the test database."""
    from mur.cli import app

    monkeypatch.setattr("mur.settings.get_settings", lambda: pg_settings)
    runner = CliRunner()

    def invoke(*args: str, stdin: str | None = None) -> object:
        return runner.invoke(app, list(args), input=stdin)

    return invoke


def test_cli_user_token_quota_flow(cli: Callable[..., object], database: Database) -> None:
    username = _name("cli")
    created = cli(
        "users",
        "create",
        username,
        "--email",
        "c@example.com",
        "--quota",
        "9",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert created.exit_code == 0, created.output
    assert created.stdout == ""  # nothing secret to print: the password came from stdin
    assert mdb.authenticate(database, username=username, password=PASSWORD) is not None

    generated = cli("users", "create", _name("gen"), "--admin")
    assert generated.exit_code == 0 and len(generated.stdout.strip().splitlines()) == 1  # just the password

    made = cli("tokens", "create", username, "--name", "ci")
    assert made.exit_code == 0
    token = made.stdout.strip()
    assert TOKEN_RE.match(token) and made.stdout == token + "\n"
    assert "shown only once" in made.stderr
    owner = mdb.lookup_token(database, token=token)
    assert owner is not None and owner.username == username

    listed = cli("tokens", "list", username)
    assert listed.exit_code == 0 and token[:12] in listed.stdout and token not in listed.stdout
    assert "never" in listed.stdout  # no expiry

    expiring = cli("tokens", "create", username, "--name", "quarter", "--expires-in", "90d")
    assert expiring.exit_code == 0, expiring.output
    assert "UTC, wall clock" in expiring.stderr and TOKEN_RE.match(expiring.stdout.strip())
    (quarter,) = [t for t in mdb.list_tokens(database, user_id=owner.user_id) if t.name == "quarter"]
    assert quarter.expires_at is not None and quarter.expires_at - quarter.created_at == timedelta(days=90)
    listed = cli("tokens", "list", username)
    assert quarter.expires_at.strftime("%Y-%m-%d %H:%M") in listed.stdout
    _expire(database.settings, quarter.id)
    listed = cli("tokens", "list", username)
    assert re.search(rf"\b{quarter.id}\b.*quarter.*expired", listed.stdout), listed.stdout
    assert str(quarter.id) not in cli("tokens", "list", username, "--active").stdout.split()
    bad = cli("tokens", "create", username, "--expires-in", "soon")
    assert bad.exit_code != 0 and isinstance(bad.exception, InvalidInputError)  # main() prints it
    assert "lifetime" in str(bad.exception)
    assert cli("tokens", "revoke", username, str(owner.token_id)).exit_code == 0
    assert mdb.lookup_token(database, token=token) is None

    assert cli("quota", "set", username, "25").exit_code == 0
    shown = cli("quota", "show", username)
    assert shown.stdout.strip() == "0/25" and "(wall clock)" in shown.stderr
    assert cli("users", "disable", username).exit_code == 0
    assert mdb.require_user(database, username=username).disabled
    assert cli("users", "enable", username).exit_code == 0
    listing = cli("users", "list")
    assert listing.exit_code == 0 and username in listing.stdout

    migrated = cli("db", "migrate")
    assert migrated.exit_code == 0 and "0 pending" in migrated.stdout


def test_cli_errors_are_one_line(pg_settings: Settings) -> None:
    env = {
        **os.environ,
        "MUR_PG_DATABASE": pg_settings.db.pg_database,
        "MUR_PG_HOST": pg_settings.db.pg_host,
        "MUR_PG_PORT": str(pg_settings.db.pg_port),
    }

    def mur(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mur.cli", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            cwd=PROJECT_ROOT,
        )

    unknown = mur("tokens", "create", _name("ghost"))
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert re.fullmatch(r"error: unknown user '.+'\n", unknown.stderr)

    weak = mur("users", "create", _name("weak"), "--password-stdin", stdin="short\n")
    assert weak.returncode == 1 and weak.stderr.startswith("error: password must be at least 10")
    assert weak.stderr.count("\n") == 1

    username = _name("dup")
    assert mur("users", "create", username, "--password-stdin", stdin=PASSWORD + "\n").returncode == 0
    taken = mur("users", "create", username.upper(), "--password-stdin", stdin=PASSWORD + "\n")
    assert taken.returncode == 1 and "already taken" in taken.stderr and taken.stderr.count("\n") == 1

    token = mur("tokens", "create", username)
    assert token.returncode == 0 and TOKEN_RE.match(token.stdout.strip()) and token.stdout.count("\n") == 1
