"""Schema migrations: the ordered ``sql/NNNN_name.sql`` files, applied once each and verified by checksum.

Migrations run on a direct connection (not the pool), serialised between processes by a PostgreSQL advisory
lock; each file is applied in its own transaction together with its ``schema_migrations`` row.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path

from psycopg import errors, sql

from mur.db.pool import Connection, connect, fetch_one
from mur.errors import MigrationError, first_line
from mur.settings import PROJECT_ROOT, Settings
from mur.waiting import wait_until

MIGRATIONS_DIR = PROJECT_ROOT / "sql"
MIGRATION_LOCK_KEY = 0x6D75725F6D6967  # "mur_mig": pg advisory lock held while migrating

_MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version      text PRIMARY KEY,
    name         text        NOT NULL,
    checksum     text        NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now(),
    execution_ms integer     NOT NULL
)
"""


@dataclass(frozen=True)
class Migration:
    """One ``sql/NNNN_name.sql`` file."""

    version: str
    name: str
    path: Path
    checksum: str


@dataclass(frozen=True)
class MigrationReport:
    """What :func:`migrate` found applied before and what it applied now (file names, in order)."""

    already_applied: list[str]
    applied_now: list[str]
    created_database: bool = False


@dataclass(frozen=True)
class MigrationStatus:
    """Applied and pending migrations (file names, in order)."""

    applied: list[str]
    pending: list[str]


def _checksum(path: Path) -> str:
    """SHA-256 of the file with line endings normalised (a CRLF checkout is not an edit)."""
    return hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()


def discover_migrations(directory: Path | None = None) -> list[Migration]:
    """The migration files in ``directory`` (default ``sql/``), ordered by their 4-digit version."""
    directory = directory or MIGRATIONS_DIR
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} does not exist")
    found: dict[str, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if not match:
            raise MigrationError(f"bad migration file name {path.name!r} (expected NNNN_snake_case.sql)")
        version = match.group(1)
        if version in found:
            raise MigrationError(
                f"two migrations share version {version}: {found[version].name}, {path.name}"
            )
        found[version] = Migration(version, path.stem, path, _checksum(path))
    return [found[v] for v in sorted(found)]


def _database_exists(settings: Settings, name: str | None = None) -> bool:
    with connect(settings, database="postgres", autocommit=True) as conn:
        row = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (name or settings.db.pg_database,)
        ).fetchone()
        return row is not None


def ensure_database(settings: Settings, name: str | None = None) -> bool:
    """Create the database ``name`` (default: the app's) if it does not exist; True if it was created."""
    name = name or settings.db.pg_database
    if _database_exists(settings, name):
        return False
    with connect(settings, database="postgres", autocommit=True) as conn:  # CREATE DATABASE: no transaction
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except (errors.DuplicateDatabase, errors.UniqueViolation):
            return False  # created a moment ago by someone else (or pg_database's unique index says so)
        return True


def _applied(conn: Connection) -> dict[str, tuple[str, str]]:
    if not fetch_one(conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL"))[0]:
        return {}
    rows = conn.execute("SELECT version, name, checksum FROM schema_migrations ORDER BY version").fetchall()
    return {version: (name, checksum) for version, name, checksum in rows}


def _verify_applied(applied: dict[str, tuple[str, str]], files: list[Migration]) -> None:
    """Refuse to go on if an applied migration was edited or deleted."""
    by_version = {m.version: m for m in files}
    for version, (name, checksum) in applied.items():
        migration = by_version.get(version)
        if migration is None:
            raise MigrationError(f"applied migration {name}.sql is missing from the migrations directory")
        if migration.checksum != checksum:
            raise MigrationError(
                f"migration {migration.path.name} was edited after it was applied (checksum changed); "
                "never edit an applied migration: restore it and add a new numbered migration instead"
            )


def migration_status(settings: Settings, *, migrations_dir: Path | None = None) -> MigrationStatus:
    """Applied and pending migrations, verifying applied checksums (creates and changes nothing)."""
    files = discover_migrations(migrations_dir)
    if not _database_exists(settings):
        return MigrationStatus(applied=[], pending=[m.name for m in files])
    with connect(settings, autocommit=True) as conn:
        applied = _applied(conn)
    _verify_applied(applied, files)
    return MigrationStatus(
        applied=[applied[v][0] for v in sorted(applied)],
        pending=[m.name for m in files if m.version not in applied],
    )


def _apply(conn: Connection, migration: Migration) -> None:
    """Run one file and record it, in one transaction; a failure rolls both back."""
    started = time.monotonic()
    try:
        with conn.transaction():
            # the file as it is (no parameters: several statements, `%` taken literally)
            conn.execute(migration.path.read_text(encoding="utf-8"))
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum, execution_ms) VALUES (%s, %s, %s, %s)",
                (
                    migration.version,
                    migration.name,
                    migration.checksum,
                    round((time.monotonic() - started) * 1000),
                ),
            )
    except errors.Error as exc:
        raise MigrationError(
            f"migration {migration.path.name} failed and was rolled back: {first_line(exc)}"
        ) from exc


