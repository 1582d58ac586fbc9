"""Connections to the app database: a lazily opened :class:`psycopg_pool.ConnectionPool` and direct
connections for migrations and admin work.

Every connection runs in UTC, gives up connecting after ``CONNECT_TIMEOUT_S`` and sends TCP keepalives, so
a server that vanishes behind a dead network path is noticed in about two minutes instead of hanging a
request for hours. Pooled connections are checked on checkout (one empty round trip), so connections the
server dropped are replaced before a query ever sees them.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.rows import DictRow, RowFactory, TupleRow, dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from mur.errors import DatabaseError, first_line
from mur.settings import Settings

Connection = psycopg.Connection[TupleRow]
DictCursor = psycopg.Cursor[DictRow]

CONNECT_TIMEOUT_S = 10
APPLICATION_NAME = "mur"
# libpq keepalives: first probe after 60 s idle, then every 10 s, give up after 5 unanswered probes.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 60, "keepalives_interval": 10, "keepalives_count": 5}


def _describe(settings: Settings, database: str | None = None) -> str:
    """Where we connect, without the password (for error messages)."""
    return f"{settings.db.pg_user}@{settings.db.pg_host}:{settings.db.pg_port}/{database or settings.db.pg_database}"


def _connect_error(settings: Settings, database: str | None, exc: Exception) -> DatabaseError:
    """A one-line :class:`DatabaseError` for a failed connection, with a hint when the database is missing."""
    reason = first_line(exc)
    hint = "; run `mur db migrate` to create it" if "does not exist" in reason else ""
    return DatabaseError(f"cannot connect to PostgreSQL {_describe(settings, database)}: {reason}{hint}")


def connection_options(
    statement_timeout_s: float | None = None, lock_timeout_s: float | None = None
) -> dict[str, Any]:
    """libpq parameters of every connection: timeouts, keepalives, UTC (and statement and lock timeouts if
    given: a statement waiting longer than ``lock_timeout_s`` for a lock fails, its transaction rolls back)."""
    options = "-c TimeZone=UTC"
    for name, seconds in (("statement_timeout", statement_timeout_s), ("lock_timeout", lock_timeout_s)):
        if seconds is not None:
            options += f" -c {name}={max(round(seconds * 1000), 1)}"
    return {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "application_name": APPLICATION_NAME,
        "options": options,
        **KEEPALIVES,
    }


def connect(settings: Settings, *, database: str | None = None, autocommit: bool = False) -> Connection:
    """One direct (unpooled) connection in UTC, for migrations and admin work."""
    try:
        return psycopg.connect(settings.db.dsn(database), autocommit=autocommit, **connection_options())
    except psycopg.OperationalError as exc:
        raise _connect_error(settings, database, exc) from exc


def fetch_one(cur: psycopg.Cursor[Any]) -> Any:
    """The next row of a statement that always returns one (``RETURNING`` after a write, an aggregate)."""
    row = cur.fetchone()
    if row is None:
        raise DatabaseError("PostgreSQL returned no row where one was expected")
    return row


def columns(record: type) -> sql.Composed:
    """The fields of the dataclass ``record`` as a column list: what ``class_row(record)`` reads back."""
    return sql.SQL(", ").join(sql.Identifier(field.name) for field in dataclasses.fields(record))


def advisory_xact_lock(cur: psycopg.Cursor[Any], space: int, key: str) -> None:
    """Wait for the advisory lock on ``key`` in a table's own key ``space`` (no collision with another
    table's keys); it is held until the transaction ends."""
    cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (space, key))


