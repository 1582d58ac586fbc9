"""``mur up`` without services: settings alignment, start scheduling, the service table, the summary, leftovers."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from devstack import config, first_run, processes, stack, supervisor
from devstack.first_run import AdminResult
from devstack.services import Service, stack_services
from devstack.supervisor import StartResult
from mur.errors import ConfigError, ServiceError
from mur.settings import Settings
from mur.waiting import wait_until


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(_env_file=None, runtime_dir=tmp_path / "runtime", **overrides)


# --- settings ------------------------------------------------------------------------------------------------
def test_urls_follow_their_ports_unless_set(tmp_path: Path) -> None:
    s = config.align_settings(settings_for(tmp_path, mlflow_port=5100, airflow_port=8181), export=False)
    assert s.registry.mlflow_tracking_uri == "http://127.0.0.1:5100"
    assert s.airflow.airflow_url == "http://127.0.0.1:8181"
    assert (
        s.ray.ray_address == "http://127.0.0.1:8265" and s.registry.s3_endpoint_url == "http://127.0.0.1:9000"
    )
    assert s.general.runtime_dir.is_absolute()
    remote = settings_for(tmp_path, mlflow_tracking_uri="http://mlflow.example:5000", mlflow_port=5100)
    assert (
        config.align_settings(remote, export=False).registry.mlflow_tracking_uri
        == "http://mlflow.example:5000"
    )


def test_a_local_url_contradicting_its_port_is_refused(tmp_path: Path) -> None:
    bad = settings_for(tmp_path, mlflow_tracking_uri="http://127.0.0.1:5000", mlflow_port=5100)
    with pytest.raises(ConfigError, match="MUR_MLFLOW_TRACKING_URI"):
        config.align_settings(bad, export=False)


def test_export_reaches_child_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exported = ("MUR_RAY_ADDRESS", "MUR_MLFLOW_TRACKING_URI", "MUR_S3_ENDPOINT_URL", "MUR_AIRFLOW_URL")
    for name in (*exported, "MUR_RUNTIME_DIR", processes.STACK_MARKER):
        monkeypatch.setenv(name, "placeholder")  # monkeypatch restores the original state afterwards
        monkeypatch.delenv(name)
    s = config.align_settings(settings_for(tmp_path, ray_dashboard_port=18265))
    assert os.environ["MUR_RAY_ADDRESS"] == "http://127.0.0.1:18265"
    assert os.environ["MUR_RUNTIME_DIR"] == os.environ[processes.STACK_MARKER] == str(s.general.runtime_dir)


def test_first_training_is_quick_unless_configured_or_asked(tmp_path: Path) -> None:
    assert stack.UpOptions().training_conf(settings_for(tmp_path)) == stack.QUICK_TRAINING
    given = stack.UpOptions(epochs=2, train_days=30).training_conf(settings_for(tmp_path))
    assert given == {"epochs": 2, "train_days": 30, "num_workers": 1}
    configured = settings_for(tmp_path, epochs=1, train_days=30, num_workers=2)  # num_workers: the default
    assert stack.UpOptions().training_conf(configured) == {"num_workers": 1}
    assert stack.UpOptions(epochs=7).training_conf(configured) == {"num_workers": 1, "epochs": 7}


def test_devstack_has_no_code_after_return_or_raise() -> None:
    """Leftover statements after a ``return`` (as once in ``config.stack_secret``) are dead code that misleads."""
    import ast

    found = []
    for path in sorted(Path(config.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for field in ("body", "orelse", "finalbody", "handlers"):
                block = getattr(node, field, None)
                if not isinstance(block, list):
                    continue
                for stmt, after in zip(block, block[1:], strict=False):
                    if isinstance(stmt, ast.Return | ast.Raise | ast.Continue | ast.Break):
                        found.append(f"{path.name}:{after.lineno}")
    assert not found, f"unreachable code at {found}"


# --- the service table ---------------------------------------------------------------------------------------
def test_dash_gets_a_persistent_private_secret_key(tmp_path: Path) -> None:
    s = settings_for(tmp_path)
    first = stack_services(s)["dash"]
    second = stack_services(s)["dash"]
    key = first.env["MUR_SECRET_KEY"]
    assert len(key) >= 32 and second.env["MUR_SECRET_KEY"] == key
    mode = stat.S_IMODE((s.general.runtime_dir / config.SECRETS_FILE).stat().st_mode)
    assert mode == 0o600
    assert first.health_url == f"http://127.0.0.1:{s.dashboard.dash_port}/login"
    assert "MUR_SECRET_KEY" not in stack_services(settings_for(tmp_path, secret_key="k" * 40))["dash"].env


def test_serve_runs_the_keeper_after_ray_and_mlflow(tmp_path: Path) -> None:
    serve = stack_services(settings_for(tmp_path, serve_port=18000))["serve"]
    assert serve.command[1:] == ["-m", "serve_app.keeper"]
    assert set(serve.depends_on) == {"ray", "mlflow"}
    assert serve.health_url == "http://127.0.0.1:18000/healthz" and serve.after_stop is not None


PROCESS_HEALTH = ("redis", "airflow-dag-processor", "airflow-triggerer")


def test_the_table_has_every_service_on_loopback(tmp_path: Path) -> None:
    table = stack_services(settings_for(tmp_path))
    assert {"s3", "mlflow", "ray", "airflow-api-server", "airflow-scheduler", "serve", "dash"} <= set(table)
    assert set(supervisor.CORE_SERVICES) <= set(table)
    for service in table.values():
        assert all(d in table for d in service.depends_on), service.name
        # a check of its own: a URL, else its process (devstack.supervisor.answers)
        assert service.health_url or service.name in PROCESS_HEALTH, f"{service.name} has no health check"
        assert "0.0.0.0" not in service.command, f"{service.name} binds every interface"
        assert (service.health_url or "http://127.0.0.1:").startswith("http://127.0.0.1:")
    ray = table["ray"].command
    assert ray[1:4] == ["start", "--head", "--block"]  # in the foreground, as a container runs it
    assert ray[ray.index("--node-ip-address") + 1] == "127.0.0.1"
    assert ray[ray.index("--dashboard-host") + 1] == "127.0.0.1"


def test_ray_listens_on_loopback_unless_the_environment_opts_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16 #1: Ray's single-node switch is the stack's default (every Ray socket on 127.0.0.1); an
    explicit value in the environment wins, and ``mur up`` passes the switch on to everything it starts."""
    from devstack.config import RAY_LOOPBACK_SWITCH, align_settings

    monkeypatch.delenv(RAY_LOOPBACK_SWITCH, raising=False)
    assert stack_services(settings_for(tmp_path))["ray"].env[RAY_LOOPBACK_SWITCH] == "0"
    monkeypatch.setenv(RAY_LOOPBACK_SWITCH, "1")
    assert stack_services(settings_for(tmp_path))["ray"].env[RAY_LOOPBACK_SWITCH] == "1"
    monkeypatch.delenv(RAY_LOOPBACK_SWITCH)
    monkeypatch.setattr(os, "environ", dict(os.environ))  # what align_settings exports stays in this test
    align_settings(settings_for(tmp_path))  # what `mur up` does first: every service inherits os.environ
    assert os.environ[RAY_LOOPBACK_SWITCH] == "0"


