"""A two-node Ray cluster on one machine (issue 26): the shared head on 127.0.0.1 and a worker node on
127.0.0.2 that joins it with the token, started by the same service table as ``mur up --nodes 2``.

What it shows, with real services only (S3, MLflow, PostgreSQL, Ray, Serve):

* a DDP training with 2 workers, one per node (``STRICT_SPREAD``), checkpoints on the S3 storage path,
  registered in MLflow, its job driven through the Jobs API like the DAG's;
* the worker node killed (SIGKILL, no goodbye) mid-training: the run resumes from its last S3 checkpoint on
  the surviving node and finishes;
* Serve replicas on the worker node (``max_replicas_per_node=1`` forces one per node) load their model from
  the registry (into the node's own runtime dir: nothing of the head's ``.runtime/``) and answer; the node
  killed under light load: the head's replica answers everything, the few requests that failed were JSON
  503s, and the lost replica comes back when the node rejoins;
* what the worker node listens on beyond 127.0.0.1 refuses a caller without the token; ``mur status``
  lists both nodes.
"""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from module_order import next_module_uses
from ray_checkpoints import RAY_TRAIN_SNAPSHOT, registered_checkpoint

from mur.errors import ServiceError
from mur.settings import Settings
from mur.waiting import wait_until

pytestmark = [
    pytest.mark.services,
    pytest.mark.timeout(1800),
]

NODE = 2
PAIR = "btc_usdt"
WINDOW_END = "2025-06-01T00:00:00Z"


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, every_s: float = 0.5) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout_s``."""
    return wait_until(check, what=what, timeout_s=timeout_s, interval_s=every_s)


@dataclass
class Cluster:
    settings: Settings
    node_ip: str
    registry: dict[str, Any]
    """The service table with the worker node (``ray_nodes=2``)."""
    events: list[str] = field(default_factory=list)

    @property
    def node_service(self) -> Any:
        return self.registry[f"ray-node-{NODE}"]

    def start_node(self) -> None:
        """The worker node's service, retried once as ``mur up --nodes 2`` retries it (devstack.stack.RETRIES:
        ``ray start`` gives a node a hard-coded 30 s to register, which a busy 2-core machine can miss)."""
        from devstack import supervisor
        from devstack.stack import RETRIES

        for attempt in range(RETRIES + 1):
            try:
                supervisor.up(self.settings, [f"ray-node-{NODE}"], services=self.registry, progress=print)
                break
            except ServiceError as exc:  # the failed start was stopped by the supervisor
                if attempt == RETRIES:
                    raise
                print(f"ray-node-{NODE} did not start ({str(exc).splitlines()[0]}): trying once more")
        wait_for("the worker node to join", lambda: self.alive_node_ips() >= {"127.0.0.1", self.node_ip}, 60)

    def kill_node(self) -> None:
        """SIGKILL every process of the worker node's session (its raylet, agents, workers, replicas)."""
        from devstack import supervisor
        from devstack.processes import session_members

        pid = supervisor.running_pid(self.settings, f"ray-node-{NODE}")
        assert pid is not None, "the worker node is not running"
        for member in session_members(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, signal.SIGKILL)
        wait_for("the head to see the node dead", lambda: self.node_ip not in self.alive_node_ips(), 120, 1.0)
        supervisor.down(self.settings, [f"ray-node-{NODE}"], services=self.registry)  # its pid file

    def alive_node_ips(self) -> set[str]:
        from devstack.health import ray_nodes

        return {str(n["ip"]) for n in ray_nodes(self.settings) or [] if n["state"] == "ALIVE"}

    def train_workers(self) -> list[dict[str, Any]]:
        """The Ray Train worker actors alive now (state API, with the token): node IP and pid."""
        response = httpx.get(
            self.settings.ray.ray_address.rstrip("/") + "/api/v0/actors",
            params={
                "limit": 1000,
                "detail": "true",
                "filter_keys": ["class_name", "state"],
                "filter_predicates": ["=", "="],
                "filter_values": ["RayTrainWorker", "ALIVE"],
            },
            headers=self.settings.ray.headers(),
            timeout=10,
        )
        response.raise_for_status()
        rows = response.json()["data"]["result"]["result"]
        nodes = {n["node_id"]: n["ip"] for n in _nodes(self.settings)}
        return [{"node_ip": nodes.get(r.get("node_id")), "pid": r.get("pid")} for r in rows]


def _nodes(settings: Settings) -> list[dict[str, Any]]:
    from devstack.health import ray_nodes

    return ray_nodes(settings) or []


