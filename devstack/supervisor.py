"""The process supervisor of the local stack: start, health-check, stop and report services.

Every service is started in its own session (``start_new_session=True``); its pid file holds the session
id, so stopping it signals every process of that session (:func:`devstack.processes.terminate`: SIGTERM,
then SIGKILL after ``stop_timeout_s``). Start is idempotent: a healthy service is left alone, a stale pid
file is removed, a port held by some other program is an error. Health is judged from the service itself
(:func:`answers`: its session leader, the main process, alive, and its own check); one whose main process
died has the rest of its session stopped before it starts again (:mod:`devstack.watchdog` does that alone).

Files: ``{runtime_dir}/pids/NAME.pid`` (session id), ``NAME.lock`` (serialises start/stop of NAME across
processes), ``{runtime_dir}/logs/NAME.log`` (stdout+stderr, appended, one header line per start; written by
:mod:`devstack.logwriter`, which rotates it to ``NAME.log.1`` at ``LOG_ROTATE_BYTES`` while the service
runs, so a log never grows without bound). Services: :func:`devstack.services.stack_services` unless a
``services`` table is passed. Linux only (``/proc``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from devstack import secret_files
from devstack.health import check_text, port_open, probe, read_state
from devstack.processes import STACK_MARKER, leader_alive, memory_mb, session_members, terminate
from devstack.services import CORE_SERVICES as CORE_SERVICES
from devstack.services import Service, stack_services
from mur.errors import MurError, ServiceError
from mur.waiting import wait_until

if TYPE_CHECKING:
    from mur.settings import Settings

LOG_ROTATE_BYTES = 50 * 1024 * 1024
"""A service's log is rotated when it would grow past this, at start and while the service runs."""
LOG_BACKUPS = 1
"""Rotated logs kept per service (``NAME.log.1`` …): at most about ``(LOG_BACKUPS + 1) × LOG_ROTATE_BYTES``."""
LOG_WRITER = Path(__file__).with_name("logwriter.py")

Progress = Callable[[str], None]


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
    state: Literal["running", "unhealthy", "external", "stopped", "restarting", "fatal"]
    pid: int | None
    port: int | None
    healthy: bool
    processes: int
    memory_mb: float | None
    log_path: Path
    disk_mb: float | None = None  # the size of its data dir on disk (Service.data_dir), when it has one
    restarts: int = 0  # by the watchdog (devstack.watchdog)

    @property
    def running(self) -> bool:
        """True when mur started it and at least one of its processes is alive."""
        return self.pid is not None


# --- paths ---------------------------------------------------------------------------------------
def pid_path(settings: Settings, name: str) -> Path:
    """Pid file of service ``name`` (holds its session id)."""
    return Path(settings.general.runtime_dir) / "pids" / f"{name}.pid"


def log_path(settings: Settings, name: str) -> Path:
    """Log file of service ``name``."""
    return Path(settings.general.runtime_dir) / "logs" / f"{name}.log"


def running_pid(settings: Settings, name: str, *, clean: bool = False) -> int | None:
    """Session id of service ``name`` if any of its processes is alive; ``clean`` removes a stale pid file."""
    path = pid_path(settings, name)
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if session_members(pid):
        return pid
    if clean:
        path.unlink(missing_ok=True)
    return None


def service_lock(
    settings: Settings, name: str, *, wait: bool = True
) -> contextlib.AbstractContextManager[bool]:
    """Serialise start/stop of one service across processes (flock on ``pids/NAME.lock``); without ``wait``,
    yields False at once when another process holds it."""
    return secret_files.locked(pid_path(settings, name).with_suffix(""), wait=wait)


def answers(service: Service, sid: int) -> bool:
    """Healthy, judged from the service itself: its main process runs and its own check (if any) passes."""
    return leader_alive(sid) and (probe(service) if service.health_url or service.port else True)


# --- waiting --------------------------------------------------------------------------------------
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


