"""The one data-access module: schema migrations, connection pool, users, roles, API tokens, quotas,
login attempts and the forecast track record. Used by the CLI, the Serve API and the Dash dashboard.

Every query is a parameterized literal (identifiers go through :mod:`psycopg2.sql`). Public functions take a
:class:`Database` first and keyword-only arguments after it; each call is one transaction. Nothing connects
until the first query.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras
import psycopg2.pool
from psycopg2 import sql

from mur.errors import ConflictError, DatabaseError, InvalidInputError, MigrationError, NotFoundError
from mur.security import (
    check_password_strength,
    dummy_password_hash,
    generate_api_token,
    hash_password,
    hash_token,
    looks_like_api_token,
    needs_rehash,
    token_prefix,
    verify_password,
)
from mur.settings import PROJECT_ROOT, Settings

Connection = psycopg2.extensions.connection

MIGRATIONS_DIR = PROJECT_ROOT / "sql"
MIGRATION_LOCK_KEY = 0x6D75725F6D6967  # "mur_mig": pg advisory lock held while migrating
ROLES = ("admin", "member")
MAX_USERNAME_LENGTH = 64
MAX_EMAIL_LENGTH = 254
MAX_QUOTA = 2**31 - 1
TOKEN_TOUCH_INTERVAL_S = 60  # last_used_at is written at most once a minute per token

_MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


# ================================================================================================
# Connections
# ================================================================================================


def _describe(settings: Settings, database: str | None = None) -> str:
    """Where we connect, without the password (for error messages)."""
    return f"{settings.pg_user}@{settings.pg_host}:{settings.pg_port}/{database or settings.pg_database}"


def _connect_error(settings: Settings, database: str | None, exc: Exception) -> DatabaseError:
    """A one-line :class:`DatabaseError` for a failed connection, with a hint when the database is missing."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    hint = "; run `mur db migrate` to create it" if "does not exist" in reason else ""
    return DatabaseError(f"cannot connect to PostgreSQL {_describe(settings, database)}: {reason}{hint}")


def connect(settings: Settings, *, database: str | None = None, autocommit: bool = False) -> Connection:
    """One direct (unpooled) connection in UTC, for migrations and admin work."""
    try:
        conn = psycopg2.connect(
            settings.pg_dsn(database), connect_timeout=10, application_name="mur", options="-c TimeZone=UTC"
        )
    except psycopg2.OperationalError as exc:
        raise _connect_error(settings, database, exc) from exc
    conn.autocommit = autocommit
    return conn


class Database:
    """A lazily created, thread-safe psycopg2 connection pool plus the settings queries need.

    ``maxconn`` bounds the connections this process opens; callers beyond it wait (up to ``pool_timeout_s``)
    instead of failing, which plain ``ThreadedConnectionPool`` would do.
    """

    def __init__(
        self, settings: Settings, *, minconn: int = 1, maxconn: int = 10, pool_timeout_s: float = 30.0
    ) -> None:
        if not 1 <= minconn <= maxconn:
            raise ValueError("need 1 <= minconn <= maxconn")
        self.settings = settings
        self._minconn = minconn
        self._maxconn = maxconn
        self._pool_timeout_s = pool_timeout_s
        self._pool: psycopg2.pool.ThreadedConnectionPool | None = None
        self._pool_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(maxconn)

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _get_pool(self) -> psycopg2.pool.ThreadedConnectionPool:
        with self._pool_lock:
            if self._pool is None:
                try:
                    self._pool = psycopg2.pool.ThreadedConnectionPool(
                        self._minconn,
                        self._maxconn,
                        self.settings.pg_dsn(),
                        connect_timeout=10,
                        application_name="mur",
                        options="-c TimeZone=UTC",
                    )
                except psycopg2.OperationalError as exc:
                    raise _connect_error(self.settings, None, exc) from exc
            return self._pool

    def _checkout(self, pool: psycopg2.pool.ThreadedConnectionPool) -> Connection:
        try:
            conn = pool.getconn()
            if conn.closed:  # dropped by the server since it was pooled: replace it once
                pool.putconn(conn, close=True)
                conn = pool.getconn()
        except psycopg2.OperationalError as exc:
            raise _connect_error(self.settings, None, exc) from exc
        return conn

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A pooled connection for one transaction: commit on success, roll back on error, then return it."""
        pool = self._get_pool()
        if not self._slots.acquire(timeout=self._pool_timeout_s):
            raise DatabaseError(f"no free database connection after {self._pool_timeout_s:g}s")
        try:
            conn = self._checkout(pool)
            discard = False
            try:
                yield conn
                conn.commit()
            except BaseException as exc:
                discard = isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError)
                if not conn.closed:
                    try:
                        conn.rollback()
                    except psycopg2.Error:
                        discard = True
                if isinstance(exc, psycopg2.errors.UndefinedTable):
                    raise DatabaseError(
                        f"the database schema is missing or outdated ({str(exc).splitlines()[0]}); "
                        "run `mur db migrate`"
                    ) from exc
                if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
                    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    raise DatabaseError(f"PostgreSQL {_describe(self.settings)} failed: {reason}") from exc
                raise
            finally:
                pool.putconn(conn, close=discard or bool(conn.closed))
        finally:
            self._slots.release()

    @contextmanager
    def cursor(self) -> Iterator[psycopg2.extras.RealDictCursor]:
        """A dict-row cursor inside :meth:`connection` (one transaction)."""
        with self.connection() as conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            yield cur

    def ping(self) -> bool:
        """True if a trivial query succeeds (for health checks)."""
        try:
            with self.cursor() as cur:
                cur.execute("SELECT 1 AS ok")
                return cur.fetchone()["ok"] == 1
        except (DatabaseError, psycopg2.Error):
            return False

    def close(self) -> None:
        """Close every pooled connection (a later query opens a new pool)."""
        with self._pool_lock:
            if self._pool is not None and not self._pool.closed:
                self._pool.closeall()
            self._pool = None


# ================================================================================================
# Migrations
# ================================================================================================


@dataclass(frozen=True)
class Migration:
    """One ``sql/NNNN_name.sql`` file."""

    version: str
    name: str
    path: Path
    checksum: str

    def read(self) -> str:
        return self.path.read_text(encoding="utf-8")


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


def ensure_database(settings: Settings) -> bool:
    """Create the app database if it does not exist; True if it was created."""
    if _database_exists(settings):
        return False
    conn = connect(settings, database="postgres", autocommit=True)
    try:
        with conn.cursor() as cur:
            try:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(settings.pg_database)))
            except psycopg2.errors.DuplicateDatabase:
                return False  # another migrator created it a moment ago
            except psycopg2.errors.UniqueViolation:
                return False  # same race, reported through pg_database's unique index
            return True
    finally:
        conn.close()


_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version      text PRIMARY KEY,
    name         text        NOT NULL,
    checksum     text        NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now(),
    execution_ms integer     NOT NULL
)
"""


