"""The watchdog (issue 42, item 1) on small real processes: a killed service comes back by itself, counted
and alerted; one that keeps dying backs off and ends fatal; health is the service's own process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import supervisor, watchdog
from devstack.health import latest_alerts
from devstack.services import Service
from mur.settings import Settings
from mur.waiting import wait_until

pytestmark = pytest.mark.fast

LISTENER = """
import socket, sys, time
server = socket.socket(); server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1]))); server.listen()
time.sleep(600)
"""


def test_backoff_grows_from_an_immediate_restart() -> None:
    assert [watchdog.backoff_s(n) for n in range(1, 6)] == [0.0, 2.0, 4.0, 8.0, 16.0]
    assert watchdog.backoff_s(30) == watchdog.MAX_BACKOFF_S


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setattr(watchdog, "INTERVAL_S", 0.1)
    monkeypatch.delenv("MUR_DISCORD_WEBHOOK_URL", raising=False)
    return Settings(_env_file=None, runtime_dir=tmp_path / "runtime")


@contextlib.contextmanager
def watching(settings: Settings, service: Service) -> Iterator[watchdog.Watchdog]:
    dog = watchdog.Watchdog(settings, lambda _s: {service.name: service})
    thread = threading.Thread(target=dog.run, daemon=True)
    thread.start()
    try:
        yield dog
    finally:
        dog.stop.set()
        thread.join(timeout=10)
        supervisor.stop_service(settings, service)


def test_a_killed_service_comes_back_by_itself_counted_and_alerted(settings: Settings) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    service = Service(name="toy", command=[sys.executable, "-c", LISTENER, str(port)], port=port)
    first = supervisor.start_service(settings, service).pid
    assert first is not None
    with watching(settings, service):
        os.kill(first, signal.SIGKILL)

        def back() -> supervisor.ServiceStatus | None:
            (row,) = supervisor.status(settings, services={"toy": service})
            return row if row.state == "running" and row.healthy and row.pid != first else None

        row = wait_until(back, what="toy restarted and healthy", timeout_s=30, interval_s=0.1)
        assert row.restarts == 1
        (died,) = latest_alerts(settings)
        assert died["service"] == "toy" and died["event"] == "died" and died["delivered"] is False


def test_a_service_that_keeps_dying_backs_off_and_ends_fatal(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(watchdog, "MAX_FAILURES", 3)
    monkeypatch.setattr(watchdog, "backoff_s", lambda n: waits.append(0.2 * (n - 1)) or waits[-1])  # type: ignore[func-returns-value]
    # no port, no URL: its process is its health; it dies half a second after each start
    service = Service(name="flaky", command=[sys.executable, "-c", "import time; time.sleep(0.5)"])
    assert supervisor.start_service(settings, service).action == "started"
    with watching(settings, service):

        def fatal() -> supervisor.ServiceStatus | None:
            (row,) = supervisor.status(settings, services={"flaky": service})
            return row if row.state == "fatal" else None

        row = wait_until(fatal, what="flaky given up", timeout_s=30, interval_s=0.1)
        assert row.restarts == 3 and row.pid is None and waits == [0.0, 0.2, 0.4]
        assert not supervisor.pid_path(settings, "flaky").exists()
        events = [a["event"] for a in latest_alerts(settings, limit=20) if a["service"] == "flaky"]
        assert events[-1] == "fatal" and events.count("died") == 3
    # mur up starts it again: a clean slate
    assert supervisor.start_service(settings, service).action == "started"
    supervisor.stop_service(settings, service)


def test_health_is_the_process_itself_not_another_service(settings: Settings) -> None:
    """A service without a port or URL is healthy while its main process runs, never 'external'."""
    service = Service(name="quiet", command=[sys.executable, "-c", "import time; time.sleep(600)"])
    assert supervisor.status(settings, services={"quiet": service})[0].state == "stopped"
    pid = supervisor.start_service(settings, service).pid
    try:
        assert supervisor.status(settings, services={"quiet": service})[0].healthy
        os.kill(pid or 0, signal.SIGKILL)
        wait_until(
            lambda: not supervisor.status(settings, services={"quiet": service})[0].healthy,
            what="quiet seen dead",
            timeout_s=10,
            interval_s=0.1,
        )
    finally:
        supervisor.stop_service(settings, service)


KEEPER = """
import socket, subprocess, sys, time
port, listener, pid_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
try:
    socket.create_connection(("127.0.0.1", port), timeout=1).close()