def _diagnosis(service: Service) -> str:
    """``service.diagnose()`` under a heading ("" without one); never raises."""
    if service.diagnose is None:
        return ""
    try:
        return f"\n{service.name} diagnosis:\n{service.diagnose()}"
    except Exception as exc:  # a diagnosis must not hide the error it explains
        return f"\n{service.name} diagnosis failed: {type(exc).__name__}: {exc}"


def _wait_healthy(
    service: Service,
    sid: int,
    proc: subprocess.Popen[bytes] | None,
    log: Path,
    offset: int,
    writer: subprocess.Popen[bytes] | None = None,
) -> None:
    """Poll the health check until it passes (``service.start_timeout_s``); fail early when the process dies."""
    check, timeout_s = check_text(service), service.start_timeout_s

    def healthy() -> bool:
        if (ok := answers(service, sid)) or leader_alive(sid):  # healthy, or still starting
            return ok
        rc = proc.poll() if proc is not None else None  # its exit code, when it is our child
        died = "exited" if rc is None else f"exited with code {rc}"
        if writer is not None:  # let the log writer drain what the service wrote last
            with contextlib.suppress(subprocess.TimeoutExpired):
                writer.wait(timeout=2.0)
        raise ServiceError(
            f"{service.name} {died} before answering {check}; last lines of {log}:\n" + _log_tail(log, offset)
        )

    wait_until(
        healthy,
        what=f"{service.name} to answer {check}",
        timeout_s=timeout_s,
        interval_s=0.3,
        error=lambda _: ServiceError(
            f"{service.name} did not answer {check} within {timeout_s:.0f} s; last lines of {log}:\n"
            + _log_tail(log, offset)
            + _diagnosis(service)
        ),
    )


# --- start / stop / status of one service --------------------------------------------------------
def start_service(settings: Settings, service: Service, *, progress: Progress | None = None) -> StartResult:
    """Start ``service`` unless it already answers; wait until healthy, then run its ``after_start``."""
    say = progress or (lambda _msg: None)
    began = time.monotonic()
    log = log_path(settings, service.name)
    stop_session = functools.partial(terminate, first=service.stop_first, last=service.stop_last)
    with service_lock(settings, service.name):
        ours = pid_path(settings, service.name).exists()  # even dead: what answers is what it served
        pid = running_pid(settings, service.name, clean=True)
        if pid is not None and not leader_alive(pid):  # its main process died: what is left of it goes, fast
            say(f"{service.name}: its main process (pid {pid}) died; stopping what is left of it")
            stop_session(pid, min(service.stop_timeout_s, 3.0))
            pid_path(settings, service.name).unlink(missing_ok=True)
            pid = None
        if pid is not None:
            if not answers(service, pid):
                say(f"{service.name}: running (session {pid}) but not healthy yet, waiting …")
                _wait_healthy(service, pid, None, log, max(0, _size(log) - 20_000))
            return StartResult(service.name, "running", pid, time.monotonic() - began)
        if not ours and probe(service):  # another instance (Serve's proxy on Ray, its keeper dead, is ours)
            return StartResult(service.name, "external", None, 0.0)
        if not ours and service.port is not None and port_open(service.host, service.port):
            raise ServiceError(
                f"{service.name}: port {service.port} is in use by a program mur did not start "
                f"(and it does not answer {check_text(service)}); stop it or change the port"
            )
        say(f"starting {service.name} …")
        if service.before_start is not None:
            service.before_start()
        proc, offset, writer = _launch(settings, service, log)
        pid_path(settings, service.name).write_text(f"{proc.pid}\n")
        try:
            _wait_healthy(service, proc.pid, proc, log, offset, writer)
            if service.after_start is not None:
                service.after_start()
        except BaseException as exc:
            with contextlib.suppress(MurError):
                stop_session(proc.pid, min(service.stop_timeout_s, 5.0))
            pid_path(settings, service.name).unlink(missing_ok=True)
            if isinstance(exc, MurError | KeyboardInterrupt):
                raise
            raise ServiceError(f"{service.name} started but its setup failed: {exc}") from exc
        return StartResult(service.name, "started", proc.pid, time.monotonic() - began)


def _size(path: Path) -> int:
    with contextlib.suppress(OSError):
        return path.stat().st_size
    return 0


