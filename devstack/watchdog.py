"""The stack's watchdog: a service whose main process died is restarted, with backoff, and an alert.

``mur up`` starts one per runtime dir through the supervisor (``python -m devstack.watchdog``, in a session of
its own, pid in ``{runtime_dir}/pids/watchdog.pid``); ``mur down`` stops it before the services. Every
``INTERVAL_S`` it looks at the services that have a pid file (those mur started) and judges each from its
own process: the session leader, the service's main process, alive or not; never through another service.
A dead one is restarted by :func:`devstack.supervisor.start_service` (what is left of its session stopped
first, then its ``before_start``, the health wait and ``after_start``, as ``mur up`` does), at once the first
time, then after 2, 4, 8 … s while it keeps dying within ``STABLE_S`` of its last start; after
``MAX_FAILURES`` such deaths in a row it is left stopped, ``fatal``, until ``mur up`` starts it again.

Each restart counts in ``{runtime_dir}/watchdog.json`` (``mur status``: restarts, state) and each death and
each give-up is an alert: sent to Discord when ``MUR_DISCORD_WEBHOOK_URL`` is set
(:mod:`mur.orchestration.alerts`) and always recorded, delivered or not, in
``{runtime_dir}/service-alerts.jsonl`` (``mur status`` prints the latest). Every ``SWEEP_S`` it also deletes
expired logs of ended work (:func:`sweep_logs`, ``MUR_LOG_RETENTION_HOURS``).
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devstack import secret_files
from devstack.airflow import airflow_home
from devstack.config import align_settings
from devstack.health import ALERTS_FILE, STATE_FILE, read_state
from devstack.processes import leader_alive, terminate
from devstack.services import Service, ray_temp_dir, stack_services
from devstack.supervisor import pid_path, service_lock, start_service, stop_service
from mur.errors import MurError
from mur.settings import PROJECT_ROOT, Settings, get_settings

INTERVAL_S = 1.0
STABLE_S = 60.0
"""A service that ran this long since its last (re)start counts as recovered: its next death restarts at once."""
MAX_FAILURES = 5
MAX_BACKOFF_S = 60.0
NAME = "watchdog"
"""The watchdog's own name among the pid files (the supervisor starts and stops it as it does a service)."""
LEGACY_PID_FILE = "watchdog.pid"
"""Where a watchdog started by older code (before it ran as a supervised service) kept its pid, in the
runtime dir: :func:`start` and :func:`stop` end that one too, so such a stack never gets a second watchdog."""
SWEEP_S = 300.0
"""How often the watchdog deletes expired logs (:func:`sweep_logs`)."""


def backoff_s(failures: int) -> float:
    """The wait before restart number ``failures`` of a service dying again and again: 0, 2, 4, 8 … s."""
    return 0.0 if failures <= 1 else min(2.0 ** (failures - 1), MAX_BACKOFF_S)


def alert(settings: Settings, service: str, event: str, message: str) -> None:
    """Send a service alert (Discord, when its webhook is set) and record it, delivered or not."""
    from mur.orchestration.alerts import ORANGE, RED, Alert, send

    delivered = False
    if settings.airflow.discord_webhook_url:  # an Airflow Connection is read inside Airflow's tasks only
        title = f"{'🛑' if event == 'fatal' else '🔁'} {service} {'gave up' if event == 'fatal' else event}"
        color = RED if event == "fatal" else ORANGE
        runtime = str(settings.general.runtime_dir)
        delivered = send(Alert(title, "local stack", runtime, reason=message, color=color), settings)
    row: dict[str, Any] = {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "service": service, "event": event}
    row |= {"message": message, "delivered": delivered}
    with open(Path(settings.general.runtime_dir) / ALERTS_FILE, "a") as fh:
        fh.write(json.dumps(row) + "\n")