HANDED_ON: list[Cluster] = []
"""The cluster a module left running for the next one (test_head_restart.py runs on it after this module)."""


@pytest.fixture(scope="module")
def cluster(services: Settings, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The shared head plus worker node 2 (its own runtime dir), stopped again at the end: at the end of the
    last of adjacent modules that use it (a node start and stop fewer; no other module's tests see it)."""
    from devstack import supervisor
    from devstack.services import stack_services, worker_node_ip

    found = HANDED_ON.pop() if HANDED_ON else None
    if found is None or not found.alive_node_ips() >= {"127.0.0.1", found.node_ip}:
        settings = services.replace(ray_nodes=NODE)
        found = Cluster(settings, worker_node_ip(NODE), stack_services(settings))
        found.start_node()
    handed_on = False
    try:
        yield found
        handed_on = next_module_uses(request, "cluster")
    finally:
        if handed_on:
            HANDED_ON.append(found)
        else:
            supervisor.down(found.settings, [f"ray-node-{NODE}"], services=found.registry, progress=print)


def s3_client(settings: Settings) -> Any:
    from minio import Minio

    url = httpx.URL(settings.registry.s3_endpoint_url)
    return Minio(
        f"{url.host}:{url.port}",
        access_key=settings.registry.s3_access_key,
        secret_key=settings.registry.s3_secret_key,
        secure=url.scheme == "https",
    )


def s3_keys(settings: Settings, prefix: str) -> list[str]:
    objects = s3_client(settings).list_objects(settings.registry.s3_bucket, prefix=prefix, recursive=True)
    return [o.object_name for o in objects]


def checkpoint_registered(settings: Settings, prefix: str) -> bool:
    """Whether Ray Train's controller has registered a checkpoint of the run under ``prefix`` (its checkpoint
    manager's snapshot on S3 names one). A checkpoint's files are on S3 before that: a node lost in between
    restarts the run from scratch."""
    client = s3_client(settings)
    for key in s3_keys(settings, prefix):
        if key.endswith("/" + RAY_TRAIN_SNAPSHOT):
            response = client.get_object(settings.registry.s3_bucket, key)
            try:
                if registered_checkpoint(response.read().decode()):
                    return True
            finally:
                response.close()
                response.release_conn()
    return False


def job_settings(cluster: Cluster, **update: Any) -> tuple[Settings, str]:
    """The cluster's settings with a private registry prefix and Ray Train storage under a fresh S3 prefix."""
    prefix = f"cluster-{uuid.uuid4().hex[:8]}"
    settings = cluster.settings.replace(
        **{
            "registry_prefix": f"t{uuid.uuid4().hex[:6]}-mur-",
            "train_days": 60,
            "num_layers": 1,
            "ray_storage_path": f"s3://{cluster.settings.registry.s3_bucket}/{prefix}",
            **update,
        }
    )
    return settings, prefix


def submit(settings: Settings, logs: list[str], **options: Any) -> Any:
    from mur.orchestration.job_submission import submit_training
    from mur.timeutil import parse_time

    return submit_training(
        settings,
        PAIR,
        end=parse_time(WINDOW_END),
        num_workers=2,
        log=logs.append,
        timeout_s=900,
        **options,
    )


class Watch(threading.Thread):
    """Records where the Ray Train workers run while a training job runs (a poll per second), and the objects
    under the run's storage ``prefix`` (five polls a second, in a thread of their own: a short run's
    checkpoints live a few seconds before the run's folder is deleted, and the state API's answer can take
    longer than that on a busy machine)."""

    def __init__(self, cluster: Cluster, settings: Settings, prefix: str) -> None:
        super().__init__(daemon=True)
        self.cluster, self.settings, self.prefix = cluster, settings, prefix
        self.seen: list[set[str]] = []
        self.keys: set[str] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        keys = threading.Thread(target=self._watch_keys, daemon=True)
        keys.start()
        while not self.stop.is_set():
            with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                workers = self.cluster.train_workers()
                if workers:
                    self.seen.append({str(w["node_ip"]) for w in workers})
            self.stop.wait(1.0)
        keys.join()

    def _watch_keys(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(Exception):  # the object store's answer, or none this time
                self.keys.update(s3_keys(self.settings, self.prefix))
            self.stop.wait(0.2)


@pytest.mark.service_start
def test_ddp_places_one_worker_per_node_and_checkpoints_on_s3(cluster: Cluster) -> None:
    from mur.registry import CHAMPION, configure, model_name

    settings, prefix = job_settings(cluster, ray_placement_strategy="STRICT_SPREAD")
    watch = Watch(cluster, settings, prefix + "/")
    watch.start()
    logs: list[str] = []
    try:
        result = submit(settings, logs, epochs=3, hidden_size=8)
    finally:
        watch.stop.set()
        watch.join()
    assert result.version == 1 and result.alias == CHAMPION, result
    assert {"127.0.0.1", cluster.node_ip} in watch.seen, (
        f"two DDP workers on the two nodes (STRICT_SPREAD); seen {watch.seen}"
    )
    assert any(k.endswith("/state.pt") and "/checkpoint_" in k for k in watch.keys), (
        f"checkpoints on the S3 storage path while it ran: {sorted(watch.keys)[:10]}"
    )
    left = [
        k for k in s3_keys(settings, prefix + "/") if k != prefix + "/"
    ]  # the storage root's marker stays
    assert not left, f"the finished run's checkpoints are deleted (issue 42): {left[:10]}"
    version = configure(settings).get_model_version_by_alias(
        model_name(PAIR, settings.registry.registry_prefix), CHAMPION
    )
    assert version.version == "1"
    cluster.events.append(settings.registry.registry_prefix)


@pytest.mark.service_start
def test_a_lost_node_mid_training_resumes_from_the_s3_checkpoint(cluster: Cluster) -> None:
    settings, prefix = job_settings(cluster, ray_placement_strategy="SPREAD", patience=1000)
    watch = Watch(cluster, settings, prefix + "/")
    watch.start()
    logs: list[str] = []
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = submit(settings, logs, epochs=20, hidden_size=8)  # the node dies at epoch 2-4
        except Exception as exc:  # reported below, with the job's log
            outcome["error"] = exc

    job = threading.Thread(target=run, daemon=True)
    job.start()
    try:
        wait_for(
            "a worker on each node",
            lambda: any({"127.0.0.1", cluster.node_ip} <= s for s in watch.seen) or not job.is_alive(),
            300,
        )
        wait_for(
            "the first checkpoint registered (on S3)",
            lambda: checkpoint_registered(settings, prefix + "/") or not job.is_alive(),
            300,
        )
        assert job.is_alive(), f"the training ended before the node could be killed: {outcome} {logs[-20:]}"
        killed_at = len(watch.seen)
        cluster.kill_node()
        job.join(timeout=900)
    finally:
        watch.stop.set()
        watch.join()
        cluster.start_node()  # for the next tests
    assert not job.is_alive(), "the training did not finish after the node loss"
    assert "error" not in outcome, f"{outcome.get('error')}\n" + "\n".join(logs[-40:])
    assert outcome["result"].version is not None
    text = "\n".join(logs)
    assert "resumed from checkpoint at epoch" in text, "the new worker group starts from the S3 checkpoint"
    after = [s for s in watch.seen[killed_at:] if s]
    assert after and all(s == {"127.0.0.1"} for s in after[-3:]), f"the workers moved to the head: {after}"


# --- Serve across the two nodes -------------------------------------------------------------------------


@dataclass
class Served:
    settings: Settings
    url: str
    token: str

    def forecast(self) -> httpx.Response:
        return httpx.get(
            f"{self.url}/v1/forecast/{PAIR}", headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )

    def running_replicas(self, name: str = "forecaster") -> list[dict[str, Any]]:
        from serve_app.deploy import app_details

        details = app_details(self.settings) or {}
        deployment = (details.get("deployments") or {}).get(name) or {}
        return [r for r in deployment.get("replicas") or [] if r.get("state") == "RUNNING"]


def haproxy_servers(settings: Settings) -> list[dict[str, str]]:
    """The servers of Serve's HAProxy (its stats page as CSV): name, status, requests sent to each (stot)."""
    from devstack.serve_haproxy import HAPROXY_SIDE_PORTS

    port = HAPROXY_SIDE_PORTS["RAY_SERVE_HAPROXY_STATS_PORT"] + settings.ray.ray_dashboard_port - 8265
    page = httpx.get(f"http://127.0.0.1:{port}/stats;csv", timeout=10).text.removeprefix("# ")
    return [row for row in csv.DictReader(page.splitlines()) if row["svname"] not in ("FRONTEND", "BACKEND")]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def deployed(
    cluster: Cluster,
    pg_database_factory: Callable[..., Settings],
    deployments: list[dict[str, Any]],
    **update: Any,
) -> Iterator[tuple[Settings, str]]:
    """A champion of PAIR under a private registry prefix, the app deployed on a free port with ``deployments``
    (Serve's options per deployment) and ``update`` to its settings, and a user's token; all removed after.
    Replicas use their node's own runtime dir; every GET asks a Forecaster (no answer cache)."""
    from mur import registry
    from mur.db import Database, create_token, create_user
    from mur.training.driver import train_and_register
    from mur.training.loop import LocalFit
    from serve_app.args import AppArgs, settings_overrides
    from serve_app.deploy import app_config, put_applications, undeploy, wait_running

    db_settings = pg_database_factory()
    prefix = f"mur-c{uuid.uuid4().hex[:6]}-"
    direct = cluster.settings.replace(
        registry_prefix=prefix, pg_database=db_settings.db.pg_database, train_days=30
    )
    result = train_and_register(direct, PAIR, fit=LocalFit(), epochs=1, hidden_size=4)
    assert result.version is not None
    if result.alias != registry.CHAMPION:
        registry.configure(direct).set_registered_model_alias(
            registry.model_name(PAIR, prefix), registry.CHAMPION, str(result.version)
        )
    app_settings = direct.replace(
        **{
            "serve_port": free_port(),
            "registry_poll_s": 2.0,
            "serve_answer_ttl_s": 0.0,
            "market_data": "bundled",
            **update,
        }
    )
    overrides = settings_overrides(app_settings)
    overrides.pop("runtime_dir", None)  # each replica: its node's own MUR_RUNTIME_DIR
    config = app_config(app_settings, AppArgs(settings=overrides))
    config["applications"][0]["args"]["generation"] = int(time.time())
    config["applications"][0].setdefault("deployments", []).extend(deployments)  # after the product's own
    db = Database(db_settings, maxconn=2)
    try:
        started = time.time()
        put_applications(app_settings, config)
        wait_running(app_settings, timeout_s=420, since=started, progress=print)
        user = create_user(db, username=f"c{uuid.uuid4().hex[:10]}", password=f"Pw-{uuid.uuid4().hex}")
        token, _ = create_token(db, user_id=user.id)
        yield app_settings, token
    finally:
        with contextlib.suppress(Exception):
            undeploy(app_settings, timeout_s=180)
        db.close()
        client = registry.configure(cluster.settings)
        for model in client.search_registered_models(f"name LIKE '{prefix}%'"):
            with contextlib.suppress(Exception):
                client.delete_registered_model(model.name)


@pytest.fixture(scope="module")
def served(cluster: Cluster, pg_database_factory: Callable[..., Settings]) -> Iterator[Served]:
    """A champion, and the app deployed with 2 Forecaster replicas (Serve spreads them: one per node); the
    ingress on the head as the product places it (serve_app/deploy.py), the registry watcher there too."""
    from serve_app.deploy import HEAD_ONLY

    deployments: list[dict[str, Any]] = [
        {"name": "registry", "ray_actor_options": {"num_cpus": 0, "resources": HEAD_ONLY}},
        # Serve's default spread is best effort (seen: both replicas on the worker node): one per node forces it
        {"name": "forecaster", "max_replicas_per_node": 1},
    ]
    with deployed(cluster, pg_database_factory, deployments, serve_min_replicas=2, serve_max_replicas=2) as (
        app_settings,
        token,
    ):
        yield Served(app_settings, f"http://127.0.0.1:{app_settings.serving.serve_port}", token)


@pytest.mark.service_start
def test_replicas_on_the_worker_node_load_from_the_registry_and_answer(
    cluster: Cluster, served: Served
) -> None:
    replicas = wait_for("2 running Forecaster replicas", lambda: len(served.running_replicas()) == 2, 120)
    assert replicas
    where = {r["node_ip"] for r in served.running_replicas()}
    assert where == {"127.0.0.1", cluster.node_ip}, f"Serve spreads the 2 replicas over the 2 nodes: {where}"
    # the ingress on the head, where HAProxy reaches its HTTP server on 127.0.0.1 (serve_app/deploy.py)
    assert [r["node_ip"] for r in served.running_replicas("api")] == ["127.0.0.1"]
    answers = [served.forecast() for _ in range(12)]
    assert [a.status_code for a in answers] == [200] * 12, [a.text[:200] for a in answers]
    assert all(a.json()["pair"] == PAIR for a in answers)
    # ... through the fast path: HAProxy reached the API replica itself, not its fallback, Ray's Python proxy
    # (with the API on 127.0.0.2, its server was DOWN, "L4CON", and the fallback answered every request)
    (api,) = [row for row in haproxy_servers(served.settings) if row["svname"].startswith("SERVE_REPLICA_")]
    assert api["status"] == "UP" and int(api["stot"]) >= len(answers), api
    # both replicas answered (Serve routes among them): the worker node's replica got the ONNX bytes through
    # the registry watcher (MLflow -> S3), since its node has no file of the head's .runtime/


@pytest.mark.service_start
def test_a_lost_node_while_serving_costs_a_handful_of_json_503s(cluster: Cluster, served: Served) -> None:
    wait_for(
        "a Forecaster replica on each node",
        lambda: {r["node_ip"] for r in served.running_replicas()} == {"127.0.0.1", cluster.node_ip},
        120,
    )
    answers: list[httpx.Response | Exception] = []
    stop = threading.Event()

    def load() -> None:  # light load: one request at a time, ~5 per second
        while not stop.is_set():
            try:
                answers.append(served.forecast())
            except httpx.HTTPError as exc:
                answers.append(exc)
            stop.wait(0.2)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        wait_for("a few answers before the kill", lambda: len(answers) >= 5, 60)
        cluster.kill_node()
        # the head's replica takes every request; the lost one waits for a node (one replica per node)
        wait_for(
            "the Forecaster replicas running on the head only",
            lambda: [r["node_ip"] for r in served.running_replicas()] == ["127.0.0.1"],
            240,
            1.0,
        )
        settled = len(answers)
        wait_for("answers after the recovery", lambda: len(answers) >= settled + 10, 60)
    finally:
        stop.set()
        worker.join()
        cluster.start_node()
    wait_for(
        "the lost replica back on the rejoined node",
        lambda: {r["node_ip"] for r in served.running_replicas()} == {"127.0.0.1", cluster.node_ip},
        240,
        1.0,
    )
    errors = [a for a in answers if isinstance(a, Exception)]
    assert not errors, f"connection errors: {errors[:3]}"
    failed = [a for a in answers if isinstance(a, httpx.Response) and a.status_code != 200]
    print(f"{len(answers)} requests, {len(failed)} failed while the node was lost")
    assert len(failed) <= 5, [(a.status_code, a.text[:200]) for a in failed]
    for a in failed:
        assert a.status_code == 503 and a.headers["content-type"].startswith("application/json"), a.text[:200]
        assert a.json()
    assert all(isinstance(a, httpx.Response) and a.status_code == 200 for a in answers[-10:])


def test_the_worker_node_refuses_callers_without_the_token(cluster: Cluster) -> None:
    """Every socket of the worker node's processes (its raylet, agents, workers) beyond 127.0.0.1 refuses a
    gRPC caller without the token (``UNAUTHENTICATED``)."""
    import sys

    import psutil

    from devstack import supervisor
    from devstack.processes import session_members

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from ray_listeners import listeners, open_listeners

    pid = supervisor.running_pid(cluster.settings, f"ray-node-{NODE}")
    assert pid is not None, "the worker node is not running"
    processes = []
    for member in session_members(pid):
        with contextlib.suppress(psutil.Error):
            processes.append(psutil.Process(member))
    found = listeners(processes)
    on_node = {x for x in found if x.ip == cluster.node_ip}
    assert on_node, f"the worker node listens on {cluster.node_ip}: {sorted(found, key=str)}"
    assert any(x.name == "raylet" for x in found), f"the node's raylet: {sorted(found, key=str)}"
    assert not open_listeners(found), open_listeners(found)


def test_mur_status_lists_both_nodes(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from typer.testing import CliRunner

    from mur.cli import app
    from mur.settings import get_settings

    # the CLI reads the process-wide settings once (get_settings is cached): make it read this environment
    for key, value in {
        "MUR_RAY_NODES": str(NODE),
        "MUR_RUNTIME_DIR": str(cluster.settings.general.runtime_dir),
    }.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["status", "--json"])
        text = CliRunner().invoke(app, ["status"]).output
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    rows = {row["service"]: row for row in json.loads(result.output)}
    assert f"ray-node-{NODE}" in rows, sorted(rows)
    assert rows[f"ray-node-{NODE}"]["healthy"], rows[f"ray-node-{NODE}"]
    nodes = rows["ray"]["nodes"]
    assert {n["ip"] for n in nodes if n["state"] == "ALIVE"} >= {"127.0.0.1", cluster.node_ip}
    alive = [n for n in nodes if n["state"] == "ALIVE"]  # a node killed by an earlier test stays listed DEAD
    assert [n["head"] for n in alive if n["ip"] == cluster.node_ip] == [False]
    assert any(f"mur_node_{NODE}" in n["resources"] for n in nodes)
    assert "Ray nodes" in text and cluster.node_ip in text
