"""The whole stack, end to end, exactly as a user runs it: ``mur up`` → forecast → dashboard → the market loop
turning → ``mur up`` again → ``mur down``.

One test, on a private stack: its own runtime dir (pids, logs, S3 data, Airflow home), its own PostgreSQL
databases (dropped at the end) and its own ports (every service shifted by one random offset), so it neither
sees nor disturbs a developer's running stack or another test session. Training is tiny (2 pairs, 60 days,
1 epoch, hidden size 8, one Ray worker, one training slot: a run trains both pairs in one Ray job) and set
through ``MUR_*``, so the hourly schedule and the triggered run ask for the same model (the second reuses the
first's).

Checked on the way: the first ``mur up`` ends with the URLs, a generated admin password and a demo token
(printed once) and a served forecast per pair; the token gets a forecast from the API; the dashboard's login
page answers and the admin logs in; a second ``mur up`` on the running stack changes nothing and prints no
secret; ``mur down`` leaves no process behind (no live session from the pid files, no process carrying the
runtime dir in its environment, every port closed) and pauses the market clock. The stack starts once: what
a restart keeps is checked where it lives (the clock resuming where ``mur down`` paused it:
tests/unit/test_clock.py; S3's disk mirror: tests/integration/test_services.py; Serve loading the registry's
champions at deploy: tests/serve).

The market runs at speed 120 (a market hour every 30 s) from 2024-08-05 00:00, at the start of the August 2024
crash, so within minutes the test sees the loop turn (issue "the loop turns offline"): new candles arriving,
DAG runs with advancing market window ends and new registered versions, a champion change hot-reloaded by
Serve without a failed request, forecasts resolved in ``/v1/track-record``, ``/metrics`` scraped and parsed,
and a drift alert delivered to a local Discord stand-in with a retraining requested through Airflow.

Then the fault matrix (issue 42, docs/services.md "Faults"), under the same load: each service's main process
killed in turn (``kill -9``), then the API's Serve replica, then every PostgreSQL connection of the product's
database: each comes back by itself (the stack's watchdog, Ray Serve's controller, the pools), each dead service
leaves an alert, and afterwards the loop turns on (a training of a later market hour, a new forecast hour)
with no forecast hour missing or recorded twice, every failed request answered with JSON and never charged.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import pytest
from discord_stub import DiscordStub
from psycopg2 import sql
from ray_listeners import listeners, marked_processes, open_listeners
from stack_ports import (
    FIRST_STACK_OFFSET,
    SECOND_STACK_OFFSET,
    all_ports,
    port_free,
    remove_temp_files,
    shifted_ports,
)

from mur.errors import ServiceError
from mur.settings import PROJECT_ROOT, Settings
from mur.waiting import WaitTimeout, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.service_start, pytest.mark.timeout(3600)]
"""``service_start``: one rerun when the first ``mur up`` fails to start a service (tests/conftest.py)."""

PAIRS = ("btc_usdt", "eth_usdt")
MUR = str(PROJECT_ROOT / ".venv" / "bin" / "mur")
CLOCK_START = "2024-08-05T00:00:00Z"
"""Calm weeks behind (the training windows), the 2024-08-05 crash ahead. The drift alert is the last part of the
loop to turn: BTC's |log return| over the last 24 h first crosses both thresholds below (PSI > 0.5, KS p < 0.001)
at the 05:00 report, whenever the clock started, so every market hour before the crash only adds an hourly
training (on 2026-11-24 a start at 21:00 the evening before made the test 90 s longer)."""
CLOCK_SPEED = 120
LOOP_BUDGET_S = 1200
"""Wall seconds the loop checks may take (40 market hours at speed 120; a deadline, not a wait: the loop is seen
turning in ~5 minutes on a quiet machine, in 810 s in a CI run at 6.5 M steps/s where a training run took 6)."""
PASSWORD_LINE = re.compile(r"^\s+password\s+(\S+)\s*$", re.M)
TOKEN_LINE = re.compile(r"^\s+API token\s+(mur_\S+)\s*$", re.M)


# --- a private stack ---------------------------------------------------------------------------------------
def pick_offset() -> int:
    """An offset that moves every port of the stack onto a free one.

    8700-13100: no shifted port lands on a default one (a developer's stack) and Ray's dashboard agent
    (52365 + offset) stays above Linux's ephemeral range (32768-60999) and below 65536; none lands on a port
    of the two shared test stacks that infra/test.sh runs beside this test.
    """
    taken = set(all_ports(0)) | set(all_ports(FIRST_STACK_OFFSET)) | set(all_ports(SECOND_STACK_OFFSET))
    for _ in range(50):
        offset = random.randrange(8700, 13100, 7)
        ports = all_ports(offset)
        if taken.isdisjoint(ports) and all(port_free(p) for p in ports):
            return offset
    raise RuntimeError("no free set of ports found")


def stack_env(runtime_dir: Path, suffix: str, offset: int, webhook: str) -> dict[str, str]:
    """Environment of every ``mur`` call of the test: private runtime dir, databases, ports; tiny training;
    a fast market clock; alerts to the local Discord stand-in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MUR_", "AIRFLOW", "RAY_"))}
    env.update(shifted_ports(offset))
    env.update(
        {
            "MUR_ENV": "development",
            "MUR_RUNTIME_DIR": str(runtime_dir),
            "MUR_PG_DATABASE": f"mur_e2e_{suffix}",
            "MUR_MLFLOW_DATABASE": f"mlflow_e2e_{suffix}",
            "MUR_AIRFLOW_DATABASE": f"airflow_e2e_{suffix}",
            "MUR_PAIRS": json.dumps(list(PAIRS)),
            "MUR_EPOCHS": "1",
            "MUR_HIDDEN_SIZE": "8",
            "MUR_NUM_LAYERS": "1",
            "MUR_TRAIN_DAYS": "60",
            "MUR_NUM_WORKERS": "1",
            "MUR_MAX_PARALLEL_TRAININGS": "1",  # a run's pairs in one Ray job (batches over slots: test_many_pairs)
            # a training every 4 market hours (2 min here), monitoring every hour: hourly trainings at this clock
            # ran back to back, the most CPU any part of the test suite took (2026-11-26: ~800 of ~2,600 CPU-s)
            "MUR_TRAIN_EVERY_HOURS": "4",
            "MUR_SERVE_MAX_REPLICAS": "1",
            "MUR_REGISTRY_POLL_S": "5",
            "MUR_JOB_POLL_S": "2",  # a training task resumes ~4 s sooner on average (tests/conftest.py)
            "MUR_MARKET_REFRESH_S": "5",
            "MUR_CLOCK_START": CLOCK_START,
            "MUR_CLOCK_SPEED": str(CLOCK_SPEED),
            "MUR_DEFAULT_MONTHLY_QUOTA": "100000",
            "MUR_DISCORD_WEBHOOK_URL": webhook,
            # drift over the last day against the champion's window: the crash's first hours cross it
            "MUR_MONITOR_DRIFT_HOURS": "24",
            "MUR_MONITOR_PSI_ABOVE": "0.5",
            "MUR_MONITOR_KS_P_BELOW": "0.001",
            "NO_PROXY": "127.0.0.1,localhost",
        }
    )
    return env


def run_mur(env: dict[str, str], *args: str, timeout_s: float = 1800) -> subprocess.CompletedProcess[str]:
    """Run ``mur ARGS`` like a user would; its output is echoed into the test log."""
    began = time.monotonic()
    proc = subprocess.run(
        [MUR, *args], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout_s
    )
    print(f"\n$ mur {' '.join(args)}   (exit {proc.returncode}, {time.monotonic() - began:.0f} s)")
    print(proc.stdout)
    print(proc.stderr)
    return proc


def _settings(env: dict[str, str]) -> Settings:
    from devstack.stack import align_settings

    overrides = {k[4:].lower(): v for k, v in env.items() if k.startswith("MUR_")}
    return align_settings(Settings(_env_file=None, **overrides), export=False)


def drop_databases(settings: Settings) -> None:
    conn = psycopg2.connect(settings.db.dsn("postgres"), connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for name in (settings.db.pg_database, settings.db.mlflow_database, settings.db.airflow_database):
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        conn.close()


def live_sessions(settings: Settings) -> dict[str, list[int]]:
    """Services whose pid file names a session with live processes."""
    from devstack.supervisor import session_members

    found = {}
    for pid_file in (Path(settings.general.runtime_dir) / "pids").glob("*.pid"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            members = session_members(int(pid_file.read_text().split()[0]))
            if members:
                found[pid_file.stem] = members
    return found


def kill_leftovers(settings: Settings) -> None:
    """Safety net: never leave the private stack running, whatever failed."""
    from devstack.stack import leftover_processes

    for pid, _ in leftover_processes(settings):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def discord() -> Iterator[DiscordStub]:
    stub = DiscordStub()
    yield stub
    stub.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, discord: DiscordStub) -> Iterator[dict[str, Any]]:
    """The private stack's environment and Settings; at the end: down, kill leftovers, drop the databases."""
    try:
        psycopg2.connect(Settings(_env_file=None).db.dsn("postgres"), connect_timeout=5).close()
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    if not Path(MUR).exists():
        pytest.skip(f"{MUR} is missing: run bash infra/install.sh")
    runtime_dir = tmp_path_factory.mktemp("e2e") / "runtime"
    env = stack_env(runtime_dir, uuid.uuid4().hex[:8], pick_offset(), discord.url)
    stacks = [(env, _settings(env))]  # the restore drill adds the restored stack
    try:
        yield {"env": env, "settings": stacks[0][1], "stacks": stacks}
    finally:
        for env, settings in stacks:
            with contextlib.suppress(Exception):
                if live_sessions(settings):
                    run_mur(env, "down", timeout_s=300)
            kill_leftovers(settings)
            drop_databases(settings)
            remove_temp_files(settings)  # Ray's temp dirs, SeaweedFS's sockets, HAProxy's dir: in /tmp


# --- checks ------------------------------------------------------------------------------------------------
def forecast(settings: Settings, token: str, pair: str) -> httpx.Response:
    return httpx.get(
        f"{settings.serving.url}/v1/forecast/{pair}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        trust_env=False,
    )


def champions(settings: Settings, token: str) -> dict[str, int]:
    response = httpx.get(
        f"{settings.serving.url}/v1/models",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        trust_env=False,
    )
    assert response.status_code == 200, response.text
    return {m["pair"]: m["version"] for m in response.json()["models"]}


def dashboard_login(settings: Settings, username: str, password: str) -> None:
    """The login page answers, the admin logs in, and a protected page then opens."""
    base = f"http://127.0.0.1:{settings.dashboard.dash_port}"
    with httpx.Client(base_url=base, timeout=30, trust_env=False) as client:
        page = client.get("/login")
        assert page.status_code == 200 and "Log in" in page.text
        csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text)
        assert csrf, "no CSRF field on the login page"
        wrong = client.post(
            "/login", data={"csrf_token": csrf.group(1), "username": username, "password": password + "x"}
        )
        assert wrong.status_code == 401
        csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', wrong.text)
        assert csrf
        done = client.post(
            "/login", data={"csrf_token": csrf.group(1), "username": username, "password": password}
        )
        assert done.status_code in (302, 303), done.text[:500]
        protected = client.get("/forecast")
        assert protected.status_code == 200, f"after login /forecast answered {protected.status_code}"


def assert_all_running(env: dict[str, str]) -> list[dict[str, Any]]:
    """``mur status``: every service running with a pid, and healthy. A heartbeat (the DAG processor's, the
    triggerer's) can lag while the machine is saturated (this test runs beside the other services-tier runs),
    so the status is asked again, for up to 3 min, until every row is healthy; a service that is not running
    fails at once."""

    def status() -> list[dict[str, Any]]:
        proc = run_mur(env, "status", "--json", timeout_s=120)
        assert proc.returncode == 0, proc.stderr
        return list(json.loads(proc.stdout))

    def down(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:  # "unhealthy": running, its check failed
        return [r for r in rows if r["state"] not in ("running", "unhealthy") or not r["pid"]]

    try:
        rows = wait_until(
            status,
            what="every service healthy in mur status",
            timeout_s=180,
            interval_s=5,
            done=lambda rows: bool(down(rows)) or all(r["healthy"] for r in rows),
        )
    except WaitTimeout as exc:
        raise AssertionError(f"unhealthy after 3 min: {[r for r in status() if not r['healthy']]}") from exc
    expected = {"s3", "mlflow", "ray", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
                "airflow-triggerer", "serve", "dash"}  # fmt: skip
    assert expected <= {r["service"] for r in rows}
    assert not down(rows), down(rows)
    return rows


def assert_nothing_left(settings: Settings, ports: list[int]) -> None:
    from devstack.stack import leftover_processes

    wait_until(  # Ray's job-driver watchers exit within a second or two
        lambda: (live_sessions(settings), leftover_processes(settings)),
        what="no session and no process left behind (sessions, processes)",
        timeout_s=20,
        interval_s=1,
        done=lambda found: not any(found),
    )
    listening = [p for p in ports if not port_free(p)]
    assert not listening, f"ports still in use after mur down: {listening}"


class Poller(threading.Thread):
    """Asks for a forecast of every pair twice a second, like a client would, and keeps every answer."""

    def __init__(self, settings: Settings, token: str) -> None:
        super().__init__(daemon=True)
        self.settings, self.token = settings, token
        self.answers: list[tuple[str, int, dict[str, Any]]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=30, trust_env=False) as client:
            while not self.stop.is_set():
                for pair in PAIRS:
                    try:
                        r = client.get(
                            f"{self.settings.serving.url}/v1/forecast/{pair}",
                            headers={"Authorization": f"Bearer {self.token}"},
                        )
                        json_body = r.headers.get("content-type", "").startswith("application/json")
                        body = (
                            r.json()
                            if r.status_code == 200
                            else {"text": r.text[:300], "json": json_body, "at": time.monotonic()}
                        )
                        self.answers.append((pair, r.status_code, body))
                    except httpx.HTTPError as exc:
                        self.answers.append((pair, 0, {"error": repr(exc), "at": time.monotonic()}))
                self.stop.wait(0.5)

    def seen(self, pair: str, key: str) -> list[Any]:
        """Distinct values of ``key`` in ``pair``'s answers, in order of appearance."""
        values: list[Any] = []
        for p, status, body in list(self.answers):
            if p == pair and status == 200 and body.get(key) not in values:
                values.append(body.get(key))
        return values


def watch_the_loop(settings: Settings, token: str, discord: DiscordStub) -> dict[str, Any]:
    """Within :data:`LOOP_BUDGET_S`, see every part of the loop turn; returns what was seen."""
    from prometheus_client.parser import text_string_to_metric_families

    from devstack import airflow
    from mur.db import Database
    from mur.monitoring.store import latest_alerts

    poller = Poller(settings, token)
    poller.start()
    seen: dict[str, Any] = {}
    deadline = time.monotonic() + LOOP_BUDGET_S
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with airflow.client(settings) as af, Database(settings, maxconn=1) as db:
            while time.monotonic() < deadline:
                runs = [r for r in af.dag_runs("mur_training", limit=200) if r.get("state") == "success"]
                seen["window_ends"] = sorted(
                    {r["data_interval_end"] for r in runs if r.get("data_interval_end")}
                )
                seen["candle_times"] = {p: poller.seen(p, "candle_time") for p in PAIRS}
                seen["versions"] = {p: poller.seen(p, "model_version") for p in PAIRS}
                record = httpx.get(
                    f"{settings.serving.url}/v1/track-record/{PAIRS[0]}?limit=20", headers=headers, timeout=30,
                    trust_env=False,
                )  # fmt: skip
                assert record.status_code == 200, record.text
                seen["resolved"] = record.json()["resolved"]
                alerts = [
                    a for a in latest_alerts(db, limit=20) if any(k.startswith("drift") for k in a.kinds)
                ]
                seen["drift_alerts"] = alerts
                done = (
                    len(seen["window_ends"]) >= 2
                    and all(len(v) >= 3 for v in seen["candle_times"].values())
                    and any(len(v) >= 2 for v in seen["versions"].values())
                    and seen["resolved"]
                    and alerts
                    and alerts[0].retrain_run_id
                )
                if done:
                    break
                time.sleep(5)
            seen["market_now"] = json.loads(run_mur_env_clock(settings))["now"]
            if seen.get("drift_alerts"):
                run_id = seen["drift_alerts"][0].retrain_run_id
                seen["retrain_run"] = af.dag_run("mur_training", run_id) if run_id else None
    finally:
        poller.stop.set()
        poller.join(timeout=60)
    seen["answers"] = poller.answers

    def all_counted() -> bool:
        response = httpx.get(f"{settings.serving.url}/metrics", timeout=30, trust_env=False)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        seen["metrics"] = {f.name: f for f in text_string_to_metric_families(response.text)}
        return forecasts_counted(seen["metrics"]) >= len(seen["answers"])

    # Ray exports a replica's counters every few seconds, so the count lags the answers for a moment; on a
    # timeout the last scrape stays and check_the_loop's assertion shows the gap
    with contextlib.suppress(WaitTimeout):
        wait_until(
            all_counted, what="the counter to count every answered forecast", timeout_s=60, interval_s=2
        )
    # the post of the newest drift alert: both pairs may have crossed, in any order, and a pair's other
    # alerts (a training gone stale on the busy machine) are posts of their own
    alerts = seen.get("drift_alerts") or []
    seen["post"] = (
        discord.wait_for(f"{alerts[0].pair} crossed", "input drift", timeout_s=5) if alerts else None
    )
    return seen


def run_mur_env_clock(settings: Settings) -> str:
    """``mur clock --json`` of the private stack (its runtime dir holds the clock)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUR_")}
    env["MUR_RUNTIME_DIR"] = str(settings.general.runtime_dir)
    proc = subprocess.run([MUR, "clock", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def check_the_loop(seen: dict[str, Any]) -> None:
    print(
        f"loop: market now {seen['market_now']}, window ends {seen['window_ends']}, versions {seen['versions']}"
    )
    failed = [a for a in seen["answers"] if a[1] != 200]
    assert not failed, f"{len(failed)} of {len(seen['answers'])} forecast requests failed: {failed[:3]}"
    assert len(seen["answers"]) > 100
    for pair, times in seen["candle_times"].items():  # new candles arrived, in order
        assert len(times) >= 3 and times == sorted(times), (pair, times)
    assert len(seen["window_ends"]) >= 2  # DAG runs with advancing market window ends
    assert all(end >= "2024-08-04" for end in seen["window_ends"])
    assert any(len(v) >= 2 for v in seen["versions"].values()), seen["versions"]  # a champion change, hot
    resolved = seen["resolved"]
    assert resolved and all(r["actual"] > 0 and r["target_time"] < seen["market_now"] for r in resolved)
    assert {"made_at", "target_time", "horizon_hours", "predicted", "actual"} <= set(resolved[0])
    alerts = seen["drift_alerts"]
    assert alerts, "no drift alert: the market went through the 2024-08-05 crash"
    assert alerts[0].delivered and alerts[0].retrain_run_id, alerts[0]
    assert seen["retrain_run"] and seen["retrain_run"]["conf"]["pairs"] == [alerts[0].pair]
    post = seen["post"]
    assert post is not None and alerts[0].pair in json.dumps(post) and "drift" in json.dumps(post)
    metrics = seen["metrics"]
    assert forecasts_counted(metrics) >= len(seen["answers"])
    served = {s.labels["pair"]: s.value for s in metrics["mur_served_model_version"].samples}
    assert set(PAIRS) <= set(served)


def forecasts_counted(metrics: dict[str, Any]) -> float:
    """The answered (200) forecast requests ``mur_http_requests_total`` counts, over every replica."""
    family = metrics.get("mur_http_requests")
    return sum(
        s.value for s in (family.samples if family else [])
        if s.name == "mur_http_requests_total" and s.labels.get("route") == "/v1/forecast/{pair}"
        and s.labels.get("status") == "200"
    )  # fmt: skip


def assert_nothing_answers_without_ray_token(settings: Settings) -> None:
    """Issue 22 on the whole stack: every process of it (Airflow's included) listens on the loopback interface,
    except Ray gRPC servers that refuse a real call without the token (each Serve replica's); Airflow's log
    servers do not run; the Jobs API and the dashboard's API refuse a caller without the token."""
    from devstack import airflow
    from devstack.config import ray_token

    found = listeners(marked_processes(settings.general.runtime_dir))
    assert any(x.name.startswith("ray::ServeReplica") for x in found), sorted(map(str, found))
    bad = open_listeners(found)
    assert not bad, f"listening beyond the loopback interface without requiring the token: {bad}"
    log_ports = {airflow.ports(settings)["worker_logs"], airflow.ports(settings)["trigger_logs"]}
    assert not log_ports & {x.port for x in found}, "an Airflow log server listens"
    jobs = settings.ray.ray_address.rstrip("/") + "/api/jobs/"
    assert httpx.post(jobs, json={"entrypoint": "env"}, timeout=30).status_code == 401
    assert (
        httpx.get(settings.ray.ray_address.rstrip("/") + "/api/serve/applications/", timeout=30).status_code
        == 401
    )
    stack_token = ray_token(settings.replace(ray_auth_token=None))  # from its secrets file
    token = {"Authorization": f"Bearer {stack_token}"}
    assert httpx.get(jobs, headers=token, timeout=30).status_code == 200


# --- the fault matrix (issue 42) ---------------------------------------------------------------------------
KILLED_SERVICES = ("s3", "mlflow", "airflow-scheduler", "airflow-api-server", "airflow-triggerer",
                   "airflow-dag-processor", "dash", "serve")  # fmt: skip
"""The services killed one at a time (``kill -9`` of the main process) under load; the Ray head is killed on the
two-node stack, where Serve's replicas live on the worker node (tests/integration/test_head_restart.py)."""


def kill_service(settings: Settings, name: str) -> dict[str, Any]:
    """``kill -9`` of ``name``'s main process; the watchdog brings it back healthy with a new pid and records
    an alert naming it (delivered to the Discord stand-in)."""
    from devstack import supervisor as svc
    from devstack.health import latest_alerts

    (before,) = svc.status(settings, [name])
    assert before.healthy and before.pid, before
    killed = time.monotonic()
    os.kill(before.pid, signal.SIGKILL)

    def back() -> Any:
        (row,) = svc.status(settings, [name])
        return row if row.healthy and row.pid not in (None, before.pid) else None

    row = wait_until(back, what=f"{name} back by itself after kill -9", timeout_s=300, interval_s=1)
    died = [a for a in latest_alerts(settings, limit=100) if a["service"] == name and a["event"] == "died"]
    assert died and str(before.pid) in died[-1]["message"], f"no alert recorded for {name}: {died}"
    assert row.restarts == before.restarts + 1, (before, row)
    return {"part": name, "back_s": time.monotonic() - killed, "alert": died[-1]["delivered"], "at": killed}


def answered_since(poller: Poller, index: int) -> bool:
    """Whether the poller got a 200 after its ``index``-th answer (its calls are the only charged ones)."""
    return any(status == 200 for _, status, _ in poller.answers[index:])


def kill_serve_replica(settings: Settings, poller: Poller) -> dict[str, Any]:
    """``kill -9`` of the API's Serve replica: Ray Serve's controller starts a new one by itself."""
    import psutil

    def replicas() -> set[int]:
        found = marked_processes(settings.general.runtime_dir)
        titles = {p.pid: _title(p) for p in found}  # Ray's process title: ray::ServeReplica:APP:DEPLOYMENT
        return {pid for pid, t in titles.items() if "ServeReplica" in t and t.split()[0].endswith(":api")}

    old = replicas()
    assert old, "no API replica found"
    killed, index = time.monotonic(), len(poller.answers)
    for pid in old:
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: replicas() - old and answered_since(poller, index),
        what="a new API replica answering",
        timeout_s=300,
        interval_s=1,
    )
    return {"part": "a Serve replica", "back_s": time.monotonic() - killed, "alert": None, "at": killed}


def _title(process: Any) -> str:
    with contextlib.suppress(Exception):
        return " ".join(process.cmdline()) or "-"
    return "-"


def drop_connections(settings: Settings, poller: Poller) -> dict[str, Any]:
    """``pg_terminate_backend`` of every connection to the product's database: the pools reconnect."""
    conn = psycopg2.connect(settings.db.dsn("postgres"), connect_timeout=5)
    conn.autocommit = True
    killed, index = time.monotonic(), len(poller.answers)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (settings.db.pg_database,),
            )
            (dropped,) = cur.fetchone()
    finally:
        conn.close()
    assert dropped > 0, "no connection to the product's database to drop"
    wait_until(
        lambda: answered_since(poller, index),
        what="a forecast after the connections were dropped",
        timeout_s=120,
        interval_s=0.5,
    )
    return {
        "part": f"PostgreSQL connections ({dropped})",
        "back_s": time.monotonic() - killed,
        "alert": None,
        "at": killed,
    }


def forecast_hours(settings: Settings, since: str, until: str) -> dict[str, list[str]]:
    """The 1 h forecast target hours recorded per pair in ``[since, until]`` (market time). None is recorded
    twice: the table's unique key (pair, model version, target, horizon) refuses it."""
    conn = psycopg2.connect(settings.db.dsn(), connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT DISTINCT pair, target_time FROM forecasts WHERE horizon_hours = 1"
                " AND target_time BETWEEN %s AND %s",
                (since, until),
            )
            rows = cur.fetchall()
    finally:
        conn.close()
    hours: dict[str, set[str]] = {}
    for pair, target in rows:
        hours.setdefault(pair, set()).add(target.isoformat())
    return {pair: sorted(found) for pair, found in hours.items()}


def run_the_fault_matrix(settings: Settings, token: str) -> list[dict[str, Any]]:
    """Issue 42 #5: one part killed at a time under load at the fast clock. For each: back by itself, an
    alert recorded for a service; afterwards the loop turns on (a new forecast hour for each pair and a
    successful training run of a later market hour), no forecast hour missing or recorded twice, every
    failed request answered with JSON, and the quota charged for the answered calls only."""
    from datetime import UTC, datetime, timedelta

    from mur.db import Database, get_usage, require_user

    def market_now() -> datetime:
        return datetime.fromisoformat(json.loads(run_mur_env_clock(settings))["now"])

    with Database(settings, maxconn=1) as db:
        user_id = require_user(db, username="admin").id
        used_before, _ = get_usage(db, user_id=user_id)
    began = market_now()
    poller = Poller(settings, token)
    poller.start()
    results = []
    try:
        wait_until(lambda: len(poller.answers) >= 20, what="answers before the first kill", timeout_s=60)
        for name in KILLED_SERVICES:
            results.append(kill_service(settings, name))
        results.append(kill_serve_replica(settings, poller))
        results.append(drop_connections(settings, poller))
        for row in results:
            print(
                f"FAULT {row['part']}: back by itself in {row['back_s']:.1f} s, alert delivered {row['alert']}"
            )
        ended, ended_wall = market_now(), datetime.now(UTC)
        next_hour = (ended + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)

        def resumed() -> bool:
            """A monitoring run of a later market hour and a training run finished after the faults (trainings
            queue behind each other at this clock: the one that ends may stand for an earlier hour), and a
            forecast of a later hour for each pair."""
            finished = {
                dag: [r for r in airflow_runs(settings, dag) if r.get("state") == "success"]
                for dag in ("mur_training", "mur_monitoring")
            }
            trained = any(
                datetime.fromisoformat(r["end_date"]) > ended_wall
                for r in finished["mur_training"]
                if r.get("end_date")
            )
            monitored = any(
                datetime.fromisoformat(r["logical_date"]) >= next_hour
                for r in finished["mur_monitoring"] if r.get("logical_date")
            )  # fmt: skip
            fresh = all(
                any(datetime.fromisoformat(t) >= next_hour for t in poller.seen(p, "candle_time"))
                for p in PAIRS
            )
            return trained and monitored and fresh

        wait_until(resumed, what="the loop turning after the faults", timeout_s=900, interval_s=5)
    finally:
        poller.stop.set()
        poller.join(timeout=60)
    failed = [a for a in poller.answers if a[1] != 200]
    statuses = {code: sum(1 for a in failed if a[1] == code) for code in sorted({a[1] for a in failed})}
    for pair, status, body in failed:  # which fault was under way (the last one begun before the answer)
        fault = max((r for r in results if r["at"] <= body["at"]), key=lambda r: r["at"], default=None)
        when = (
            f"{body['at'] - fault['at']:.1f} s after killing {fault['part']}" if fault else "before any fault"
        )
        print(f"FAULT MATRIX failed request: {pair} {status} {when}: {body.get('text') or body.get('error')}")
    print(
        f"FAULT MATRIX: {len(failed)} of {len(poller.answers)} forecast requests failed {statuses}: {failed[:3]}"
    )
    assert all(status != 0 and body.get("json") for _, status, body in failed), failed[:5]
    assert len(failed) <= len(poller.answers) // 20, f"{len(failed)} of {len(poller.answers)} failed"
    answered = sum(1 for a in poller.answers if a[1] == 200)
    with Database(settings, maxconn=1) as db:
        used_after, _ = get_usage(db, user_id=user_id)
    assert used_after - used_before == answered, (used_before, used_after, answered)
    start_hour = (began + timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    hours = forecast_hours(settings, start_hour.isoformat(), next_hour.isoformat())
    expected = int((next_hour - start_hour).total_seconds() // 3600) + 1
    assert all(len(hours.get(p, [])) == expected for p in PAIRS), (expected, hours)
    return results


def airflow_runs(settings: Settings, dag_id: str) -> list[dict[str, Any]]:
    from devstack import airflow

    with airflow.client(settings) as af:
        return list(af.dag_runs(dag_id, limit=200))


# --- the restore drill (issue 42) --------------------------------------------------------------------------
def product_rows(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    """The product database's users, tokens, quotas, usage and track record, in a stable order."""
    conn = psycopg2.connect(settings.db.dsn(), connect_timeout=5)
    try:
        with conn.cursor() as cur:
            found = {}
            for table in ("users", "api_tokens", "quotas", "api_usage", "forecasts"):
                cur.execute(sql.SQL("SELECT * FROM {} ORDER BY 1, 2").format(sql.Identifier(table)))
                found[table] = cur.fetchall()
            return found
    finally:
        conn.close()


def registry_versions(settings: Settings) -> dict[str, tuple[list[int], int | None]]:
    """Per registered model of the stack: (its version numbers, champion version), from MLflow's database."""
    conn = psycopg2.connect(settings.db.dsn(settings.db.mlflow_database), connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT v.name, array_agg(v.version ORDER BY v.version), max(a.version) FROM model_versions v"
                " LEFT JOIN registered_model_aliases a ON a.name = v.name AND a.alias = 'champion'"
                " GROUP BY v.name"
            )
            return {name: (list(numbers), champion) for name, numbers, champion in cur.fetchall()}
    finally:
        conn.close()


def pair_champions(versions: dict[str, tuple[list[int], int | None]]) -> dict[str, int | None]:
    """Each pair's champion version, from :func:`registry_versions`."""
    return {pair: next(c for n, (_, c) in versions.items() if n.endswith(pair)) for pair in PAIRS}


def same_hour_forecasts(env: dict[str, str], settings: Settings, token: str) -> dict[str, dict[str, Any]]:
    """Each pair's forecast, all for one target hour (asked again if an hour turned meanwhile)."""

    def ask() -> dict[str, dict[str, Any]] | None:
        answers = {pair: forecast(settings, token, pair) for pair in PAIRS}
        assert all(a.status_code == 200 for a in answers.values()), {p: a.text for p, a in answers.items()}
        bodies = {pair: a.json() for pair, a in answers.items()}
        return bodies if len({b["target_time"] for b in bodies.values()}) == 1 else None

    return wait_until(ask, what="forecasts within one market hour", timeout_s=60, interval_s=0)


def settled_forecasts(env: dict[str, str], settings: Settings, token: str) -> dict[str, dict[str, Any]]:
    """The restore drill's reference: the training DAG paused (the restored Airflow keeps it paused, so the runs
    queued at the backup wait until the drill triggers one), no Ray job left running, then each pair's forecast
    for one target hour from its registry champion (Serve polls the registry every ``registry_poll_s``)."""
    from devstack import airflow
    from devstack.config import ray_token
    from mur.orchestration import DAG_ID

    with airflow.client(settings) as client:
        client.set_paused(DAG_ID, True)
    jobs = settings.ray.ray_address.rstrip("/") + "/api/jobs/"
    headers = {"Authorization": f"Bearer {ray_token(settings.replace(ray_auth_token=None))}"}

    def no_job_running() -> bool:
        listed = httpx.get(jobs, headers=headers, timeout=30).raise_for_status().json()
        # submitted jobs only: a driver connected to the cluster (the Serve keeper's) is a RUNNING job too
        return not [j for j in listed if j.get("submission_id") and j["status"] in ("PENDING", "RUNNING")]

    wait_until(no_job_running, what="the running trainings to end", timeout_s=900, interval_s=2)

    def served_by_champions() -> dict[str, dict[str, Any]] | None:
        bodies = same_hour_forecasts(env, settings, token)
        served = {pair: b["model_version"] for pair, b in bodies.items()}
        return bodies if served == pair_champions(registry_versions(settings)) else None

    return wait_until(
        served_by_champions, what="every pair served by its champion", timeout_s=180, interval_s=2
    )


def restore_drill(
    stack: dict[str, Any], reference: dict[str, dict[str, Any]], token: str, tmp: Path
) -> dict[str, float]:
    """Issue 42 #4 on the whole stack, stopped by ``mur down``: ``mur backup`` (its object store started for
    it), ``mur restore`` into a new runtime dir and new databases, ``mur up`` there with the market frozen at the
    reference forecasts' market time: the same token gets the same forecast from the same model version, the
    users, tokens, usage and track record are identical, and the next training registers the next version."""
    from datetime import datetime, timedelta

    env, settings = stack["env"], stack["settings"]
    timings: dict[str, float] = {}
    began = time.monotonic()
    assert run_mur(env, "services", "start", "s3", timeout_s=300).returncode == 0
    dest = tmp / "backup"
    backup = run_mur(env, "backup", str(dest), timeout_s=600)
    assert backup.returncode == 0 and (dest / "manifest.json").is_file(), backup.stderr[-2000:]
    assert run_mur(env, "down", timeout_s=300).returncode == 0
    rows, versions = product_rows(settings), registry_versions(settings)
    timings["backup"] = time.monotonic() - began
    served = {pair: r["model_version"] for pair, r in reference.items()}
    assert pair_champions(versions) == served, "a champion moved between the reference and the backup"

    # the market frozen half an hour after the reference forecasts' candle closed: the same candles (the
    # reference was answered from the stack's candle cache, which may lag market now by a few market minutes)
    target = datetime.fromisoformat(reference[PAIRS[0]]["target_time"])
    frozen = (target + timedelta(minutes=30)).isoformat().replace("+00:00", "Z")
    restored_env = {
        **env,
        "MUR_RUNTIME_DIR": str(tmp / "restored-runtime"),
        "MUR_PG_DATABASE": env["MUR_PG_DATABASE"] + "_rst",
        "MUR_MLFLOW_DATABASE": env["MUR_MLFLOW_DATABASE"] + "_rst",
        "MUR_AIRFLOW_DATABASE": env["MUR_AIRFLOW_DATABASE"] + "_rst",
        "MUR_CLOCK_START": frozen,
        "MUR_CLOCK_SPEED": "0",
    }
    restored = _settings(restored_env)
    stack["stacks"].append((restored_env, restored))
    began = time.monotonic()
    assert run_mur(restored_env, "services", "start", "s3", timeout_s=300).returncode == 0
    done = run_mur(restored_env, "restore", str(dest), timeout_s=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert product_rows(restored) == rows, "users, tokens, quotas, usage or track record differ after restore"
    assert registry_versions(restored) == versions
    timings["restore"] = time.monotonic() - began

    began = time.monotonic()
    up = run_mur(restored_env, "up", "--timeout", "900")
    assert up.returncode == 0, up.stderr[-3000:]
    assert "no training triggered" in up.stdout and not TOKEN_LINE.search(up.stdout)
    timings["up on the restored stack"] = time.monotonic() - began
    again = same_hour_forecasts(restored_env, restored, token)
    for pair, before in reference.items():
        after = again[pair]
        print(
            f"restored {pair}: v{after['model_version']} {after['forecast']} (was v{before['model_version']})"
        )
        same = ("model_version", "target_time", "forecast", "last_close")
        assert {k: after[k] for k in same} == {k: before[k] for k in same}, (before, after)
        assert [h["median"] for h in after["horizons"]] == [h["median"] for h in before["horizons"]]
        # a range is the model's, scaled by the online calibration: the same unless a resolved hour moved it
        ranges = [(h.get("lower"), h.get("upper")) for h in after["horizons"]]
        assert ranges == [(h.get("lower"), h.get("upper")) for h in before["horizons"]] or (
            after.get("calibration") != before.get("calibration")
        )

    began = time.monotonic()
    trained = run_mur(restored_env, "airflow", "trigger", "--pair", PAIRS[0], timeout_s=300)
    assert trained.returncode == 0, trained.stderr[-3000:]
    # the restored Airflow holds the runs that were queued at the backup (drift alerts' retrainings): unpaused by
    # the trigger, they go before it, and whichever run registers first shows the registry numbering on from the
    # backup (no number reused, none skipped); the rest are stopped by `mur down` (on 2026-11-27 waiting for the
    # triggered run behind three held ones took 481 s of this test)

    def grown() -> dict[str, list[int]]:
        now = registry_versions(restored)
        return {n: now[n][0] for n in versions if len(now[n][0]) > len(versions[n][0])}

    new = wait_until(grown, what="a version registered on the restored stack", timeout_s=1200, interval_s=3)
    for name, numbers in new.items():
        backed_up = versions[name][0]
        assert numbers[: len(backed_up)] == backed_up and numbers == list(range(1, len(numbers) + 1)), numbers
    timings["next training on the restored stack"] = time.monotonic() - began
    assert run_mur(restored_env, "down", timeout_s=600).returncode == 0
    return timings


# --- the test ----------------------------------------------------------------------------------------------
def test_up_train_serve_login_loop_down_up_again(
    stack: dict[str, Any], discord: DiscordStub, tmp_path: Path
) -> None:
    env, settings = stack["env"], stack["settings"]
    timings: dict[str, float] = {}

    # 1. the first `mur up`: services, admin, training run for both pairs, forecasts served, URLs printed
    began = time.monotonic()
    first = run_mur(env, "up", "--timeout", "1500")
    timings["first up"] = time.monotonic() - began
    if first.returncode != 0 and re.search(r"did not answer|before answering", first.stderr):
        raise ServiceError(f"the first mur up could not start a service:\n{first.stderr[-4000:]}")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Warning" not in first.stdout + first.stderr  # a newcomer's first screen: no library's warnings
    out = first.stdout
    for label in ("Dashboard", "API docs", "Airflow UI", "MLflow UI", "Ray dashboard"):
        assert re.search(rf"^\s+{label}\s+http://127\.0\.0\.1:\d+/", out, re.M), f"no {label} URL"
    assert re.search(r"(triggered mur_training run|the scheduled mur_training run \S+ trains)", out)
    password = PASSWORD_LINE.search(out)
    token = TOKEN_LINE.search(out)
    assert password and token, "the first mur up prints the admin password and a demo token"
    password, token = password.group(1), token.group(1)
    for pair in PAIRS:
        assert re.search(rf"^\s+{pair}\s+next close", out, re.M), f"no served forecast for {pair}"

    # 2. a user with a token gets a forecast from the API
    for pair in PAIRS:
        response = forecast(settings, token, pair)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["pair"] == pair and body["forecast"] > 0 and body["model_version"] >= 1
        assert int(response.headers["X-RateLimit-Remaining"]) < int(response.headers["X-RateLimit-Limit"])
    served_before = champions(settings, token)
    assert set(served_before) == set(PAIRS) and all(v for v in served_before.values())

    # 3. the dashboard's login page answers and the admin logs in
    dashboard_login(settings, "admin", password)
    rows = assert_all_running(env)
    ports = [r["port"] for r in rows if r["port"]]
    assert_nothing_answers_without_ray_token(settings)

    # 3b. the loop turns: candles, trainings, a hot-reloaded champion, a track record, a drift alert, metrics
    began = time.monotonic()
    check_the_loop(watch_the_loop(settings, token, discord))
    timings["loop"] = time.monotonic() - began

    # 3c. the fault matrix: each part killed under load comes back by itself and the loop turns on (issue 42)
    began = time.monotonic()
    run_the_fault_matrix(settings, token)
    timings["fault matrix"] = time.monotonic() - began

    # 4. `mur up` on the running stack: nothing new, no secret printed, no training
    began = time.monotonic()
    again = run_mur(env, "up", "--timeout", "600")
    timings["second up (running)"] = time.monotonic() - began
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already running" in again.stdout and "starting " not in again.stdout
    assert not PASSWORD_LINE.search(again.stdout) and not TOKEN_LINE.search(again.stdout)
    assert "no training triggered" in again.stdout and "exists" in again.stdout

    # 5. usage is counted: the demo token's calls above
    from mur.db import Database, get_usage, require_user

    with Database(settings, maxconn=1) as db:
        used, _ = get_usage(db, user_id=require_user(db, username="admin").id)
    assert used >= len(PAIRS)

    # 6. `mur down` leaves nothing behind, and pauses the market (`mur up` resumes it where it stood:
    #    tests/unit/test_clock.py; the stack is started once here, issue 23)
    reference = settled_forecasts(env, settings, token)  # for the restore drill (7.), trainings paused
    began = time.monotonic()
    down = run_mur(env, "down", timeout_s=600)
    timings["down"] = time.monotonic() - began
    assert down.returncode == 0, down.stderr[-3000:]
    assert "market clock paused" in down.stdout
    assert_nothing_left(settings, ports)
    # the Ray GCS's tables went with it: the next `mur up` starts a new cluster
    assert not (Path(settings.general.runtime_dir) / "redis" / "data").exists()
    assert json.loads(run_mur_env_clock(settings))["speed"] == 0
    with pytest.raises(httpx.TransportError):
        forecast(settings, token, PAIRS[0])

    # 7. the restore drill: backup of the stopped stack, restore into a new one, the same answers there
    timings |= restore_drill(stack, reference, token, tmp_path)
    print("timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