ROLE_ALTER_ATTEMPTS = 8


def ensure_app_role(conn: Connection, settings: Settings) -> None:
    """The application's role (``pg_app_user``): LOGIN, no superuser, no CREATEDB/CREATEROLE, and on the app
    database only CONNECT, USAGE of the schema and SELECT/INSERT/UPDATE/DELETE on its tables (and sequences),
    now and for tables later migrations create. It owns nothing and cannot change the schema, read other
    databases or the migration log's history beyond SELECT. Idempotent; the password follows the settings."""
    role = settings.db.pg_app_user
    if not role:
        return
    ident = sql.Identifier(role)
    password = sql.Literal(settings.db.pg_app_password) if settings.db.pg_app_password else sql.SQL("NULL")
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None
    if not exists:  # (a migrator of another database may create it a moment before)
        with contextlib.suppress(errors.DuplicateObject, errors.UniqueViolation):
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(ident, password))
    statements = [
        sql.SQL(statement).format(db=sql.Identifier(settings.db.pg_database), role=ident, password=password)
        for statement in (
            "ALTER ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {password}",
            "GRANT CONNECT ON DATABASE {db} TO {role}",
            "GRANT USAGE ON SCHEMA public TO {role}",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
            "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {role}",
            "REVOKE INSERT, UPDATE, DELETE ON schema_migrations FROM {role}",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {role}",
        )
    ]
    for statement in statements:
        for attempt in range(ROLE_ALTER_ATTEMPTS):
            try:
                conn.execute(statement)
                break
            except errors.InternalError as exc:
                # The role is cluster-wide and the grants are catalogue rows: migrators running at once
                # (parallel test workers, two stacks on one server) change the same row, and PostgreSQL
                # answers "tuple concurrently updated". Every statement is idempotent: retry it.
                if "concurrently updated" not in str(exc) or attempt == ROLE_ALTER_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))


def migrate(
    settings: Settings, *, migrations_dir: Path | None = None, lock_timeout_s: float = 120.0
) -> MigrationReport:
    """Create the database if needed and apply pending migrations in order, each in its own transaction.

    Idempotent; concurrent migrators serialise on a PostgreSQL advisory lock; an applied file whose
    checksum changed stops everything with :class:`~mur.errors.MigrationError`.
    """
    files = discover_migrations(migrations_dir)
    created = ensure_database(settings)
    with connect(settings, autocommit=True) as conn:
        # a session lock: it survives the transactions below and goes when the connection closes
        wait_until(
            lambda: fetch_one(conn.execute("SELECT pg_try_advisory_lock(%s)", (MIGRATION_LOCK_KEY,)))[0],
            what="the migration lock (another migration holds it; try later)",
            timeout_s=lock_timeout_s,
            interval_s=0.1,
            error=MigrationError,
        )
        conn.execute(_BOOTSTRAP)
        applied = _applied(conn)
        _verify_applied(applied, files)
        applied_now: list[str] = []
        for migration in files:
            if migration.version not in applied:
                _apply(conn, migration)
                applied_now.append(migration.name)
        ensure_app_role(conn, settings)
    return MigrationReport(
        already_applied=[applied[v][0] for v in sorted(applied)],
        applied_now=applied_now,
        created_database=created,
    )
