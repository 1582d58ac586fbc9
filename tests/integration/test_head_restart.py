"""Issue 42, item 3: the Ray head restarts while Serve keeps answering (Ray GCS fault tolerance).

The stack's GCS keeps its tables in the stack's own Redis (the ``redis`` service, ``devstack/gcs_redis.py``:
mutual TLS, append-only file). On the two-node stack of ``test_cluster.py`` the API, the registry watcher and
the Forecaster run on the worker node (127.0.0.2); requests go to the worker node's API replica (its own HTTP
server: Serve's direct ingress, what HAProxy forwards to) at ~10 per second while the head's GCS is killed
(SIGKILL; ``ray start --block`` then ends the rest of the head), or every process of the head's session, in
turn for ``HEAD_RESTARTS`` restarts (environment, default 1), and the head is started again by the stack (the
watchdog, started for the test as ``mur up`` starts it; :func:`devstack.supervisor.start_service` when
nothing restarted it). Measured: the requests answered and failed from the kill until the worker node is
back in the new head's cluster and the Serve controller is running again; the figure is printed
(``HEAD RESTART``) and kept in docs/services.md.

Checked: a handful of failures at most (852 of 900 failed before GCS fault tolerance); the worker node
rejoins the restarted head under its old node id; Serve's controller comes back with its state from Redis
(the app RUNNING with the same replica actors, nothing redeployed).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psutil
import pytest
from test_cluster import NODE, PAIR, Cluster, cluster, deployed, wait_for  # noqa: F401 (a fixture)

from mur.settings import Settings

pytestmark = [pytest.mark.services, pytest.mark.timeout(1800)]

MAX_FAILED = 5
"""The goal: a handful of failed requests for a head restart (852 of 900 before, issue 42)."""
LOAD_INTERVAL_S = 0.1  # ~10 requests a second, one at a time, as the trial


@dataclass
class App:
    settings: Settings
    token: str
    node_id: str

    def details(self) -> dict[str, Any]:
        from serve_app.deploy import app_details

        return app_details(self.settings) or {}

    def replicas(self) -> dict[str, set[str]]:
        """Running replica actor ids by deployment."""
        found = {}
        for name, deployment in (self.details().get("deployments") or {}).items():
            running = [r for r in deployment.get("replicas") or [] if r.get("state") == "RUNNING"]
            found[name] = {str(r.get("actor_id")) for r in running}
        return found


def worker_ingress_port(nodes: Cluster) -> int | None:
    """The HTTP port of the worker node's API replica (Serve's direct ingress, 30000-31000 by default)."""
    from devstack import supervisor
    from devstack.processes import session_members

    pid = supervisor.running_pid(nodes.settings, f"ray-node-{NODE}")
    for member in session_members(pid) if pid else []:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(member)
            title = " ".join(process.cmdline())  # Ray's process title: ray::ServeReplica:APP:DEPLOYMENT
            if "ServeReplica" in title and title.split()[0].endswith(":api"):
                for conn in process.net_connections(kind="tcp"):
                    if conn.status == psutil.CONN_LISTEN and 30000 <= conn.laddr.port < 31000:
                        return int(conn.laddr.port)
    return None


@pytest.fixture
def watchdog(cluster: Cluster) -> Iterator[None]:  # noqa: F811 (test_cluster's fixture)
    """The stack's watchdog (what ``mur up`` starts), which restarts a head whose process died; stopped after
    the test unless it ran before."""
    from devstack import watchdog
    from devstack.supervisor import running_pid

    ours = running_pid(cluster.settings, watchdog.NAME) is None
    watchdog.start(cluster.settings)
    try:
        yield
    finally:
        if ours:
            watchdog.stop(cluster.settings)


@pytest.fixture(scope="module")
def app(
    cluster: Cluster,  # noqa: F811 (test_cluster's fixture)
    pg_database_factory: Callable[..., Settings],
) -> Iterator[App]:
    """A champion, and the app with its API, registry watcher and Forecaster on the worker node."""
    on_worker = {"resources": {f"mur_node_{NODE}": 0.01}}
    deployments: list[dict[str, Any]] = [
        {"name": "api", "ray_actor_options": {"num_cpus": 0.1, **on_worker}},
        {"name": "registry", "ray_actor_options": {"num_cpus": 0, **on_worker}},
        {"name": "forecaster", "ray_actor_options": on_worker},
    ]
    with deployed(cluster, pg_database_factory, deployments, serve_min_replicas=1, serve_max_replicas=1) as (
        app_settings,
        token,
    ):
        nodes = {n["ip"]: n["node_id"] for n in _alive_nodes(cluster)}
        yield App(app_settings, token, nodes[cluster.node_ip])


def _alive_nodes(nodes: Cluster) -> list[dict[str, Any]]:
    from devstack.health import ray_nodes

    return [n for n in ray_nodes(nodes.settings) or [] if n["state"] == "ALIVE"]


def kill_head(nodes: Cluster, what: str) -> int:
    """SIGKILL the head's GCS server (``gcs_server``), or every process of the head's session (``session``);
    return the session's id."""
    from devstack import supervisor
    from devstack.processes import session_members

    head = supervisor.running_pid(nodes.settings, "ray")
    assert head is not None, "the head is not running"
    members = session_members(head)
    for member in members:
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if what == "session" or psutil.Process(member).name() == "gcs_server":
                os.kill(member, signal.SIGKILL)
    return head


