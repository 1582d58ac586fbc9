"""Shared fixtures: throwaway PostgreSQL databases on the real server (skipped when it is unreachable).

- ``pg_database_factory(migrated=True, create=True)`` -> Settings for a new ``mur_test_<random>`` database;
  every database it made is dropped at the end of the session.
- ``pg_settings``: one migrated database for the whole session (tests use random usernames to stay apart).
- ``database``: a :class:`mur.db.Database` pool on ``pg_settings``, closed after the test.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import psycopg2
import pytest
from psycopg2 import sql

from mur.db import Database, migrate
from mur.settings import Settings


def _admin_connection(settings: Settings) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(settings.pg_dsn("postgres"), connect_timeout=5)
    conn.autocommit = True
    return conn


@pytest.fixture(scope="session")
def pg_database_factory() -> Iterator[Callable[..., Settings]]:
    """Make Settings pointing at fresh, uniquely named databases; drop them all at session end."""
    base = Settings(env="test")
    try:
        _admin_connection(base).close()
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {base.pg_host}:{base.pg_port}: {exc}")
    made: list[str] = []

    def make(*, migrated: bool = True, create: bool = True) -> Settings:
        name = f"mur_test_{uuid.uuid4().hex[:12]}"
        made.append(name)
        settings = Settings(env="test", pg_database=name)
        if migrated:
            migrate(settings)
        elif create:
            conn = _admin_connection(base)
            try:
                with conn.cursor() as cur:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            finally:
                conn.close()
        return settings

    yield make

    conn = _admin_connection(base)
    try:
        with conn.cursor() as cur:
            for name in made:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        conn.close()


@pytest.fixture(scope="session")
def pg_settings(pg_database_factory: Callable[..., Settings]) -> Settings:
    """Settings for one migrated test database shared by the session."""
    return pg_database_factory()


@pytest.fixture
def database(pg_settings: Settings) -> Iterator[Database]:
    """A connection pool on the session's test database (closed after the test)."""
    db = Database(pg_settings, maxconn=5)
    yield db
    db.close()