def test_ray_token_auth_is_on_with_one_generated_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22: the stack's head runs with Ray's token auth, a token generated once into the stack's secrets
    file (mode 600) unless RAY_AUTH_TOKEN is given; ``mur up`` exports it to every client it starts; the
    head's health check sends it; S3 keys stay out of the head's environment."""
    import stat

    from devstack.config import RAY_AUTH_SWITCH, RAY_TOKEN_VAR, SECRETS_FILE, align_settings

    monkeypatch.delenv(RAY_AUTH_SWITCH, raising=False)
    monkeypatch.delenv(RAY_TOKEN_VAR, raising=False)
    ray = stack_services(settings_for(tmp_path))["ray"]
    token = ray.env[RAY_TOKEN_VAR]
    assert ray.env[RAY_AUTH_SWITCH] == "token" and len(token) >= 32
    assert ray.health_headers == {"Authorization": f"Bearer {token}"}
    assert stack_services(settings_for(tmp_path))["ray"].env[RAY_TOKEN_VAR] == token  # kept, not renewed
    secrets_file = tmp_path / "runtime" / SECRETS_FILE
    assert token in secrets_file.read_text() and stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert {"AWS_SECRET_ACCESS_KEY", "MUR_S3_SECRET_KEY", "MUR_MLFLOW_PASSWORD"} <= set(ray.env_unset)
    assert "AWS_SECRET_ACCESS_KEY" not in ray.env
    serve_secrets = Path(ray.env["MUR_SECRETS_DIR"])  # issue 41: Serve's read-only MLflow account, no S3 keys
    assert sorted(p.name for p in serve_secrets.iterdir()) == ["mur_mlflow_password", "mur_mlflow_username"]
    assert (serve_secrets / "mur_mlflow_username").read_text() == "mur-serve"

    monkeypatch.setenv(RAY_TOKEN_VAR, "x" * 40)  # a token from the environment wins
    assert stack_services(settings_for(tmp_path))["ray"].env[RAY_TOKEN_VAR] == "x" * 40
    monkeypatch.delenv(RAY_TOKEN_VAR)

    monkeypatch.setattr(os, "environ", dict(os.environ))
    aligned = align_settings(settings_for(tmp_path))  # `mur up`: the clients it starts agree with the head
    assert os.environ[RAY_AUTH_SWITCH] == "token" and os.environ[RAY_TOKEN_VAR] == token
    assert aligned.ray.headers() == {"Authorization": f"Bearer {token}"}
    secrets_dir = Path(os.environ["MUR_SECRETS_DIR"])
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    assert (secrets_dir / "mur_s3_secret_key").read_text() == aligned.registry.s3_secret_key
    assert aligned.registry.s3_secret_key != "minioadmin" and len(aligned.registry.s3_access_key) >= 32
    assert (
        (secrets_dir / "mur_mlflow_username").read_text() == aligned.registry.mlflow_username == "mur-trainer"
    )
    assert stat.S_IMODE((secrets_dir / "mur_mlflow_password").stat().st_mode) == 0o600

    monkeypatch.setenv(RAY_AUTH_SWITCH, "disabled")  # only for tests of the refusal itself
    assert RAY_TOKEN_VAR not in stack_services(settings_for(tmp_path))["ray"].env


def test_airflow_components_have_compose_health_checks(tmp_path: Path) -> None:
    table = stack_services(settings_for(tmp_path, airflow_port=18080))
    assert table["airflow-scheduler"].health_url == "http://127.0.0.1:18974/health"
    assert (
        table["airflow-scheduler"].env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST"]
        == "127.0.0.1"
    )
    for name in ("airflow-dag-processor", "airflow-triggerer"):
        # judged by their own process, never through the API server (issue 42: a dead triggerer looked healthy)
        assert table[name].health_url is None and table[name].port is None
        assert table[name].command[1] == name.removeprefix("airflow-")
    # issue 22: no Airflow log server (it binds every interface); the API server reads the local log files
    assert table["airflow-scheduler"].command[1:] == ["scheduler", "--skip-serve-logs"]
    assert table["airflow-triggerer"].command[1:] == ["triggerer", "--skip-serve-logs"]


# --- start scheduling ----------------------------------------------------------------------------------------
def fake_registry() -> dict[str, Service]:
    def svc(name: str, *deps: str) -> Service:
        return Service(name=name, command=["true"], port=1, depends_on=deps)

    return {
        s.name: s
        for s in (
            svc("s3"),
            svc("mlflow", "s3"),
            svc("ray"),
            svc("ray-node-2", "ray"),
            svc("api"),
            svc("scheduler", "api"),
            svc("serve", "ray", "mlflow"),
            svc("dash", "serve", "api"),
        )
    }


class FakeStarts:
    """Records start/end times and concurrency of fake service starts."""

    def __init__(self, fail: dict[str, int] | None = None) -> None:
        self.lock = threading.Lock()
        self.active: set[str] = set()
        self.events: list[tuple[str, str, frozenset[str]]] = []
        self.fail = dict(fail or {})
        self.max_active = 0

    def __call__(self, settings: Settings, service: Service, *, progress: object = None) -> StartResult:
        with self.lock:
            self.active.add(service.name)
            self.max_active = max(self.max_active, len(self.active))
            self.events.append(("start", service.name, frozenset(self.active)))
        time.sleep(0.05)
        with self.lock:
            self.active.discard(service.name)
            self.events.append(("end", service.name, frozenset(self.active)))
            if self.fail.get(service.name, 0) > 0:
                self.fail[service.name] -= 1
                raise ServiceError(f"{service.name} did not answer")
        return StartResult(service.name, "started", 1, 0.05)


def run_start_all(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake: FakeStarts, parallel: int = 3
) -> list[str]:
    monkeypatch.setattr(supervisor, "start_service", fake)
    lines: list[str] = []
    results = stack.start_all(
        settings_for(tmp_path),
        parallel=parallel,
        say=lines.append,
        registry_factory=lambda _s: fake_registry(),
    )
    return [r.name for r in results]


def test_dependencies_first_ray_alone_parallel_bounded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = FakeStarts()
    started = run_start_all(monkeypatch, tmp_path, fake, parallel=2)
    assert set(started) == set(fake_registry())
    ends = {name: i for i, (kind, name, _) in enumerate(fake.events) if kind == "end"}
    starts = {name: i for i, (kind, name, _) in enumerate(fake.events) if kind == "start"}
    for name, service in fake_registry().items():
        assert all(ends[dep] < starts[name] for dep in service.depends_on), name
    assert fake.events[0][:2] == ("start", "ray")  # the exclusive ones first, alone: the head, then its node
    for node in ("ray", "ray-node-2"):
        assert all(active == {node} for kind, name, active in fake.events if kind == "start" and name == node)
    assert fake.max_active <= 2


def test_ray_gets_one_more_try_and_other_failures_stop_the_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = FakeStarts(fail={"ray": 1, "ray-node-2": 1})  # the head and a worker node: one more try each
    assert "serve" in run_start_all(monkeypatch, tmp_path, fake)
    attempts = [n for kind, n, _ in fake.events if kind == "start"]
    assert attempts.count("ray") == 2 and attempts.count("ray-node-2") == 2

    fake = FakeStarts(fail={"mlflow": 1})
    with pytest.raises(ServiceError, match="mlflow did not answer"):
        run_start_all(monkeypatch, tmp_path, fake)
    started = {n for kind, n, _ in fake.events if kind == "start"}
    assert "serve" not in started and "dash" not in started  # nothing that needs mlflow was started


# --- summary and leftovers -----------------------------------------------------------------------------------
def test_secrets_are_shown_only_when_just_created(tmp_path: Path) -> None:
    s = config.align_settings(settings_for(tmp_path), export=False)
    report = stack.UpReport(s, admin=AdminResult("admin", created=True, password="pw-123", token="mur_x"))
    text = "\n".join(stack.summary_lines(report))
    for label in ("Dashboard", "API docs", "Airflow UI", "MLflow UI", "Ray dashboard"):
        assert label in text
    assert "pw-123" in text and "mur_x" in text
    assert "`mur ray token`" in text and str(s.ray.ray_auth_token) not in text  # how, never the token itself
    later = stack.UpReport(s, admin=AdminResult("admin", created=False))
    text = "\n".join(stack.summary_lines(later))
    assert "pw-123" not in text and "mur users set-password admin" in text and "mur tokens create" in text
    # a forecast says when its candle closes (target_time is that candle's open)
    answer = {"forecast": 1.5, "last_close": 1.0, "model_version": 2, "target_time": "2024-11-04T07:00:00Z"}
    served = stack.UpReport(s, forecasts={"btc_usdt": answer | {"close_time": "2024-11-04T08:00:00Z"}})
    assert "model v2   closes 2024-11-04T08:00:00Z" in "\n".join(stack.summary_lines(served))


def test_leftovers_are_the_processes_carrying_the_stack_marker(tmp_path: Path) -> None:
    s = config.align_settings(settings_for(tmp_path), export=False)
    env = {**os.environ, processes.STACK_MARKER: str(s.general.runtime_dir)}
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], env=env)
    try:
        wait_until(
            lambda: child.pid in [pid for pid, _ in processes.leftover_processes(s)],
            what="the marked process among the leftovers",
            timeout_s=10,
            interval_s=0.1,
        )
    finally:
        child.kill()
        child.wait()
    assert child.pid not in [pid for pid, _ in processes.leftover_processes(s)]


# --- logs of running services --------------------------------------------------------------------------------
CHATTY = """
import socket, sys, time
server = socket.socket()
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen()
line = "x" * 99 + "\\n"
for _ in range(20):
    sys.stdout.write(line * 100)
    sys.stdout.flush()
    time.sleep(0.05)