class Database:
    """A lazily opened, thread-safe pool of connections plus the settings queries need.

    ``maxconn`` bounds the connections this process opens; callers beyond it wait up to ``pool_timeout_s``
    instead of failing. ``minconn`` connections stay open; the ones above it close after 10 idle minutes.
    ``statement_timeout_s`` (default: ``settings.db.pg_statement_timeout_s``) cancels any statement running longer;
    ``lock_timeout_s`` (default: none) any statement waiting longer for a lock.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        minconn: int = 1,
        maxconn: int = 10,
        pool_timeout_s: float = 30.0,
        statement_timeout_s: float | None = None,
        lock_timeout_s: float | None = None,
    ) -> None:
        if not 1 <= minconn <= maxconn:
            raise ValueError("need 1 <= minconn <= maxconn")
        self.settings = settings
        self._minconn = minconn
        self._maxconn = maxconn
        self._pool_timeout_s = pool_timeout_s
        if statement_timeout_s is None:
            statement_timeout_s = settings.db.pg_statement_timeout_s
        self._options = connection_options(statement_timeout_s, lock_timeout_s)
        self._pool: ConnectionPool[Connection] | None = None
        self._pool_lock = threading.Lock()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _probe(self) -> None:
        """Connect once directly: raises the server's own reason (bad password, missing database)."""
        try:
            psycopg.connect(self.settings.db.app_dsn(), **self._options).close()
        except psycopg.OperationalError as exc:
            raise _connect_error(self.settings, None, exc) from exc

    def _get_pool(self) -> ConnectionPool[Connection]:
        with self._pool_lock:
            if self._pool is None:
                # The pool connects in background threads and only says "timed out" when that fails; a
                # direct connection first turns a wrong database or password into one clear error at once.
                self._probe()
                self._pool = ConnectionPool(
                    self.settings.db.app_dsn(),  # the application's role, not the owner (migrations)
                    kwargs=self._options,
                    min_size=self._minconn,
                    max_size=self._maxconn,
                    timeout=self._pool_timeout_s,
                    check=self._check,
                    name=APPLICATION_NAME,
                    open=True,
                )
            return self._pool

    def _check(self, conn: Connection) -> None:
        """The pool's check of a connection before it hands it out. When one is dead (the server restarted or
        terminated its connections), those idle beside it most likely are too: all are checked and the dead
        ones replaced at once, so the retry after psycopg_pool's 1 s back-off gets a live one, instead of
        meeting the dead ones one back-off at a time (1 + 2 + 4 s: past a Serve request's 5 s timeout)."""
        try:
            ConnectionPool.check_connection(conn)
        except psycopg.Error:
            if self._pool is not None:
                self._pool.check()
            raise

    def _timeout_error(self) -> DatabaseError:
        """Why no connection came in time: the server's reason if it refuses us, else a busy pool."""
        try:
            self._probe()
        except DatabaseError as exc:
            return exc
        return DatabaseError(f"no free database connection after {self._pool_timeout_s:g}s")

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A pooled connection for one transaction: commit on success, roll back on error, then return it.

        psycopg errors that mean "the database is unusable" become :class:`~mur.errors.DatabaseError`
        with one readable line; constraint violations and other SQL errors pass through to the caller.
        """
        try:
            # psycopg_pool commits (or rolls back on an exception) and takes the connection back; a broken one
            # is discarded and replaced
            with self._get_pool().connection() as conn:
                yield conn
        except PoolTimeout as exc:  # no connection came in time
            raise self._timeout_error() from exc
        except psycopg.errors.UndefinedTable as exc:
            raise DatabaseError(
                f"the database schema is missing or outdated ({first_line(exc)}); run `mur db migrate`"
            ) from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise DatabaseError(f"PostgreSQL {_describe(self.settings)} failed: {first_line(exc)}") from exc

    @contextmanager
    def cursor(self, row_factory: RowFactory[Any] = dict_row) -> Iterator[psycopg.Cursor[Any]]:
        """A cursor inside :meth:`connection` (one transaction) whose rows ``row_factory`` makes: dicts by
        default, or psycopg's ``class_row(SomeDataclass)``, ``scalar_row``..."""
        with self.connection() as conn, conn.cursor(row_factory=row_factory) as cur:
            yield cur

    def close(self) -> None:
        """Close every pooled connection (a later query opens a new pool)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()
            self._pool = None