class Watchdog:
    """Watch one stack's services; :meth:`run` until ``stop`` is set (tests run it in a thread)."""

    def __init__(self, settings: Settings, registry: Callable[[Settings], dict[str, Service]]) -> None:
        self.settings, self.registry = settings, registry
        self.runtime = Path(settings.general.runtime_dir)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.state = read_state(settings)
        self.busy: set[str] = set()

    def save(self, name: str, **values: Any) -> None:
        with self.lock:
            self.state.setdefault(name, {"restarts": 0, "failures": 0}).update(values)
            secret_files.write(self.runtime / STATE_FILE, self.state)  # atomically

    def run(self) -> None:
        swept = 0.0
        while not self.stop.wait(INTERVAL_S):
            self.check()
            if time.monotonic() - swept > SWEEP_S:
                swept = time.monotonic()
                sweep_logs(self.settings)

    def check(self) -> None:
        """One look at every pid file: a dead leader starts a restart (one thread per service)."""
        for pid_file in sorted(p for p in (self.runtime / "pids").glob("*.pid") if p.stem != NAME):
            name = pid_file.stem
            try:
                sid = int(pid_file.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            known = self.state.get(name, {})
            if leader_alive(sid):
                fresh = known.get("sid") != sid or known.get("state") != "running"
                if fresh and name not in self.busy:  # started by someone else (mur up): a clean slate
                    self.save(name, sid=sid, state="running", since=time.time(), failures=0)
                elif known.get("failures") and time.time() - known.get("since", 0) > STABLE_S:
                    self.save(name, failures=0)
            elif name not in self.busy:
                self.busy.add(name)
                threading.Thread(target=self.restart, args=(name, sid), daemon=True).start()

    def restart(self, name: str, sid: int) -> None:
        try:
            with service_lock(self.settings, name, wait=False) as free:
                if not free or not pid_path(self.settings, name).exists():
                    return  # being started or stopped (mur up, mur down): theirs to finish
            failures, announced = int(self.state.get(name, {}).get("failures", 0)), False
            while not self.stop.is_set():
                failures += 1
                if failures > MAX_FAILURES:
                    why = (
                        f"its process (pid {sid}) died again, {MAX_FAILURES} restarts within {STABLE_S:.0f} s"
                    )
                    self.give_up(name, sid, why)
                    return
                wait = backoff_s(failures)
                if not announced:  # once per death; a failed restart says so itself
                    alert(
                        self.settings, name, "died", f"its process (pid {sid}) exited; restart in {wait:g} s"
                    )
                    announced = True
                self.save(name, state="restarting", failures=failures)
                if self.stop.wait(wait):
                    return
                service = self.registry(self.settings).get(name)
                if service is None:  # no longer part of the stack (fewer Ray nodes)
                    self.give_up(name, sid, "no longer in the stack's services")
                    return
                self.save(name, restarts=int(self.state[name]["restarts"]) + 1)
                try:
                    result = start_service(self.settings, service)
                except MurError as exc:
                    alert(self.settings, name, "restart failed", str(exc).splitlines()[0])
                    continue
                self.save(name, state="running", sid=result.pid, since=time.time())
                return
        finally:
            self.busy.discard(name)

    def give_up(self, name: str, sid: int, why: str) -> None:
        if name in self.registry(self.settings):
            stop_service(self.settings, self.registry(self.settings)[name])  # what is left of its session
        pid_path(self.settings, name).unlink(missing_ok=True)
        self.save(name, state="fatal")
        alert(self.settings, name, "fatal", f"{name} left stopped: {why} (mur up starts it again)")


def sweep_logs(settings: Settings, now: float | None = None) -> list[Path]:
    """Delete the log files older than ``MUR_LOG_RETENTION_HOURS`` (by their last write) that nothing writes
    any more: Airflow's task logs (one file per task try) and the logs of ended Ray workers and jobs (Ray's
    log monitor moves them to a session's ``logs/old``); empty folders left go too. Returns what went."""
    cutoff = (now or time.time()) - settings.general.log_retention_hours * 3600
    head = ray_temp_dir(settings)
    roots = [
        airflow_home(settings) / "logs",
        *(p / "session_latest/logs/old" for p in head.parent.glob(f"{head.name}*")),
    ]
    gone = []
    for root in roots:
        for path in sorted(root.rglob("*"), reverse=True):  # files before their folders
            with contextlib.suppress(OSError):
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    gone.append(path)
                elif path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
                    path.rmdir()
    return gone


def service() -> Service:
    """The watchdog as the supervisor runs it (``pids/watchdog.pid``, ``logs/watchdog.log``): with the
    environment of the process that starts it; its process is its health."""
    command = [sys.executable, "-m", "devstack.watchdog"]
    return Service(name=NAME, command=command, cwd=PROJECT_ROOT, stop_timeout_s=10.0)


def _stop_legacy(settings: Settings) -> None:
    """End the watchdog of a stack started before its pid file moved to ``pids/``, and remove that file."""
    path = Path(settings.general.runtime_dir) / LEGACY_PID_FILE
    with contextlib.suppress(OSError, ValueError):
        pid = int(path.read_text())
        if leader_alive(pid):
            terminate(pid, 10.0)
    path.unlink(missing_ok=True)


def start(settings: Settings) -> int:
    """Start the stack's watchdog unless it runs (``mur up``); its pid."""
    _stop_legacy(settings)
    pid = start_service(settings, service()).pid
    assert pid is not None  # a service without a port or URL is never another's
    return pid


def stop(settings: Settings) -> None:
    """Stop the stack's watchdog (``mur down``, before the services): nothing restarts what stops."""
    _stop_legacy(settings)
    stop_service(settings, service())
    (Path(settings.general.runtime_dir) / STATE_FILE).unlink(missing_ok=True)  # restarts count from `mur up`


def main() -> None:
    watchdog = Watchdog(align_settings(get_settings()), stack_services)
    signal.signal(signal.SIGTERM, lambda *_: watchdog.stop.set())
    signal.signal(signal.SIGINT, lambda *_: watchdog.stop.set())
    watchdog.run()


if __name__ == "__main__":
    main()