print("DONE", flush=True)
time.sleep(600)
"""


def _writers_of(log: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(supervisor.LOG_WRITER).encode() in cmd and str(log).encode() in cmd:
                found.append(int(entry.name))
    return found


def test_a_running_services_log_is_rotated_by_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16 #19: the log of a service that keeps writing stays bounded while it runs, not only at start."""
    limit = 32 * 1024
    monkeypatch.setattr(supervisor, "LOG_ROTATE_BYTES", limit)
    s = settings_for(tmp_path)
    with socket.socket() as free:  # a free port for the health check; the service binds it
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    chatty = Service(name="chatty", command=[sys.executable, "-c", CHATTY, str(port)], port=port)
    log = supervisor.log_path(s, "chatty")
    started = supervisor.start_service(s, chatty)
    try:
        assert started.action == "started"
        rotated = log.with_name(log.name + ".1")

        def written() -> bool:  # both files: rotation renames the log, and a new one follows a moment later
            # the service's last line (the log's header quotes the command, `print("DONE"…` included)
            return b"\nDONE\n" in b"".join(p.read_bytes() for p in (rotated, log) if p.exists())

        wait_until(written, what="the service's output in its log", timeout_s=30, interval_s=0.1)
        assert supervisor.running_pid(s, "chatty") == started.pid  # rotated under a running service
        assert rotated.exists(), "the log was never rotated while the service ran"
        slack = 64 * 1024  # one read chunk of the writer
        assert log.stat().st_size <= limit + slack and rotated.stat().st_size <= limit + slack
        assert not log.with_name(log.name + ".2").exists()  # LOG_BACKUPS = 1: the oldest output is dropped
        assert b"x" * 99 in rotated.read_bytes()  # what was written is there, in order, not lost
    finally:
        supervisor.stop_service(s, chatty)
    # the writer exits at EOF once the service is gone
    wait_until(lambda: not _writers_of(log), what="the log writer to exit", timeout_s=10, interval_s=0.1)