except OSError:  # what it keeps running lives outside its session, as Serve on the Ray cluster does
    child = subprocess.Popen([sys.executable, "-c", listener, str(port)], start_new_session=True)
    open(pid_file, "w").write(str(child.pid))
time.sleep(600)
"""


def test_a_dead_keeper_is_restarted_although_what_it_keeps_still_answers(
    settings: Settings, tmp_path: Path
) -> None:
    """The ``serve`` keeper's case (seen in the end-to-end fault matrix): its health is Serve's port, which
    Ray answers after the keeper died. A service of ours whose port still answers is restarted, never taken
    for another instance (``external``) and left dead."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    kept = tmp_path / "kept.pid"
    command = [sys.executable, "-c", KEEPER, str(port), LISTENER, str(kept)]
    service = Service(name="keeper", command=command, port=port)
    first = supervisor.start_service(settings, service).pid
    assert first is not None
    try:
        with watching(settings, service):
            os.kill(first, signal.SIGKILL)

            def back() -> supervisor.ServiceStatus | None:
                (row,) = supervisor.status(settings, services={"keeper": service})
                return row if row.state == "running" and row.pid not in (None, first) else None

            row = wait_until(back, what="the keeper restarted", timeout_s=30, interval_s=0.1)
            assert row.restarts == 1 and row.healthy
    finally:
        os.kill(int(kept.read_text()), signal.SIGKILL)


def test_mur_down_stops_a_watchdog_started_before_its_pid_file_moved(settings: Settings) -> None:
    """A stack started by older code has its watchdog's pid in ``{runtime_dir}/watchdog.pid``, not in
    ``pids/``: ``mur down`` (after the code was updated) ends that watchdog too, instead of leaving it behind
    to restart services beside the next ``mur up``'s."""
    old = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    runtime = Path(settings.general.runtime_dir)
    runtime.mkdir(parents=True)
    (runtime / watchdog.LEGACY_PID_FILE).write_text(f"{old.pid}\n")
    try:
        watchdog.stop(settings)
        assert old.wait(timeout=5) is not None
        assert not (runtime / watchdog.LEGACY_PID_FILE).exists()
    finally:
        old.kill()


def test_expired_logs_of_ended_work_are_swept(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Airflow's task logs and ended Ray workers' logs (``logs/old``, head and worker nodes) older than
    ``log_retention_hours`` go, with the folders they leave empty; newer ones and live workers' logs stay."""
    import time

    from devstack.airflow import airflow_home
    from devstack.services import ray_temp_dir

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    settings = settings.replace(log_retention_hours=1.0)
    task = airflow_home(settings) / "logs/dag_id=mur_training/run_id=r1/task_id=train/attempt=1.log"
    recent = task.with_name("attempt=2.log")
    ended = [ray_temp_dir(settings, n) / "session_latest/logs/old/worker-1.out" for n in (1, 2)]
    live = ray_temp_dir(settings) / "session_latest/logs/worker-2.out"
    for path in (task, recent, *ended, live):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("log\n")
    old = time.time() - 2 * 3600
    for path in (task, *ended, live):
        os.utime(path, (old, old))
    assert sorted(watchdog.sweep_logs(settings)) == sorted([task, *ended])
    assert recent.exists() and live.exists() and not any(ended[0].parent.iterdir())
    assert watchdog.sweep_logs(settings, now=time.time() + 2 * 3600) == [recent]
    assert not (airflow_home(settings) / "logs/dag_id=mur_training").exists()


def test_a_tls_port_check_without_its_certificate_never_connects(tmp_path: Path) -> None:
    """A TLS check (Redis's) whose certificate files are missing fails before it connects: a bare connect to
    Redis's TLS port is logged as an error. Without TLS the same port counts as open."""
    from devstack.health import port_open

    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        port = server.getsockname()[1]
        assert not port_open("127.0.0.1", port, tls=tmp_path / "missing")
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing connected
        assert port_open("127.0.0.1", port)
        server.accept()[0].close()  # the plain check did