def _launch(
    settings: Settings, service: Service, log: Path
) -> tuple[subprocess.Popen[bytes], int, subprocess.Popen[bytes]]:
    """Spawn the service in a new session, its output piped to a log writer; return (process, offset, writer).

    The writer (:mod:`devstack.logwriter`) runs in a session of its own, so stopping the service's
    session leaves it to drain the pipe and exit at EOF; it carries no stack marker, so it never counts as
    a leftover of the stack.
    """
    cwd = service.cwd or Path(settings.general.runtime_dir)
    for folder in (log.parent, pid_path(settings, service.name).parent, cwd):
        folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **service.env}
    for name in service.env_unset:
        env.pop(name, None)
    if _size(log) > LOG_ROTATE_BYTES:  # a fresh log for each start once the current one is big
        os.replace(log, log.with_name(log.name + ".1"))
    with open(log, "ab") as fh:
        offset = fh.tell()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        fh.write(f"\n===== {stamp} mur starts {service.name}: {' '.join(service.command)}\n".encode())
    read_end, write_end = os.pipe()
    try:
        writer = subprocess.Popen(
            [sys.executable, "-I", str(LOG_WRITER), str(log)]
            + ["--max-bytes", str(LOG_ROTATE_BYTES), "--backups", str(LOG_BACKUPS)],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={k: v for k, v in os.environ.items() if k != STACK_MARKER},
            start_new_session=True,
        )
    except OSError as exc:
        os.close(write_end)
        raise ServiceError(f"{service.name}: cannot start its log writer: {exc}") from exc
    finally:
        os.close(read_end)
    try:
        proc = subprocess.Popen(
            service.command,
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        raise ServiceError(f"{service.name}: cannot run {service.command[0]}: {exc}") from exc
    finally:
        os.close(write_end)  # the service holds it now; at EOF (the service gone) the writer exits
    return proc, offset, writer


def stop_service(settings: Settings, service: Service, *, progress: Progress | None = None) -> StopResult:
    """Stop ``service`` if mur started it (SIGTERM to its session, SIGKILL after ``stop_timeout_s``)."""
    say = progress or (lambda _msg: None)
    began = time.monotonic()
    with service_lock(settings, service.name):
        sid = running_pid(settings, service.name, clean=True)
        if sid is None:
            action: Literal["not running", "external"] = "external" if probe(service, 0.5) else "not running"
            return StopResult(service.name, action, 0.0)
        say(f"stopping {service.name} …")
        how = terminate(sid, service.stop_timeout_s, first=service.stop_first, last=service.stop_last)
        how = "stopped" if service.killed_is_stopped else how
        pid_path(settings, service.name).unlink(missing_ok=True)
        if service.after_stop is not None:
            try:
                service.after_stop()
            except Exception as exc:  # the processes are gone, which is what stopping means
                say(f"{service.name}: after stopping: {type(exc).__name__}: {exc}")
        return StopResult(service.name, how, time.monotonic() - began)


def service_status(
    settings: Settings, service: Service, watched: dict[str, dict[str, Any]] | None = None
) -> ServiceStatus:
    """Whether ``service`` runs (and was started by mur), answers its health check, what it uses, and what
    the watchdog did (``watched``: :func:`devstack.health.read_state`)."""
    pid = running_pid(settings, service.name)
    healthy = answers(service, pid) if pid is not None else probe(service)
    members = session_members(pid) if pid is not None else []
    seen = (watched or {}).get(service.name, {})
    state: Literal["running", "unhealthy", "external", "stopped", "restarting", "fatal"]
    if seen.get("state") in ("restarting", "fatal") and not healthy:
        state = seen["state"]
    elif pid is not None:
        state = "running" if healthy else "unhealthy"
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
        disk_mb=_disk_mb(service.data_dir) if service.data_dir is not None else None,
        restarts=int(seen.get("restarts", 0)),
    )


def _disk_mb(folder: Path) -> float:
    """MiB its files take on disk (a sparse file counts as such); a file gone meanwhile (Ray's temp dir) skipped."""
    total = 0
    for parent, _dirs, files in os.walk(folder):  # errors (a dir gone) skipped; links not followed
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(parent, name)).st_blocks * 512
    return total / 2**20