# --- a start that times out says why ---------------------------------------------------------------------------
SILENT = "import time; time.sleep(600)"


def test_a_start_that_times_out_reports_the_services_diagnosis(tmp_path: Path) -> None:
    """A service that never answers its health check fails with its log's tail and its own diagnosis (for
    Serve: what /healthz answers, Serve's proxy and replica states, HAProxy's stderr)."""
    s = settings_for(tmp_path)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    silent = Service(
        name="silent",
        command=[sys.executable, "-c", SILENT],
        port=port,
        start_timeout_s=1.0,
        diagnose=lambda: "    the proxy is DRAINING",
    )
    try:
        with pytest.raises(
            ServiceError, match=r"(?s)silent did not answer.*silent diagnosis:\n    the proxy is DRAINING"
        ):
            supervisor.start_service(s, silent)
    finally:
        supervisor.stop_service(s, silent)


def test_serve_diagnosis_without_serve_names_what_it_could_not_reach(tmp_path: Path) -> None:
    from devstack.provision import serve_diagnosis

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    s = config.align_settings(settings_for(tmp_path, serve_port=port, ray_dashboard_port=port), export=False)
    node = tmp_path / "hap" / ("a" * 56)
    node.mkdir(parents=True)
    (node / "admin.sock.1.1.stderr.log").write_text("[ALERT] Starting frontend http: cannot bind socket\n")
    text = serve_diagnosis(s, tmp_path / "hap")
    assert f"GET http://127.0.0.1:{port}/healthz: ConnectError" in text
    assert "Serve's state: unavailable" in text
    assert "cannot bind socket" in text