def restart_head(nodes: Cluster, head: int) -> str:
    """Bring the head back as the stack does: wait for ``ray start --block`` to end the head's other processes,
    then start the service unless the stack's watchdog already did (never twice: start_service takes the
    service's lock and finds a running head). Returns what started it."""
    from devstack import supervisor
    from devstack.processes import leader_alive
    from mur.errors import ServiceError

    wait_for("the old head session to end", lambda: not leader_alive(head), 120, 0.5)
    try:
        result = supervisor.start_service(nodes.settings, nodes.registry["ray"], progress=print)
    except (
        ServiceError
    ) as exc:  # `ray start` gives its raylet 30 s (fixed in Ray) to register with a GCS that
        # is recovering from Redis; on two busy cores that can take longer (CI): the watchdog would start the
        # head again after such a failure, and so does this
        print(f"the head's start failed, starting it again: {str(exc).splitlines()[0]}")
        result = supervisor.start_service(nodes.settings, nodes.registry["ray"], progress=print)
    return "this test" if result.action == "started" else f"the stack ({result.action})"


def job_in_flight(
    nodes: Cluster, monkeypatch: pytest.MonkeyPatch, running: bool
) -> tuple[str, dict[str, Any]]:
    """A Ray job on the head (its supervisor's node), ``running`` or just submitted (its supervisor may not
    have started: the job ``PENDING``), awaited as the training DAG's deferred tasks await theirs:
    :class:`~mur.orchestration.triggers.RayJobTrigger` in a thread; its event lands in the dict."""
    import asyncio

    from mur.orchestration import triggers
    from mur.orchestration.job_submission import client_for

    monkeypatch.setattr(triggers, "get_settings", lambda: nodes.settings)  # the triggerer's: the token
    client = client_for(nodes.settings)
    job = client.submit_job(entrypoint="sleep 900", entrypoint_num_cpus=0)
    if running:
        wait_for(f"job {job} running", lambda: client.get_job_status(job) == "RUNNING", 120, 0.5)
    trigger = triggers.RayJobTrigger([job], nodes.settings.ray.ray_address, 1.0, time.time() + 900)
    event: dict[str, Any] = {}

    async def first() -> None:
        try:
            event.update((await anext(trigger.run())).payload["jobs"][job])
        except Exception as exc:  # the trigger failed: its task would fail with this (and be retried)
            event["error"] = repr(exc)

    threading.Thread(target=asyncio.run, args=(first(),), daemon=True).start()
    return job, event


def test_a_head_restart_costs_a_handful_of_requests(
    cluster: Cluster,  # noqa: F811
    app: App,
    watchdog: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``HEAD_RESTARTS`` (environment; default 1) restarts in a row, killing the GCS, then the whole head, …
    Jobs in flight on the head are lost with it (Ray 2.60 leaves them RUNNING, or PENDING if their supervisor
    had not started, for ever): the awaiting trigger sees the job's supervisor actor dead and hands the task a
    failure with that reason (Airflow retries the task). One job runs at the kill, one was just submitted."""
    in_flight = [job_in_flight(cluster, monkeypatch, running=True)]
    before = app.replicas()
    assert all(before.get(d) for d in ("api", "forecaster", "registry")), before
    port = wait_for("the worker node's API replica port", lambda: worker_ingress_port(cluster), 60)
    url = f"http://127.0.0.1:{port}/v1/forecast/{PAIR}"
    headers = {"Authorization": f"Bearer {app.token}"}
    answers: list[tuple[float, int | str]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    response = client.get(url, headers=headers)
                    answers.append((time.monotonic(), response.status_code))
                except httpx.HTTPError as exc:
                    answers.append((time.monotonic(), type(exc).__name__))
                stop.wait(LOAD_INTERVAL_S)

    def restart(what: str) -> list[int | str]:
        """Kill the head, bring it back, wait for the worker node and Serve; the requests from the kill to 50
        answers after the recovery."""
        killed_at = time.monotonic()
        by = restart_head(cluster, kill_head(cluster, what))
        head_back = time.monotonic() - killed_at
        wait_for(
            "the worker node back in the restarted head's cluster",
            lambda: app.node_id in {n["node_id"] for n in _alive_nodes(cluster)},
            300,
            1.0,
        )
        wait_for("Serve's app running again", lambda: app.details().get("status") == "RUNNING", 300, 1.0)
        recovered, settled = time.monotonic() - killed_at, len(answers)
        wait_for("answers after the recovery", lambda: len(answers) >= settled + 50, 120)
        window = [code for at, code in answers[:] if at >= killed_at]
        failed = [code for code in window if code != 200]
        print(
            f"HEAD RESTART ({what} killed): {len(failed)} of {len(window)} requests failed "
            f"{sorted(set(map(str, failed)))} from the kill to 50 answers after the recovery; head restarted by "
            f"{by} in {head_back:.1f} s, worker node and Serve controller back after {recovered:.1f} s"
        )
        return failed

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        wait_for("answers before the kill", lambda: len(answers) >= 20, 60)
        assert all(code == 200 for _, code in answers), answers
        runs = int(os.environ.get("HEAD_RESTARTS", "1"))
        assert not in_flight[0][1], f"the running job's trigger fired before the kill: {in_flight}"
        in_flight.append(job_in_flight(cluster, monkeypatch, running=False))  # the kill follows at once
        failures = [restart(("gcs_server", "session")[i % 2]) for i in range(runs)]
    finally:
        stop.set()
        worker.join()
    assert all(len(failed) <= MAX_FAILED for failed in failures), failures
    after = app.replicas()
    assert after == before, f"Serve's controller recovered its replicas from Redis, none redeployed: {after}"
    assert all(code == 200 for _, code in answers[-20:])
    for job, ended in in_flight:
        wait_for(f"the job in flight {job} to end, seen by its trigger", lambda: ended, 300, 1.0)  # noqa: B023
        print(f"JOB IN FLIGHT {job}: {ended}")
        assert ended.get("status") == "FAILED" and "the job was lost" in ended["reason"], ended