def plan(services: dict[str, Service], names: Sequence[str] | None, *, with_deps: bool = True) -> list[str]:
    """``names`` (default: all) in dependency order, dependencies first (added when ``with_deps``)."""
    unknown = [n for n in names or () if n not in services]
    if unknown:
        raise ServiceError(f"unknown service(s): {', '.join(unknown)} (known: {', '.join(services)})")

    def visit(name: str, into: list[str], path: tuple[str, ...] = ()) -> None:
        """Append ``name`` to ``into`` after what it depends on (depth first, ``path`` the way here)."""
        if name in path:
            raise ServiceError(f"services depend on each other in a cycle through {name}")
        if name not in into:
            for dep in services[name].depends_on:
                if dep in services:  # a dependency that is not registered is someone else's business
                    visit(dep, into, (*path, name))
            into.append(name)

    order: list[str] = []  # every registered service, dependencies first, else in registry order
    for name in services:
        visit(name, order)
    if not names:
        return order
    needed: list[str] = []  # names with what they depend on
    for name in names:
        visit(name, needed)
    return [name for name in order if name in (needed if with_deps else names)]


def up(
    settings: Settings,
    names: Sequence[str] | None = None,
    *,
    services: dict[str, Service] | None = None,
    progress: Progress | None = None,
) -> list[StartResult]:
    """Start ``names`` (default: all registered) and what they depend on, dependencies first."""
    registry = services if services is not None else stack_services(settings)
    results = []
    for name in plan(registry, names):
        result = start_service(settings, registry[name], progress=progress)
        if progress is not None:
            progress(describe_start(result, registry[name]))
        results.append(result)
    return results


def down(
    settings: Settings,
    names: Sequence[str] | None = None,
    *,
    services: dict[str, Service] | None = None,
    progress: Progress | None = None,
) -> list[StopResult]:
    """Stop ``names`` (default: all registered), dependents before what they depend on.

    In waves (:func:`stop_waves`): the services of a wave stop side by side, a wave once the one before it
    has ended; the results in stop order."""
    registry = services if services is not None else stack_services(settings)
    results: dict[str, StopResult] = {}

    def stop(name: str) -> None:
        results[name] = result = stop_service(settings, registry[name], progress=progress)
        if progress is not None:
            progress(_describe_stop(result))

    order = list(reversed(plan(registry, names, with_deps=False)))
    for wave in stop_waves(registry, order):
        with ThreadPoolExecutor(max_workers=len(wave)) as pool:
            list(pool.map(stop, wave))  # an error propagates once the wave's other stops ended
    return [results[name] for name in order]


def stop_waves(registry: dict[str, Service], order: Sequence[str]) -> list[list[str]]:
    """``order`` (dependents first) cut into waves: a service joins the current wave unless something in it
    depends on it. The waves keep the order's sequence, so nothing stops before what the order put ahead of
    it. The whole stack: ``dash``; ``serve`` and the Airflow components beside the API server (a scheduler
    waits up to its stop timeout for the tasks it runs); the API server, ``ray`` and ``mlflow``; ``s3``. Ray
    stops after the scheduler, so no task still waiting on its Ray job reports a failure."""
    waves: list[list[str]] = []
    for name in order:
        if not waves or any(name in registry[other].depends_on for other in waves[-1]):
            waves.append([name])
        else:
            waves[-1].append(name)
    return waves


def status(
    settings: Settings, names: Sequence[str] | None = None, *, services: dict[str, Service] | None = None
) -> list[ServiceStatus]:
    """Status of ``names`` (default: all) in dependency order; the health checks run side by side."""
    registry = services if services is not None else stack_services(settings)
    order = plan(registry, names, with_deps=False)
    watched = read_state(settings)
    with ThreadPoolExecutor(max_workers=max(1, len(order))) as pool:
        return list(pool.map(lambda name: service_status(settings, registry[name], watched), order))


def describe_start(result: StartResult, service: Service) -> str:
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