# --- stop order ----------------------------------------------------------------------------------------------
SLOW_TO_STOP = """
import signal, socket, sys, time
server = socket.socket()
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen()
def stop(*_):
    with open(sys.argv[2], "a") as events:
        events.write(f"{sys.argv[3]} term {time.time()}\\n")
    time.sleep(1.5)  # long beside the few ms between the two SIGTERMs, even on a loaded machine
    with open(sys.argv[2], "a") as events:
        events.write(f"{sys.argv[3]} exit {time.time()}\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
time.sleep(600)
"""


def _free_port() -> int:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        return int(free.getsockname()[1])


def test_the_stack_stops_in_waves_and_ray_after_the_scheduler(tmp_path: Path) -> None:
    registry = stack_services(settings_for(tmp_path))
    order = list(reversed(supervisor.plan(registry, None, with_deps=False)))
    waves = supervisor.stop_waves(registry, order)
    assert [name for wave in waves for name in wave] == order
    assert waves[1] == ["serve", "airflow-triggerer", "airflow-dag-processor", "airflow-scheduler"]
    assert waves[2] == ["airflow-api-server", "ray", "mlflow"] and waves[-1] == ["s3", "redis"]
    for (
        wave
    ) in waves:  # nothing in a wave depends on another of its services (dependents are in earlier ones)
        assert not {dep for name in wave for dep in registry[name].depends_on} & set(wave)