def _applied(cur: psycopg2.extensions.cursor) -> dict[str, tuple[str, str]]:
    cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not cur.fetchone()[0]:
        return {}
    cur.execute("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
    return {version: (name, checksum) for version, name, checksum in cur.fetchall()}


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


def _database_exists(settings: Settings) -> bool:
    conn = connect(settings, database="postgres", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (settings.pg_database,))
            return cur.fetchone() is not None
    finally:
        conn.close()


def migration_status(settings: Settings, *, migrations_dir: Path | None = None) -> MigrationStatus:
    """Applied and pending migrations, verifying applied checksums (creates and changes nothing)."""
    files = discover_migrations(migrations_dir)
    if not _database_exists(settings):
        return MigrationStatus(applied=[], pending=[m.name for m in files])
    conn = connect(settings)
    try:
        with conn.cursor() as cur:
            applied = _applied(cur)
        conn.rollback()
    finally:
        conn.close()
    _verify_applied(applied, files)
    return MigrationStatus(
        applied=[applied[v][0] for v in sorted(applied)],
        pending=[m.name for m in files if m.version not in applied],
    )


def _acquire_migration_lock(conn: Connection, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with conn.cursor() as cur:
        while True:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
            if cur.fetchone()[0]:
                return
            if time.monotonic() >= deadline:
                raise MigrationError(
                    f"another migration has held the lock for over {timeout_s:g}s; try later"
                )
            time.sleep(0.1)


def migrate(
    settings: Settings, *, migrations_dir: Path | None = None, lock_timeout_s: float = 120.0
) -> MigrationReport:
    """Create the database if needed and apply pending migrations in order, each in its own transaction.

    Idempotent; concurrent migrators serialise on a PostgreSQL advisory lock; an applied file whose
    checksum changed stops everything with :class:`~mur.errors.MigrationError`.
    """
    files = discover_migrations(migrations_dir)
    created = ensure_database(settings)
    conn = connect(settings, autocommit=True)
    try:
        _acquire_migration_lock(conn, lock_timeout_s)  # session lock: survives the commits below
        try:
            conn.autocommit = False
            with conn.cursor() as cur:
                cur.execute(_BOOTSTRAP)
                conn.commit()
                applied = _applied(cur)
                conn.commit()
            _verify_applied(applied, files)
            applied_now: list[str] = []
            for migration in files:
                if migration.version in applied:
                    continue
                started = time.monotonic()
                try:
                    with conn.cursor() as cur:
                        cur.execute(migration.read())
                        cur.execute(
                            "INSERT INTO schema_migrations (version, name, checksum, execution_ms) "
                            "VALUES (%s, %s, %s, %s)",
                            (
                                migration.version,
                                migration.name,
                                migration.checksum,
                                round((time.monotonic() - started) * 1000),
                            ),
                        )
                    conn.commit()
                except psycopg2.Error as exc:
                    conn.rollback()
                    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    raise MigrationError(
                        f"migration {migration.path.name} failed and was rolled back: {detail}"
                    ) from exc
                applied_now.append(migration.name)
        finally:
            if not conn.closed:
                try:
                    conn.rollback()
                    conn.autocommit = True
                    with conn.cursor() as cur:
                        cur.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
                except psycopg2.Error:
                    pass  # closing the session below releases the lock anyway
    finally:
        conn.close()
    return MigrationReport(
        already_applied=[applied[v][0] for v in sorted(applied)],
        applied_now=applied_now,
        created_database=created,
    )


# ================================================================================================
# Rows
# ================================================================================================


@dataclass(frozen=True)
class User:
    """A user account (never carries the password hash)."""

    id: int
    username: str
    email: str | None
    created_at: datetime
    disabled: bool
    roles: tuple[str, ...]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


@dataclass(frozen=True)
class UserSummary(User):
    """A user with their effective quota and this month's usage (for ``mur users list`` and admin pages)."""

    monthly_limit: int = 0
    quota_is_default: bool = True
    used_this_month: int = 0


@dataclass(frozen=True)
class Token:
    """An API token's metadata; the plaintext exists only in :func:`create_token`'s return value."""

    id: int
    user_id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class TokenOwner:
    """Who an API request belongs to, as found by :func:`lookup_token`."""

    token_id: int
    user_id: int
    username: str
    roles: tuple[str, ...]
    disabled: bool = False

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


@dataclass(frozen=True)
class QuotaResult:
    """Outcome of :func:`consume_quota`: whether the call is allowed and the month's counters."""

    allowed: bool
    used: int
    limit: int
    reset_at: datetime

    @property
    def remaining(self) -> int:
        return max(self.limit - self.used, 0)


@dataclass(frozen=True)
class Forecast:
    """One forecast of ``pair``'s close at ``target_time`` by ``model_version`` (``actual`` once known)."""

    id: int
    pair: str
    model_version: str
    made_at: datetime
    target_time: datetime
    predicted: float
    last_close: float
    actual: float | None = None


def _user(row: dict[str, Any]) -> User:
    return User(
        id=row["id"],
        username=row["username"],
        email=row["email"],
        created_at=row["created_at"],
        disabled=row["disabled"],
        roles=tuple(row["roles"] or ()),
    )


def _token(row: dict[str, Any]) -> Token:
    return Token(
        id=row["id"],
        user_id=row["user_id"],
        name=row["name"],
        prefix=row["prefix"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


def _forecast(row: dict[str, Any]) -> Forecast:
    return Forecast(**{name: row[name] for name in Forecast.__dataclass_fields__})


# ================================================================================================
# Validation
# ================================================================================================


def validate_username(username: str) -> str:
    """Return ``username`` unchanged if acceptable (1-64 printable characters, no surrounding spaces)."""
    if not isinstance(username, str) or not username or username.strip() != username:
        raise InvalidInputError("username must be non-empty, without leading or trailing spaces")
    if len(username) > MAX_USERNAME_LENGTH:
        raise InvalidInputError(f"username must be at most {MAX_USERNAME_LENGTH} characters")
    if _CONTROL_CHARS.search(username):
        raise InvalidInputError("username must not contain control characters")
    return username


def validate_email(email: str | None) -> str | None:
    """Return ``email`` (or None) if it looks like an address; deliverability is not checked."""
    if email is None or email == "":
        return None
    if len(email) > MAX_EMAIL_LENGTH or "@" not in email.strip("@") or _CONTROL_CHARS.search(email):
        raise InvalidInputError(f"invalid email address {email!r}")
    return email


def _validate_roles(roles: Iterable[str]) -> tuple[str, ...]:
    wanted = tuple(sorted(set(roles)))
    unknown = [r for r in wanted if r not in ROLES]
    if unknown:
        raise InvalidInputError(f"unknown role(s) {', '.join(unknown)} (known: {', '.join(ROLES)})")
    return wanted


def _validate_quota(monthly_limit: int) -> int:
    if isinstance(monthly_limit, bool) or not isinstance(monthly_limit, int):
        raise InvalidInputError("monthly quota must be an integer")
    if not 0 <= monthly_limit <= MAX_QUOTA:
        raise InvalidInputError(f"monthly quota must be between 0 and {MAX_QUOTA} (got {monthly_limit})")
    return monthly_limit


# ================================================================================================
# Users and roles
# ================================================================================================

_SELECT_USER_BY_ID = """
SELECT u.id, u.username, u.email, u.created_at, u.disabled,
       ARRAY(SELECT r.role FROM user_roles r WHERE r.user_id = u.id ORDER BY r.role) AS roles
FROM users u WHERE u.id = %s
"""

_SELECT_USER_BY_NAME = """
SELECT u.id, u.username, u.email, u.created_at, u.disabled, u.password_hash,
       ARRAY(SELECT r.role FROM user_roles r WHERE r.user_id = u.id ORDER BY r.role) AS roles
FROM users u WHERE lower(u.username) = lower(%s)
"""


def _replace_roles(cur: psycopg2.extensions.cursor, user_id: int, roles: tuple[str, ...]) -> None:
    cur.execute("DELETE FROM user_roles WHERE user_id = %s", (user_id,))
    cur.execute(
        "INSERT INTO user_roles (user_id, role) SELECT %s, name FROM roles WHERE name = ANY(%s)",
        (user_id, list(roles)),
    )


def create_user(
    db: Database,
    *,
    username: str,
    email: str | None = None,
    password: str,
    roles: Sequence[str] = ("member",),
    monthly_quota: int | None = None,
) -> User:
    """Create a user with an argon2id password hash, roles and optionally their own monthly quota.

    Raises :class:`~mur.errors.ConflictError` if the username is taken (case-insensitively),
    :class:`~mur.errors.WeakPasswordError` / :class:`~mur.errors.InvalidInputError` for bad input.
    """
    validate_username(username)
    email = validate_email(email)
    wanted_roles = _validate_roles(roles)
    if monthly_quota is not None:
        _validate_quota(monthly_quota)
    check_password_strength(password, username=username)
    password_hash = hash_password(password)  # slow: done before taking a connection
    with db.cursor() as cur:
        try:
            cur.execute(
                "INSERT INTO users (username, email, password_hash) VALUES (%s, %s, %s) RETURNING id",
                (username, email, password_hash),
            )
        except psycopg2.errors.UniqueViolation as exc:
            raise ConflictError(f"username {username!r} is already taken") from exc
        user_id = cur.fetchone()["id"]
        _replace_roles(cur, user_id, wanted_roles)
        if monthly_quota is not None:
            cur.execute(
                "INSERT INTO quotas (user_id, monthly_limit) VALUES (%s, %s)", (user_id, monthly_quota)
            )
        cur.execute(_SELECT_USER_BY_ID, (user_id,))
        return _user(cur.fetchone())


def get_user_by_id(db: Database, *, user_id: int) -> User | None:
    """The user with this id, or None."""
    with db.cursor() as cur:
        cur.execute(_SELECT_USER_BY_ID, (user_id,))
        row = cur.fetchone()
    return _user(row) if row else None


def get_user_by_username(db: Database, *, username: str) -> User | None:
    """The user with this username (case-insensitive), or None."""
    with db.cursor() as cur:
        cur.execute(_SELECT_USER_BY_NAME, (username,))
        row = cur.fetchone()
    return _user(row) if row else None


def require_user(db: Database, *, username: str) -> User:
    """Like :func:`get_user_by_username` but raises :class:`~mur.errors.NotFoundError`."""
    user = get_user_by_username(db, username=username)
    if user is None:
        raise NotFoundError(f"unknown user {username!r}")
    return user


def authenticate(db: Database, *, username: str, password: str) -> User | None:
    """The enabled user whose password matches, else None.

    An unknown username still costs one argon2 verification (against a dummy hash), so response time does
    not reveal which usernames exist. A hash made with outdated parameters is upgraded on success.
    """
    with db.cursor() as cur:
        cur.execute(_SELECT_USER_BY_NAME, (username,))
        row = cur.fetchone()
    if row is None:
        verify_password(dummy_password_hash(), password)
        return None
    if not verify_password(row["password_hash"], password) or row["disabled"]:
        return None
    if needs_rehash(row["password_hash"]):
        with db.cursor() as cur:
            cur.execute(
                "UPDATE users SET password_hash = %s WHERE id = %s", (hash_password(password), row["id"])
            )
    return _user(row)


def set_password(db: Database, *, user_id: int, password: str) -> None:
    """Replace a user's password (strength-checked)."""
    user = get_user_by_id(db, user_id=user_id)
    if user is None:
        raise NotFoundError(f"unknown user id {user_id}")
    check_password_strength(password, username=user.username)
    with db.cursor() as cur:
        cur.execute("UPDATE users SET password_hash = %s WHERE id = %s", (hash_password(password), user_id))


def set_user_disabled(db: Database, *, user_id: int, disabled: bool = True) -> User:
    """Disable (or re-enable) a user: a disabled user cannot log in and their tokens stop working."""
    with db.cursor() as cur:
        cur.execute("UPDATE users SET disabled = %s WHERE id = %s", (disabled, user_id))
        if cur.rowcount == 0:
            raise NotFoundError(f"unknown user id {user_id}")
        cur.execute(_SELECT_USER_BY_ID, (user_id,))
        return _user(cur.fetchone())


def user_roles(db: Database, *, user_id: int) -> tuple[str, ...]:
    """The user's role names, sorted."""
    with db.cursor() as cur:
        cur.execute("SELECT role FROM user_roles WHERE user_id = %s ORDER BY role", (user_id,))
        return tuple(row["role"] for row in cur.fetchall())


def set_user_roles(db: Database, *, user_id: int, roles: Iterable[str]) -> tuple[str, ...]:
    """Replace the user's roles; returns them sorted."""
    wanted = _validate_roles(roles)
    with db.cursor() as cur:
        cur.execute("SELECT 1 FROM users WHERE id = %s FOR UPDATE", (user_id,))
        if cur.fetchone() is None:
            raise NotFoundError(f"unknown user id {user_id}")
        _replace_roles(cur, user_id, wanted)
    return wanted


def add_role(db: Database, *, user_id: int, role: str) -> tuple[str, ...]:
    """Grant ``role`` (idempotent); returns the user's roles."""
    _validate_roles([role])
    with db.cursor() as cur:
        try:
            cur.execute(
                "INSERT INTO user_roles (user_id, role) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (user_id, role),
            )
        except psycopg2.errors.ForeignKeyViolation as exc:
            raise NotFoundError(f"unknown user id {user_id}") from exc
    return user_roles(db, user_id=user_id)


def remove_role(db: Database, *, user_id: int, role: str) -> tuple[str, ...]:
    """Revoke ``role`` (idempotent); returns the user's remaining roles."""
    _validate_roles([role])
    with db.cursor() as cur:
        cur.execute("DELETE FROM user_roles WHERE user_id = %s AND role = %s", (user_id, role))
    return user_roles(db, user_id=user_id)


def list_users(db: Database, *, at: datetime | None = None) -> list[UserSummary]:
    """Every user with roles, effective monthly quota and usage in the month containing ``at`` (now)."""
    default = db.settings.default_monthly_quota
    with db.cursor() as cur:
        cur.execute(
            """
            SELECT u.id, u.username, u.email, u.created_at, u.disabled,
                   ARRAY(SELECT r.role FROM user_roles r WHERE r.user_id = u.id ORDER BY r.role) AS roles,
                   q.monthly_limit, COALESCE(a.count, 0) AS used
            FROM users u
            LEFT JOIN quotas q ON q.user_id = u.id
            LEFT JOIN api_usage a ON a.user_id = u.id AND a.month = %s
            ORDER BY lower(u.username)
            """,
            (month_start(at),),
        )
        rows = cur.fetchall()
    return [
        UserSummary(
            **vars(_user(row)),
            monthly_limit=default if row["monthly_limit"] is None else row["monthly_limit"],
            quota_is_default=row["monthly_limit"] is None,
            used_this_month=row["used"],
        )
        for row in rows
    ]


# ================================================================================================
# API tokens
# ================================================================================================


def _validate_token_name(name: str) -> str:
    name = (name or "").strip()
    if not 1 <= len(name) <= 64 or _CONTROL_CHARS.search(name):
        raise InvalidInputError("token name must be 1-64 printable characters")
    return name


def _insert_token(cur: psycopg2.extensions.cursor, user_id: int, name: str) -> tuple[str, Token]:
    token = generate_api_token()
    try:
        cur.execute(
            "INSERT INTO api_tokens (user_id, token_hash, prefix, name) VALUES (%s, %s, %s, %s) "
            "RETURNING id, user_id, name, prefix, created_at, last_used_at, revoked_at",
            (user_id, hash_token(token), token_prefix(token), name),
        )
    except psycopg2.errors.ForeignKeyViolation as exc:
        raise NotFoundError(f"unknown user id {user_id}") from exc
    return token, _token(cur.fetchone())


def create_token(db: Database, *, user_id: int, name: str = "default") -> tuple[str, Token]:
    """Create an API token; returns ``(plaintext, row)``. Only its SHA-256 is stored: show it once."""
    name = _validate_token_name(name)
    with db.cursor() as cur:
        return _insert_token(cur, user_id, name)


def list_tokens(db: Database, *, user_id: int, include_revoked: bool = True) -> list[Token]:
    """The user's tokens, oldest first."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT id, user_id, name, prefix, created_at, last_used_at, revoked_at FROM api_tokens "
            "WHERE user_id = %s AND (%s OR revoked_at IS NULL) ORDER BY created_at, id",
            (user_id, include_revoked),
        )
        return [_token(row) for row in cur.fetchall()]


def revoke_token(db: Database, *, user_id: int, token_id: int) -> Token:
    """Revoke one of the user's tokens (idempotent: the first revocation time is kept)."""
    with db.cursor() as cur:
        cur.execute(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, now()) WHERE id = %s AND user_id = %s "
            "RETURNING id, user_id, name, prefix, created_at, last_used_at, revoked_at",
            (token_id, user_id),
        )
        row = cur.fetchone()
    if row is None:
        raise NotFoundError(f"user has no token with id {token_id}")
    return _token(row)


def rotate_token(db: Database, *, user_id: int, token_id: int) -> tuple[str, Token]:
    """Revoke an active token and create its replacement (same name) in one transaction."""
    with db.cursor() as cur:
        cur.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE id = %s AND user_id = %s AND revoked_at IS NULL "
            "RETURNING name",
            (token_id, user_id),
        )
        row = cur.fetchone()
        if row is None:
            raise NotFoundError(f"user has no active token with id {token_id}")
        return _insert_token(cur, user_id, row["name"])


def ensure_managed_token(
    db: Database, *, user_id: int, name: str, derive: Callable[[int], str], max_generations: int = 1000
) -> tuple[str, Token]:
    """The user's active token named ``name`` whose plaintext is ``derive(n)``, created if needed.

    For tokens a server re-creates instead of storing (the dashboard's per-user Serve token, derived from
    its secret key): generation ``n`` is the lowest one not revoked, so revoking the token makes the next
    call derive a fresh one. Other active tokens with this name that match no generation (say, after the
    secret key changed) are revoked. Serialised per user by locking the user's row.
    """
    name = _validate_token_name(name)
    with db.cursor() as cur:
        cur.execute("SELECT 1 FROM users WHERE id = %s FOR UPDATE", (user_id,))
        if cur.fetchone() is None:
            raise NotFoundError(f"unknown user id {user_id}")
        cur.execute(
            "SELECT id, token_hash, revoked_at FROM api_tokens WHERE user_id = %s AND name = %s",
            (user_id, name),
        )
        rows = {row["token_hash"]: row for row in cur.fetchall()}
        for generation in range(min(len(rows), max_generations) + 1):
            token = derive(generation)
            if not looks_like_api_token(token):
                raise InvalidInputError("derive() must return a well-formed API token")
            row = rows.get(hash_token(token))
            if row is not None and row["revoked_at"] is not None:
                continue  # this generation was revoked: try the next one
            if row is None:
                cur.execute(
                    "INSERT INTO api_tokens (user_id, token_hash, prefix, name) VALUES (%s, %s, %s, %s) "
                    "RETURNING id",
                    (user_id, hash_token(token), token_prefix(token), name),
                )
                token_id = cur.fetchone()["id"]
            else:
                token_id = row["id"]
            cur.execute(
                "UPDATE api_tokens SET revoked_at = now() "
                "WHERE user_id = %s AND name = %s AND revoked_at IS NULL AND id <> %s",
                (user_id, name, token_id),
            )
            cur.execute(
                "SELECT id, user_id, name, prefix, created_at, last_used_at, revoked_at FROM api_tokens "
                "WHERE id = %s",
                (token_id,),
            )
            return token, _token(cur.fetchone())
    raise ConflictError(f"no free generation for token {name!r} of user {user_id} (all revoked)")


_LOOKUP_TOKEN = """
WITH hit AS (
    SELECT t.id AS token_id, t.user_id, u.username, u.disabled
    FROM api_tokens t JOIN users u ON u.id = t.user_id
    WHERE t.token_hash = %(token_hash)s AND t.revoked_at IS NULL AND NOT u.disabled
), touch AS (
    UPDATE api_tokens SET last_used_at = now()
    WHERE id = (SELECT token_id FROM hit)
      AND (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => %(touch_s)s))
)
SELECT hit.token_id, hit.user_id, hit.username, hit.disabled,
       ARRAY(SELECT r.role FROM user_roles r WHERE r.user_id = hit.user_id ORDER BY r.role) AS roles
FROM hit
"""


def lookup_token(db: Database, *, token: str) -> TokenOwner | None:
    """The owner of an active token of an enabled user, else None; one statement by SHA-256.

    ``last_used_at`` is refreshed in the same statement, at most once per minute per token, so busy
    tokens do not rewrite their row on every request.
    """
    if not isinstance(token, str) or not looks_like_api_token(token):
        return None
    with db.cursor() as cur:
        cur.execute(_LOOKUP_TOKEN, {"token_hash": hash_token(token), "touch_s": TOKEN_TOUCH_INTERVAL_S})
        row = cur.fetchone()
    if row is None:
        return None
    return TokenOwner(
        token_id=row["token_id"],
        user_id=row["user_id"],
        username=row["username"],
        roles=tuple(row["roles"] or ()),
        disabled=row["disabled"],
    )


# ================================================================================================
# Quotas
# ================================================================================================


def month_start(at: datetime | None = None) -> date:
    """First day of the UTC calendar month containing ``at`` (default: now); naive times are UTC."""
    at = at or datetime.now(UTC)
    if at.tzinfo is not None:
        at = at.astimezone(UTC)
    return date(at.year, at.month, 1)


def next_month_start(month: date) -> datetime:
    """The first instant (UTC) of the month after ``month``: when its quota resets."""
    if month.month == 12:
        return datetime(month.year + 1, 1, 1, tzinfo=UTC)
    return datetime(month.year, month.month + 1, 1, tzinfo=UTC)


def set_quota(db: Database, *, user_id: int, monthly_limit: int | None) -> int:
    """Give the user their own monthly limit (None: back to the default); returns the effective limit."""
    with db.cursor() as cur:
        if monthly_limit is None:
            cur.execute("SELECT 1 FROM users WHERE id = %s", (user_id,))
            if cur.fetchone() is None:
                raise NotFoundError(f"unknown user id {user_id}")
            cur.execute("DELETE FROM quotas WHERE user_id = %s", (user_id,))
            return db.settings.default_monthly_quota
        _validate_quota(monthly_limit)
        try:
            cur.execute(
                "INSERT INTO quotas (user_id, monthly_limit) VALUES (%s, %s) ON CONFLICT (user_id) "
                "DO UPDATE SET monthly_limit = EXCLUDED.monthly_limit, updated_at = now()",
                (user_id, monthly_limit),
            )
        except psycopg2.errors.ForeignKeyViolation as exc:
            raise NotFoundError(f"unknown user id {user_id}") from exc
    return monthly_limit


def get_usage(db: Database, *, user_id: int, month: date | None = None) -> tuple[int, int]:
    """``(used, limit)`` for the user in ``month`` (default: this UTC month)."""
    month = month or month_start()
    with db.cursor() as cur:
        cur.execute(
            """
            SELECT COALESCE(a.count, 0) AS used, COALESCE(q.monthly_limit, %s) AS monthly_limit
            FROM users u
            LEFT JOIN quotas q ON q.user_id = u.id
            LEFT JOIN api_usage a ON a.user_id = u.id AND a.month = %s
            WHERE u.id = %s
            """,
            (db.settings.default_monthly_quota, month, user_id),
        )
        row = cur.fetchone()
    if row is None:
        raise NotFoundError(f"unknown user id {user_id}")
    return row["used"], row["monthly_limit"]


# One statement: read the limit, then insert the month's first unit or increment, but only while the
# result stays within the limit. Concurrent callers serialise on the usage row (ON CONFLICT locks it and
# re-checks the WHERE against the latest version), so no interleaving can exceed the limit. The insert arm
# has its own `WHERE units <= limit` because ON CONFLICT's WHERE only guards the update arm (limit 0).
_CONSUME_QUOTA = """
WITH lim AS (
    SELECT COALESCE((SELECT q.monthly_limit FROM quotas q WHERE q.user_id = %(user_id)s), %(default)s) AS n
), bumped AS (
    INSERT INTO api_usage AS a (user_id, month, count)
    SELECT %(user_id)s, %(month)s, %(units)s FROM lim WHERE %(units)s <= lim.n
    ON CONFLICT (user_id, month) DO UPDATE
        SET count = a.count + EXCLUDED.count
        WHERE a.count + EXCLUDED.count <= (SELECT n FROM lim)
    RETURNING a.count
)
SELECT (SELECT count FROM bumped) AS used, (SELECT n FROM lim) AS monthly_limit
"""


def consume_quota(db: Database, *, user_id: int, units: int = 1, at: datetime | None = None) -> QuotaResult:
    """Atomically use ``units`` of the user's monthly quota, or refuse if that would exceed it.

    A refused call consumes nothing. ``reset_at`` is the first instant of next month (UTC).
    """
    if isinstance(units, bool) or not isinstance(units, int) or units < 1:
        raise InvalidInputError("units must be a positive integer")
    month = month_start(at)
    params = {
        "user_id": user_id,
        "month": month,
        "units": units,
        "default": db.settings.default_monthly_quota,
    }
    with db.cursor() as cur:
        try:
            cur.execute(_CONSUME_QUOTA, params)
        except psycopg2.errors.ForeignKeyViolation as exc:
            raise NotFoundError(f"unknown user id {user_id}") from exc
        row = cur.fetchone()
        used, limit = row["used"], row["monthly_limit"]
        allowed = used is not None
        if not allowed:  # a new statement sees the row that blocked us, even if it was created concurrently
            cur.execute("SELECT count FROM api_usage WHERE user_id = %s AND month = %s", (user_id, month))
            current = cur.fetchone()
            used = current["count"] if current else 0
    return QuotaResult(allowed=allowed, used=used, limit=limit, reset_at=next_month_start(month))


# ================================================================================================
# Login attempts (rate limiting)
# ================================================================================================


def record_login_attempt(db: Database, *, username: str, ip: str | None, success: bool) -> None:
    """Store one login attempt (usernames are truncated to 256 characters: they are untrusted input)."""
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO login_attempts (username, ip, success) VALUES (%s, %s, %s)",
            (username[:256], ip[:64] if ip else None, success),
        )


def count_recent_failures(db: Database, *, username: str, ip: str | None, window_s: int) -> int:
    """Failed logins in the last ``window_s`` seconds for this username or from this IP.

    Failures before this username's latest successful login from the same IP are forgiven, so a user who
    mistyped a few times and then got in starts afresh; an attacker cannot reset someone else's count.
    """
    with db.cursor() as cur:
        cur.execute(
            """
            SELECT count(*) AS failures FROM login_attempts
            WHERE NOT success
              AND attempted_at > now() - make_interval(secs => %(window_s)s)
              AND (lower(username) = lower(%(username)s) OR ip = %(ip)s)
              AND attempted_at > COALESCE(
                  (SELECT max(s.attempted_at) FROM login_attempts s
                   WHERE s.success AND lower(s.username) = lower(%(username)s)
                     AND s.ip IS NOT DISTINCT FROM %(ip)s),
                  '-infinity'::timestamptz)
            """,
            {"username": username[:256], "ip": ip[:64] if ip else None, "window_s": window_s},
        )
        return cur.fetchone()["failures"]


def prune_login_attempts(db: Database, *, older_than_s: int) -> int:
    """Delete login attempts older than ``older_than_s`` seconds; returns how many."""
    with db.cursor() as cur:
        cur.execute(
            "DELETE FROM login_attempts WHERE attempted_at < now() - make_interval(secs => %s)",
            (older_than_s,),
        )
        return cur.rowcount


# ================================================================================================
# Forecast track record
# ================================================================================================


def _pair(pair: str) -> str:
    return pair.strip().lower()


def _utc(ts: Any) -> datetime:
    """A datetime from a datetime or pandas Timestamp; naive values are taken as UTC."""
    if hasattr(ts, "to_pydatetime"):
        ts = ts.to_pydatetime()
    if not isinstance(ts, datetime):
        raise InvalidInputError(f"expected a datetime, got {type(ts).__name__}")
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def record_forecast(
    db: Database,
    *,
    pair: str,
    model_version: str,
    target_time: datetime,
    predicted: float,
    last_close: float,
    made_at: datetime | None = None,
) -> Forecast:
    """Store (or refresh) a forecast; keyed on (pair, model_version, target_time), so retries are safe."""
    if not (math.isfinite(predicted) and math.isfinite(last_close)):
        raise InvalidInputError("predicted and last_close must be finite numbers")
    with db.cursor() as cur:
        cur.execute(
            """
            INSERT INTO forecasts (pair, model_version, made_at, target_time, predicted, last_close)
            VALUES (%(pair)s, %(model_version)s, COALESCE(%(made_at)s, now()), %(target_time)s,
                    %(predicted)s, %(last_close)s)
            ON CONFLICT ON CONSTRAINT forecasts_pair_model_target_key DO UPDATE
                SET predicted = EXCLUDED.predicted, last_close = EXCLUDED.last_close, made_at = EXCLUDED.made_at
            RETURNING id, pair, model_version, made_at, target_time, predicted, last_close, actual
            """,
            {
                "pair": _pair(pair),
                "model_version": str(model_version),
                "made_at": _utc(made_at) if made_at is not None else None,
                "target_time": _utc(target_time),
                "predicted": float(predicted),
                "last_close": float(last_close),
            },
        )
        return _forecast(cur.fetchone())


def fill_actuals(
    db: Database, *, pair: str, candles: Iterable[tuple[datetime, float]], overwrite: bool = False
) -> int:
    """Set ``actual`` from ``(time, close)`` pairs (e.g. ``zip(df.index, df["close"])``) for forecasts whose
    ``target_time`` matches; returns how many forecasts were updated. Known actuals are kept unless
    ``overwrite``; non-finite closes are skipped.
    """
    times: list[datetime] = []
    closes: list[float] = []
    for ts, close in candles:
        value = float(close)
        if math.isfinite(value):
            times.append(_utc(ts))
            closes.append(value)
    if not times:
        return 0
    with db.cursor() as cur:
        cur.execute(
            """
            UPDATE forecasts f SET actual = c.close
            FROM unnest(%(times)s::timestamptz[], %(closes)s::float8[]) AS c(target_time, close)
            WHERE f.pair = %(pair)s AND f.target_time = c.target_time AND (f.actual IS NULL OR %(overwrite)s)
            """,
            {"times": times, "closes": closes, "pair": _pair(pair), "overwrite": overwrite},
        )
        return cur.rowcount


def set_actual(db: Database, *, pair: str, target_time: datetime, actual: float) -> int:
    """Set the observed close for every forecast of ``pair`` at ``target_time``; returns rows updated."""
    return fill_actuals(db, pair=pair, candles=[(target_time, actual)], overwrite=True)


def list_forecasts(
    db: Database, *, pair: str, limit: int = 100, model_version: str | None = None
) -> list[Forecast]:
    """The latest ``limit`` forecasts of ``pair`` (optionally one model version), newest target first."""
    with db.cursor() as cur:
        cur.execute(
            """
            SELECT id, pair, model_version, made_at, target_time, predicted, last_close, actual
            FROM forecasts
            WHERE pair = %(pair)s AND (%(model_version)s::text IS NULL OR model_version = %(model_version)s)
            ORDER BY target_time DESC, made_at DESC
            LIMIT %(limit)s
            """,
            {"pair": _pair(pair), "model_version": model_version, "limit": max(int(limit), 0)},
        )
        return [_forecast(row) for row in cur.fetchall()]
