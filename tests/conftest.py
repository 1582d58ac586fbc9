"""Shared fixtures (every test folder sees them) and the test tiers.

PostgreSQL, on the real server (skipped when it is unreachable):

- ``pg_database_factory(migrated=True, create=True)`` -> Settings for a new ``mur_test_<random>`` database;
  every database it made is dropped at the end of the session.
- ``pg_settings``: one migrated database for the whole session (tests use random usernames to stay apart).
- ``database``: a :class:`mur.db.Database` pool on ``pg_settings``, closed after the test.

The shared local services (S3, MLflow, Ray), on a test stack (:data:`STACK_OFFSET_VAR`), never the defaults:

- ``stack_settings`` (session): the Settings the services run with (``MUR_*``, and ``MUR_SECRETS_DIR``: the
  stack's S3 keys and MLflow trainer account, ``devstack.config.mlflow_account`` gives the others); starts
  nothing; at the end removes the test stack (services, databases, runtime dir) unless ``MUR_KEEP_SERVICES=1``.
- ``services`` (session): starts what is not already healthy, reuses what is, yields the Settings, and at
  the end stops only what *it* started, unless ``MUR_KEEP_SERVICES=1`` (keep them for the next run: the
  first start costs about a minute on two cores).

Tiers (``pytest_collection_modifyitems`` below; README "Tests"; ``infra/test.sh`` runs them in this order):
a test that uses the PostgreSQL fixtures gets the marker ``pg``, one that uses ``services``/``stack_settings``
gets ``services``, one in ``tests/e2e`` gets ``e2e``; every test with none of ``pg``, ``services``,
``serve``, ``browser``, ``e2e`` gets ``fast``. Each test is in exactly one of the three tiers
(:data:`TIER_EXPRESSIONS`, the ``-m`` expressions of infra/test.sh, checked by tests/unit/test_tiers.py):

- fast (``-m fast``): no service at all; parallel workers (pytest-xdist);
- postgres (``-m "pg and not (services or serve or ...)"``): the PostgreSQL server only, each
  test in its own random database or with random names (never a fixed port); parallel workers too, each
  with its own session databases;
- services (the rest): the local services on the first test stack, one test at a time. infra/test.sh runs
  two pytest runs side by side: the tests on that stack, and beside them the end-to-end test (``-m
  e2e``, a private stack of its own), then the tests marked ``second_stack`` (:data:`SECOND_STACK_PATHS`) on
  a second stack (``MUR_TEST_STACK_OFFSET``: every port moved, a runtime dir and databases of its own).

Timeouts: ``--timeout`` in pyproject.toml (a few minutes) for every test; a services-tier test gets
:data:`SERVICES_TIER_TIMEOUT_S` unless it is marked ``timeout`` itself (its first test pays the session's
service start-up and the Serve deployment); the long ones (e2e, the stack, training, many pairs) carry their
own ``@pytest.mark.timeout``. A test marked ``service_start`` (it starts a real service) is rerun once, and
only on a start-up or connection error; each rerun is listed in the "rerun test summary info" section.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from stack_ports import (
    FIRST_STACK_OFFSET,
    SECOND_STACK_OFFSET,
    SECOND_STACK_TESTS,
    remove_temp_files,
    stack_env,
)

from devstack.config import stack_s3_keys, use_stack_ray, write_secrets_dir
from mur.db import Database, migrate
from mur.settings import PROJECT_ROOT, Settings, get_settings

TEST_CLOCK = {"MUR_CLOCK_START": "2026-01-01T00:00:00Z", "MUR_CLOCK_SPEED": "0"}
"""The market clock tests run with unless they set their own: frozen after the end of every bundled pair, so
a test sees each pair's whole recorded history (the stack's default replays it from Nov 2024, mur/clock.py).
Tests of the clock itself, and the end-to-end loop test, set ``MUR_CLOCK_*`` explicitly."""
TEST_JOB_POLL = {"MUR_JOB_POLL_S": "2"}
"""How often the training DAG's trigger asks Ray whether its jobs ended in the tests (the default, 10 s, suits
hour-long trainings): a tiny training's task resumes ~4 s sooner on average, in ``dag.test()`` and a live
triggerer alike (the end-to-end test sets it too)."""
for _name, _value in (TEST_CLOCK | TEST_JOB_POLL).items():
    os.environ.setdefault(_name, _value)
STACK_OFFSET_VAR = "MUR_TEST_STACK_OFFSET"
"""Which test stack this run's shared services are: unset, the first (:data:`FIRST_STACK_OFFSET`); ``second``
(infra/test.sh) or a number, that one. Never the defaults of a developer's ``mur up``: every port moved by the
offset, and a runtime dir (under :data:`TEST_RUNTIME_ROOT`), databases, S3 bucket and registry prefix of its
own (tests/stack_ports.py ``stack_env``), removed at the end of the run (``stack_settings``)."""
TEST_RUNTIME_ROOT = PROJECT_ROOT / ".runtime-test"
_offset_set = os.environ.get(STACK_OFFSET_VAR, "")
STACK_OFFSET = SECOND_STACK_OFFSET if _offset_set == "second" else int(_offset_set or FIRST_STACK_OFFSET)
if STACK_OFFSET <= 0:
    raise pytest.UsageError(f"{STACK_OFFSET_VAR}={_offset_set}: a test stack never runs on the default ports")
os.environ.update(stack_env(STACK_OFFSET, TEST_RUNTIME_ROOT, uuid.uuid4().hex[:6]))
os.environ.pop("RAY_AUTH_TOKEN", None)  # the token of this stack's runtime dir, set just below
use_stack_ray()  # Ray heads the tests start listen on 127.0.0.1, and their drivers (subprocesses too) join them
_unaligned = get_settings()  # the stack's S3 keys and MLflow trainer account, as `mur up` gives its processes
os.environ["MUR_SECRETS_DIR"] = str(write_secrets_dir(_unaligned.replace(**stack_s3_keys(_unaligned))))
get_settings.cache_clear()


def _admin_connection(settings: Settings) -> psycopg.Connection:
    return psycopg.connect(settings.db.dsn("postgres"), connect_timeout=5, autocommit=True)


@pytest.fixture(scope="session")
def pg_database_factory() -> Iterator[Callable[..., Settings]]:
    """Make Settings pointing at fresh, uniquely named databases; drop them all at session end."""
    base = Settings(env="test")
    try:
        _admin_connection(base).close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {base.db.pg_host}:{base.db.pg_port}: {exc}")
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


# --- the shared local services (S3, MLflow, Ray) ----------------------------------------------------------
# devstack is imported inside the functions: collecting the fast tier never loads the local platform.


def ensure_services(settings: Settings, names: Sequence[str] | None = None) -> list[str]:
    """Start ``names`` (default: the core services) unless healthy; return the names this call started."""
    from devstack import supervisor

    wanted = list(supervisor.CORE_SERVICES if names is None else names)
    results = supervisor.up(settings, wanted, progress=lambda msg: print(f"[services] {msg}", flush=True))
    return [r.name for r in results if r.action == "started"]


def release_services(settings: Settings, started: Sequence[str]) -> None:
    """Stop the services in ``started`` unless ``MUR_KEEP_SERVICES=1``."""
    from devstack import supervisor

    if started and os.environ.get("MUR_KEEP_SERVICES", "0").lower() not in ("1", "true", "yes"):
        supervisor.down(settings, list(started))


@pytest.fixture(scope="session")
def stack_settings() -> Iterator[Settings]:
    """The settings the shared services run with (from the environment, ``MUR_*``); starts nothing. At the
    end, unless ``MUR_KEEP_SERVICES=1`` or another test run still uses it, the test stack goes: its
    services stopped, its databases dropped, its runtime dir removed. Each run holds a shared lock on
    ``<runtime dir>.lock`` while it uses the stack; the last one out (the exclusive lock granted) removes it."""
    import fcntl

    settings = get_settings()
    runtime = Path(settings.general.runtime_dir)
    runtime.parent.mkdir(parents=True, exist_ok=True)
    with (runtime.parent / f"{runtime.name}.lock").open("a") as users:
        fcntl.flock(users, fcntl.LOCK_SH)
        yield settings
        if os.environ.get("MUR_KEEP_SERVICES", "0").lower() in ("1", "true", "yes"):
            return
        try:
            fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"[services] another test run uses {runtime.name}: left running for it", flush=True)
            return
        _remove_test_stack(settings)


def _remove_test_stack(settings: Settings) -> None:
    import shutil

    from devstack.stack import bring_down

    bring_down(settings, say=lambda msg: print(f"[services] {msg}", flush=True))
    with _admin_connection(settings) as conn:
        for name in (settings.db.pg_database, settings.db.mlflow_database, settings.db.airflow_database):
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    shutil.rmtree(settings.general.runtime_dir, ignore_errors=True)
    remove_temp_files(settings)  # Ray's temp dirs, SeaweedFS's sockets, HAProxy's dir: in /tmp


@pytest.fixture(scope="session")
def services(stack_settings: Settings) -> Iterator[Settings]:
    """S3, MLflow and Ray running and healthy for the whole session; yields their Settings."""
    started = ensure_services(stack_settings)
    try:
        yield stack_settings
    finally:
        release_services(stack_settings, started)


# --- test tiers -------------------------------------------------------------------------------------------

#: Using one of these fixtures (directly or through another fixture) puts a test in the services tier.
PG_FIXTURES = frozenset({"pg_database_factory"})  # pg_settings, database, dash_db_settings... all use it
SERVICE_FIXTURES = frozenset({"services", "stack_settings"})
#: Markers of the postgres and services tiers; a test with none of them is in the fast tier.
SERVICES_TIER_MARKERS = ("pg", "services", "serve", "browser", "e2e", "gpu")
#: The ``-m`` expression of each tier, as infra/test.sh runs them (a test matches exactly one).
_BEYOND_PG = " or ".join(m for m in SERVICES_TIER_MARKERS if m != "pg")
TIER_EXPRESSIONS = {
    "fast": "fast",
    "postgres": f"pg and not ({_BEYOND_PG})",
    "services": f"not fast and ({_BEYOND_PG})",
}
SERVICES_TIER_TIMEOUT_S = 600
"""Per-test timeout of a services-tier test without its own ``timeout`` mark (pyproject's ``--timeout``
is for the fast and postgres tiers)."""
#: What a ``service_start`` test is rerun for: a service that did not come up or could not be reached
#: (matched against "ExceptionType: message" of the error and its causes). An assertion is never rerun.
SERVICE_START_ERRORS = [
    r"^(ServiceError|RegistryUnavailableError|ConnectionError|ConnectionRefusedError|ConnectionResetError"
    r"|ConnectError|ConnectTimeout|RemoteDisconnected)\b",
    r"^JobError: (cannot reach the Ray head|could not submit)",
]
SERVICE_START_RERUNS = 1
SERVICE_START_RERUN_DELAY_S = 5
THIS_FILE = Path(__file__).resolve()
E2E_DIR = THIS_FILE.parent / "e2e"
SECOND_STACK_PATHS = tuple(THIS_FILE.parent / path for path in SECOND_STACK_TESTS)
"""Services-tier tests that infra/test.sh runs on the second shared stack (marked ``second_stack``), after the
end-to-end test and beside the others on the first: Serve, the dashboard in a browser, the Serve and pairs
benchmarks' smoke runs; the first keeps Airflow, Ray training (its benchmark's smoke run too), the cluster, the
tuning DAG and tuned training, ``mur tune`` (its own local Ray beside the stack's MLflow) and the services' own
tests (2026-11-25:
1029 s on the first, 256 + 797 s on this side before the end-to-end test took the fault matrix and the restore
drill, ~8 min more, and Ray training's ~4 min moved to the first; 2026-11-26: 1259 and 1300 s on the first,
747 + 468 and 694 + 491 s on this side, so ``mur tune``'s ~60 s moved here; 2026-11-27, a 6.5 M steps/s
machine: 2213 s on the first, 1057 + 966 s on this side once the restore drill stopped waiting for runs queued
behind others, so the Serve and pairs benchmarks' ~145 s moved here; a 14.4-14.8 M machine: 1159-1236 s on the
first, 631-813 + 717-730 s on this side, so the listening sockets of a private head, ~56 s, went to the
first; later that day the soak smoke, ~25 s, came here onto the Serve tests' app (it had deployed its own on the
first, ~75 s), so the training benchmark's smoke run, ~36 s, went back to the first; 2026-11-27 at 14.9 M: 1082 s
on the first, 541 + 622 s on this side, then a private Ray head and two Ray jobs fewer on the first, ~65 s, so ``mur tune``,
~60 s, went back to the first). Each run pays its own
service start-up, so a group that shares an expensive fixture (``serve_stack``)
stays on one side."""


def _uses_shared_fixture(item: pytest.Item, names: frozenset[str]) -> bool:
    """Whether ``item`` uses (directly or through other fixtures) one of ``names`` as defined in this file.

    A module's own fixture of the same name (``tests/unit/test_compose.py`` has a ``services`` fixture that
    reads docker-compose.yml) shadows the shared one and does not count.
    """
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    for name in names.intersection(info.names_closure):
        definitions = info.name2fixturedefs.get(name, ())
        code = getattr(definitions[-1].func, "__code__", None) if definitions else None
        if code is not None and Path(code.co_filename).resolve() == THIS_FILE:
            return True
    return False


def _cuda_available() -> bool:
    import torch  # only when a gpu test is collected

    return bool(torch.cuda.is_available())


@pytest.hookimpl(tryfirst=True)  # before the -m selection, which reads the markers added here
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its tier (from the fixtures it uses), give ``service_start`` tests one rerun, and
    put the ``long`` ones first."""
    for item in items:
        if Path(item.path).resolve().is_relative_to(E2E_DIR) and not item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.e2e)
        if _uses_shared_fixture(item, PG_FIXTURES) and not item.get_closest_marker("pg"):
            item.add_marker(pytest.mark.pg)
        if _uses_shared_fixture(item, SERVICE_FIXTURES) and not item.get_closest_marker("services"):
            item.add_marker(pytest.mark.services)
        if not any(item.get_closest_marker(name) for name in SERVICES_TIER_MARKERS):
            item.add_marker(pytest.mark.fast)
        elif any(Path(item.path).resolve().is_relative_to(p) for p in SECOND_STACK_PATHS):
            item.add_marker(pytest.mark.second_stack)
        elif not item.get_closest_marker("timeout") and any(
            item.get_closest_marker(name) for name in SERVICES_TIER_MARKERS if name != "pg"
        ):  # the services tier: its first test pays the services' start-up and a Serve deployment
            item.add_marker(pytest.mark.timeout(SERVICES_TIER_TIMEOUT_S))
        if item.get_closest_marker("gpu") and not _cuda_available():
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False"))
        if item.get_closest_marker("flaky"):
            raise pytest.UsageError(
                f"{item.nodeid}: use @pytest.mark.service_start (one rerun on a start-up error), not flaky"
            )
        if item.get_closest_marker("service_start"):
            if item.get_closest_marker("fast"):
                raise pytest.UsageError(f"{item.nodeid}: marked service_start but uses no service")
            item.add_marker(
                pytest.mark.flaky(
                    reruns=SERVICE_START_RERUNS,
                    reruns_delay=SERVICE_START_RERUN_DELAY_S,
                    only_rerun=SERVICE_START_ERRORS,
                )
            )
    # a long test collected last would run alone at its tier's end, one of the two cores idle
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.fixture(autouse=True)
def _hermetic_fast_tier(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fast-tier tests see the documented defaults, not the developer's ``MUR_*`` environment (e.g. a second
    stack on other ports): they never talk to a service, so nothing there may change them."""
    if request.node.get_closest_marker("fast") is None:
        return
    import os

    for name in [n for n in os.environ if n.startswith("MUR_")]:
        monkeypatch.delenv(name)
    for name, value in TEST_CLOCK.items():
        monkeypatch.setenv(name, value)
    # but a runtime dir of the run's own: a CLI run here (`mur restore` refusing a damaged backup builds the
    # stack's settings first) would otherwise write the stack's secrets file into the user's `.runtime/`
    runtime = request.getfixturevalue("tmp_path_factory").getbasetemp() / "runtime"
    monkeypatch.setenv("MUR_RUNTIME_DIR", str(runtime))
    get_settings.cache_clear()  # nor a cached one: neither in this test, nor (defaults) in the next
    request.addfinalizer(get_settings.cache_clear)
    # and never PostgreSQL: with the defaults that would be the database of the user's own `mur up` stack. A
    # connection fails as it does where no stack runs (code that reads the pair catalogue then goes on without)
    import psycopg

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise psycopg.OperationalError("fast-tier tests never connect to PostgreSQL (the user's stack's)")

    monkeypatch.setattr(psycopg, "connect", refuse)
    monkeypatch.setattr(psycopg.Connection, "connect", refuse)  # what psycopg_pool calls