def test_down_stops_a_wave_side_by_side_before_what_it_depends_on(tmp_path: Path) -> None:
    s = settings_for(tmp_path)
    events = tmp_path / "events.txt"
    registry = {}
    for name, deps in (("base", ()), ("left", ("base",)), ("right", ("base",))):
        port = _free_port()
        command = [sys.executable, "-c", SLOW_TO_STOP, str(port), str(events), name]
        registry[name] = Service(name=name, command=command, port=port, depends_on=deps)
    supervisor.up(s, services=registry)
    results = supervisor.down(s, services=registry)
    assert [(r.name, r.action) for r in results] == [
        ("right", "stopped"),
        ("left", "stopped"),
        ("base", "stopped"),
    ]
    seen = [line.split() for line in events.read_text().splitlines()]
    at = {(name, what): float(t) for name, what, t in seen}
    # the two dependents both got SIGTERM before either had exited; base only after both had
    assert max(at["left", "term"], at["right", "term"]) < min(at["left", "exit"], at["right", "exit"])
    assert at["base", "term"] > max(at["left", "exit"], at["right", "exit"])


def test_waiting_for_forecasts_names_the_pairs_not_served_when_time_runs_out(tmp_path: Path) -> None:
    s = settings_for(tmp_path, serve_port=_free_port())  # nothing listens there: no pair is ever served
    said: list[str] = []
    with pytest.raises(
        ServiceError, match=r"did not answer forecasts for btc_usdt, eth_usdt within 1 s"
    ) as info:
        first_run.wait_for_forecasts(  # a run still going (not followed): no registry look-up
            s, ["btc_usdt", "eth_usdt"], "mur_x", timeout_s=1, say=said.append, run_id="manual__1"
        )
    assert "mur status" in str(info.value) and said == []


class TrainingRuns:
    """Airflow's training DAG as ``wait_for_forecasts`` reads it: the triggered run has succeeded; the hour's
    scheduled run is in flight for the first ``in_flight`` polls."""

    def __init__(self, in_flight: int) -> None:
        self.in_flight, self.polls = in_flight, 0

    def dag_runs(self, dag_id: str, states: list[str], limit: int) -> list[dict[str, str]]:
        self.polls += 1
        return [{"dag_run_id": "scheduled__1"}] if self.polls <= self.in_flight else []

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, str]:
        return {"state": "success" if run_id == "manual__1" else "running"}

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, str]]:
        return []


def test_a_pair_the_gate_refused_waits_for_the_runs_in_flight_then_fails_saying_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At real speed, `mur up` gives up on a pair without a champion only once no run of the DAG that could
    still train it is in flight (the hour's scheduled run trains with the settings and often qualifies)."""
    s = settings_for(tmp_path, serve_port=_free_port())  # nothing listens there: no pair is ever served
    monkeypatch.setattr(first_run, "pairs_without_champion", lambda settings, pairs: ["eth_usdt"])
    runs, said = TrainingRuns(in_flight=1), list[str]()
    with pytest.raises(ServiceError, match="eth_usdt has no champion") as info:
        first_run.wait_for_forecasts(
            s,
            ["eth_usdt"],
            "mur_x",
            timeout_s=60,
            say=said.append,
            airflow=runs,  # type: ignore[arg-type]
            run_id="manual__1",
        )
    assert runs.polls == 2  # not on the first poll, while the scheduled run was in flight
    assert (
        "  eth_usdt: no champion yet (refused by the gate); waiting for the training run(s) in flight" in said
    )
    assert "--train-days 365" in str(info.value) and "--epochs" not in str(info.value)


def test_a_service_whose_normal_end_is_a_kill_is_reported_stopped(tmp_path: Path) -> None:
    """SeaweedFS's filer would wait 15 s after SIGTERM (devstack/services.py): a service marked
    ``killed_is_stopped`` is killed at its stop timeout and reported stopped; any other one, killed."""
    s = settings_for(tmp_path)
    deaf = "import signal, socket, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    deaf += "server = socket.socket(); server.bind(('127.0.0.1', int(sys.argv[1]))); server.listen(); time.sleep(600)"
    registry = {}
    for name, normal in (("weedlike", True), ("stuck", False)):
        port = _free_port()
        command = [sys.executable, "-c", deaf, str(port)]
        registry[name] = Service(name, command, port=port, stop_timeout_s=0.5, killed_is_stopped=normal)
    supervisor.up(s, services=registry)
    results = {r.name: r.action for r in supervisor.down(s, services=registry)}
    assert results == {"weedlike": "stopped", "stuck": "killed"}
    assert not any(row.healthy for row in supervisor.status(s, list(registry), services=registry))
