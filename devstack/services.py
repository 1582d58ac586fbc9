"""Every local service in one table, mirroring ``docker-compose.yml``: command, environment, health check,
dependencies, set-up steps.

:func:`stack_services` is the table; :mod:`devstack.supervisor` runs it. Each command is the one its
compose counterpart runs (``Service.compose`` names that service), bound to 127.0.0.1, with the health check
compose uses; ``tests/unit/test_compose.py`` compares the two. The local S3 is SeaweedFS
(:mod:`devstack.seaweed`; compose: MinIO).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from devstack import airflow, mlflow_auth, seaweed
from devstack.config import (
    RAY_LOOPBACK_SWITCH,
    ray_token,
    stack_secret,
    write_secrets_dir,
)
from devstack.gcs_redis import GCS_RECONNECT_ENV, prepare_redis, redis_dir, redis_env
from devstack.processes import venv_bin
from devstack.provision import (
    ensure_bucket,
    migrate_app_database,
    serve_diagnosis,
    undeploy_serve,
)
from devstack.serve_haproxy import HAPROXY_SIDE_PORTS, haproxy_dir, haproxy_env, prepare_haproxy
from mur.settings import PROJECT_ROOT, Settings

CORE_SERVICES: tuple[str, ...] = ("s3", "mlflow", "redis", "ray")
"""What the integration tests need (and what every other service builds on)."""


@dataclass(frozen=True)
class Service:
    """How to run, check and stop one background service."""

    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    port: int | None = None
    health_url: str | None = None  # must answer 2xx; without it, a TCP connect to the port; without a port,
    # its main process running (devstack.supervisor.answers): mur judges a service by itself, never another
    health_headers: dict[str, str] = field(default_factory=dict)  # of that request (Ray's bearer token)
    health_tls: Path | None = None  # the TCP check with a TLS handshake and this folder's client certificate
    env_unset: tuple[str, ...] = ()  # variables it must not inherit (credentials it does not use)
    host: str = "127.0.0.1"
    start_timeout_s: float = 60.0
    stop_timeout_s: float = 15.0
    killed_is_stopped: bool = False  # a SIGKILL after stop_timeout_s is its normal end (reported as stopped)
    depends_on: tuple[str, ...] = ()
    stop_first: tuple[str, ...] = ()  # process names (/proc/PID/comm) stopped before the rest of the session
    stop_last: tuple[str, ...] = ()  # ... and after it
    cwd: Path | None = None
    before_start: Callable[[], object] | None = None
    """Runs before launching (e.g. create databases); a :class:`~mur.errors.MurError` aborts the start."""
    after_start: Callable[[], object] | None = None
    """Runs once healthy (e.g. create the bucket); if it fails, the service is stopped again."""
    after_stop: Callable[[], object] | None = None
    """Runs once its processes are gone (e.g. remove the app it kept deployed on Ray); errors are reported."""
    data_dir: Path | None = None  # where it keeps its data (`mur status` shows its size on disk)
    diagnose: Callable[[], str] | None = None
    """What a start that timed out reports besides the log's tail (e.g. Serve's proxy and replica states)."""
    compose: str = ""  # its counterpart in docker-compose.yml ("" = the same name)


# Ray Serve's throughput-optimized request path, for every Serve process on the head (the controller, the
# ingress and the replicas inherit the head's environment): HAProxy forwards each request straight to an API
# replica's own HTTP server instead of Ray's Python proxy; gRPC between the API replica and the per-pair
# Forecasters; router and user code on the replica's event loop; request logs buffered. A variable already
# set in the environment wins (RAY_SERVE_ENABLE_HA_PROXY=0 brings the Python proxy back);
# benchmarks/serve.py measures the effect.
SERVE_FAST_PATH_ENV: dict[str, str] = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
    "RAY_SERVE_LOG_TO_STDERR": "0",
}
LOCAL_DRAIN_ENV = {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "3", "RAY_SERVE_HAPROXY_RETRIES": "8"}
"""A stopping API replica stays reachable 3 s, not Ray's 30 s (for outside balancers); HAProxy, the only
one here, retries elsewhere, 8 times: past the 3 refusals that mark a dead replica DOWN (docs/services.md)."""


def _ray_command(settings: Settings) -> list[str]:
    """``ray start --head --block`` as compose's ray-head, every address on the loopback interface."""
    shift = settings.ray.ray_dashboard_port - 8265
    moved = []
    if shift:  # a second head on this machine (tests): move Ray's fixed ports along
        moved = ["--ray-client-server-port", str(10001 + shift)]
        moved += ["--dashboard-agent-listen-port", str(52365 + shift)]
        moved += ["--min-worker-port", "0", "--max-worker-port", "0"]  # 0: the OS picks free ones
    return [
        *(venv_bin("ray"), "start", "--head", "--block"),
        *("--node-ip-address", "127.0.0.1"),
        *("--port", str(settings.ray.ray_gcs_port)),
        *("--dashboard-host", "127.0.0.1", "--dashboard-port", str(settings.ray.ray_dashboard_port)),
        *("--include-dashboard", "true", "--disable-usage-stats"),
        *("--num-cpus", str(settings.ray.ray_num_cpus or max(4, os.cpu_count() or 1))),
        *("--object-store-memory", str(settings.ray.ray_object_store_mb * 1024 * 1024)),
        *("--temp-dir", str(ray_temp_dir(settings))),
        *moved,
    ]


def ray_temp_dir(settings: Settings, node: int = 1) -> Path:
    """The Ray temp dir of the stack's node ``node`` (1: the head): ``ray start --temp-dir``, where Ray keeps
    its sessions, logs, runtime-env files and ``ray_current_cluster``. One per stack (its GCS port) and per
    node, never Ray's shared default ``/tmp/ray``:

    - a job's driver finds its cluster through ``{temp dir}/ray_current_cluster`` (the job supervisor
      resolves ``auto`` there), which every ``ray start --head`` on the machine rewrote: after a second stack
      (the e2e test's, a private test head) had started, the shared head's jobs connected to that one's dead
      GCS ("Failed to connect to GCS at address 127.0.0.1:15647");
    - two nodes of one cluster on one machine shared the runtime-env files, and the worker node's agent
      deleted a job's unpacked ``working_dir`` when its own workers ended, while the head's driver still ran
      in it (``FileNotFoundError`` from ``os.getcwd()``).

    Under the system temp dir and short: Ray's Unix socket paths are limited to about 107 characters."""
    suffix = "" if node == 1 else f"-n{node}"
    return Path(tempfile.gettempdir()) / f"ray-{settings.ray.ray_gcs_port}{suffix}"


RAY_LOG_ROTATION = {"RAY_ROTATION_MAX_BYTES": str(16 * 2**20), "RAY_ROTATION_BACKUP_COUNT": "2"}
"""Ray's own log rotation (its documented variables; values in the environment win): each log file of a node
(GCS, raylet, dashboard, agents, every worker's and Serve replica's output) rotates at 16 MiB and keeps 2
backups, at most 48 MiB, instead of Ray's 512 MiB and 5 backups (3 GiB per file)."""
RAY_ONE_MACHINE = {
    "RAY_LOG_MONITOR_MANY_FILES_THRESHOLD": "0",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_prestart_worker_first_driver": "0",
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",
}
"""Ray's knobs for one machine (compose keeps Ray's defaults). The log monitor looks for new worker log files
(to stream their lines to the drivers) every 0.5 s (``LOG_NAME_UPDATE_INTERVAL_S``) instead of every 0.1 s,
which Ray does below 1,000 files: each look globs the logs dir, 3-4 % of a core per node on two busy cores
(2026-11-27, 600 files). Ray Train's preemption watcher is off: an actor per training run that polls for the
drain notices a cloud gives before it reclaims a spot node, which no node on one machine ever gets (a lost node
is recovered from the checkpoint either way: tests/integration/test_cluster.py). And no workers for a node's
first driver, the job manager's, which no job could use (each has its own runtime env): they idled until the
node stopped. One process fewer per Ray job and two per node, ~2-3 CPU-s each here (2026-11-27). Serve's
controller steps every 0.5 s, not 0.1 s: each step asks the GCS for every node, and an idle stack's controller
and GCS used 0.11 of a core between them, 0.05 at 0.5 s (2026-11-29, 8 M steps/s); a replica that fails its
health check or a new deployment is acted on at most 0.4 s later."""
RAY_SESSIONS_KEPT = 1
"""Earlier ``session_*`` dirs a Ray node's temp dir keeps when it starts (Ray never removes them): the newest,
the session a restarted head takes up again (its name is in the GCS's Redis), else the last run's logs."""


def prepare_ray_node(settings: Settings, node: int = 1) -> None:
    """Before a Ray node starts: all but its newest earlier sessions removed; the head's HAProxy files, a
    worker node's runtime dir."""
    sessions = sorted(p for p in ray_temp_dir(settings, node).glob("session_*") if not p.is_symlink())
    for old in sessions[: max(0, len(sessions) - RAY_SESSIONS_KEPT)]:  # the names sort by start time
        shutil.rmtree(old, ignore_errors=True)
    if node == 1:
        prepare_haproxy(settings)
    else:
        worker_node_runtime_dir(settings, node).mkdir(parents=True, exist_ok=True)


RAY_HEAD_UNSET = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "MUR_S3_ACCESS_KEY",
    "MUR_S3_SECRET_KEY",
    "MUR_MLFLOW_USERNAME",
    "MUR_MLFLOW_PASSWORD",
)
"""S3 credentials stay out of the Ray head's environment, which every Ray worker, job and Serve replica
inherits: a job that writes Ray Train checkpoints to S3 reads them from the stack's secrets directory
(``MUR_SECRETS_DIR`` in its runtime env, :func:`devstack.config.write_secrets_dir`); MLflow proxies
every artefact, so nothing else on Ray needs them. The head's own ``MUR_SECRETS_DIR`` holds Serve's
read-only MLflow account only (a job's runtime env brings the trainer's)."""


def _ray_env(settings: Settings) -> dict[str, str]:
    shift = settings.ray.ray_dashboard_port - 8265
    side_ports = {k: str(p + shift) for k, p in HAPROXY_SIDE_PORTS.items()}
    defaults = RAY_LOG_ROTATION | RAY_ONE_MACHINE | SERVE_FAST_PATH_ENV | LOCAL_DRAIN_ENV | side_ports
    env = {
        "MLFLOW_TRACKING_URI": settings.registry.mlflow_tracking_uri,
        "MLFLOW_S3_ENDPOINT_URL": settings.registry.s3_endpoint_url,
        "AWS_EC2_METADATA_DISABLED": "true",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # jobs run `python`
        "RAY_USAGE_STATS_ENABLED": "0",
        **{k: os.environ.get(k, v) for k, v in defaults.items()},
        **GCS_RECONNECT_ENV,
        # the single-node switch: every Ray socket on 127.0.0.1 (config.RAY_LOOPBACK_SWITCH says why);
        # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 in the environment opts out
        RAY_LOOPBACK_SWITCH: os.environ.get(RAY_LOOPBACK_SWITCH, "0"),
        "MUR_SECRETS_DIR": str(write_secrets_dir(settings, "serve")),  # Serve's MLflow account (read-only)
        # token auth on every Ray API (GCS, raylets, Serve replicas' gRPC, dashboard, Jobs API)
        **settings.ray.auth_env(),
        **haproxy_env(settings),
        # Ray's own actors (Ray Train's PlacementGroupCleaner, …) find their cluster through the state API,
        # which otherwise picks the newest head on the machine (with a second stack running: the other one)
        "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{settings.ray.ray_dashboard_port}",
    }
    if sys.prefix != sys.base_prefix:
        env["VIRTUAL_ENV"] = sys.prefix
    return env


# --- worker nodes of the local stack (`mur up --nodes N`) -------------------------------------------------
HEAD_GCS_HOST = "[::ffff:127.0.0.1]"
"""How a worker node addresses the head's GCS: the head's loopback address in its IPv4-mapped IPv6 form.

A worker node must run with Ray's cluster switch on (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1``: ``ray start``
refuses to join a head otherwise), and with it on, ``ray start --address 127.0.0.1:PORT`` rewrites
``127.0.0.1`` (and ``localhost``) to the machine's LAN address, where the loopback head does not listen. The
mapped form is the same socket (the GCS listens on ``[::ffff:127.0.0.1]``) under a name Ray does not
rewrite. In a real cluster the address is the head's host name (compose: ``ray-head:6380``)."""
WORKER_NODE_ENV = {
    # a worker node joins a cluster: Ray refuses without the switch (the head keeps 0, see RAY_LOOPBACK_SWITCH)
    RAY_LOOPBACK_SWITCH: "1",
    # a node whose address is not 127.0.0.1 binds its Prometheus exporter, which has no authentication, on
    # every interface; the local worker nodes export no metrics (the head's cover Serve and the API)
    "RAY_enable_metrics_collection": "0",
}
WORKER_AGENT_PORT_STEP = 100
"""A worker node's dashboard agent port: the head's (52365) + 100 per node, as it also listens on 127.0.0.1."""


def worker_node_ip(index: int) -> str:
    """The loopback address of local worker node ``index`` (2, 3, …): 127.0.0.2, 127.0.0.3, …"""
    return f"127.0.0.{index}"


def worker_node_resource(index: int) -> str:
    """The custom resource only node ``index`` has: ``resources={name: 1}`` places a task or actor there."""
    return f"mur_node_{index}"


def worker_node_runtime_dir(settings: Settings, index: int) -> Path:
    """The node's own runtime dir (champion store, caches): nothing it runs reads the head's files."""
    return Path(settings.general.runtime_dir).resolve() / "nodes" / str(index)


def _worker_node(s: Settings, index: int) -> Service:
    """Extra Ray node ``index`` (2 … ``settings.ray.ray_nodes``), joining the head with the token: ``ray start
    --block --address HEAD`` as compose's ray-worker, on the node's own loopback address."""
    agent = 52365 + (s.ray.ray_dashboard_port - 8265) + WORKER_AGENT_PORT_STEP * (index - 1)
    return Service(
        name=f"ray-node-{index}",
        command=[
            *(venv_bin("ray"), "start", "--block"),
            *("--address", f"{HEAD_GCS_HOST}:{s.ray.ray_gcs_port}"),
            *("--node-ip-address", worker_node_ip(index)),
            *("--dashboard-agent-listen-port", str(agent)),
            *("--temp-dir", str(ray_temp_dir(s, index))),
            "--disable-usage-stats",
            *("--num-cpus", str(max(2, (os.cpu_count() or 2) // 2))),
            *("--resources", json.dumps({worker_node_resource(index): 100})),
            *("--object-store-memory", str(s.ray.ray_object_store_mb * 1024 * 1024)),
            *("--min-worker-port", "0", "--max-worker-port", "0"),  # 0: the OS picks free ones
        ],
        env={
            **_ray_env(s),
            **WORKER_NODE_ENV,
            "MUR_RUNTIME_DIR": str(worker_node_runtime_dir(s, index)),
        },
        env_unset=RAY_HEAD_UNSET,
        port=agent,
        health_url=f"http://127.0.0.1:{agent}/api/local_raylet_healthz",
        health_headers=s.ray.headers(),
        start_timeout_s=120,
        stop_timeout_s=20,
        stop_first=("raylet",),
        depends_on=("ray",),
        before_start=functools.partial(prepare_ray_node, s, index),
        data_dir=ray_temp_dir(s, index),
        compose="ray-worker",
    )


def _dash_env(settings: Settings) -> dict[str, str]:
    """A persistent secret key, Airflow's login for the "Train now" button, its read-only MLflow account."""
    env = {"MUR_SECRETS_DIR": str(write_secrets_dir(settings, "dash")), **_airflow_api_login(settings)}
    if not settings.dashboard.secret_key and settings.general.env != "production":
        env["MUR_SECRET_KEY"] = stack_secret(settings)
    return env


def _airflow_api_login(settings: Settings) -> dict[str, str]:
    """Airflow's own login for its tasks (monitoring requests a retraining through the REST API)."""
    if settings.airflow.airflow_password is None:
        return {"MUR_AIRFLOW_PASSWORD": airflow.admin_password(settings)}
    return {}


def stack_services(settings: Settings) -> dict[str, Service]:
    """The local services by name, in start order when dependencies allow."""
    if settings.ray.ray_auth_mode == "token" and not settings.ray.ray_auth_token:  # the stack's token
        settings = settings.replace(ray_auth_token=ray_token(settings))
    s, reg, ui = settings, settings.registry, settings.dashboard
    s3_url, mlflow_url = f"http://127.0.0.1:{reg.s3_port}", f"http://127.0.0.1:{reg.mlflow_port}"
    af, af_ports = venv_bin("airflow"), airflow.ports(s)
    airflow_service = functools.partial(  # what the four Airflow components share
        Service,
        env={**airflow.airflow_env(s), **_airflow_api_login(s)},
        start_timeout_s=240,
        cwd=PROJECT_ROOT,
        before_start=functools.partial(airflow.prepare, s),  # compose: airflow-init
    )
    table = [
        Service(
            name="redis",
            command=["redis-server", str(redis_dir(s) / "redis.conf")],  # no secret in it: a config file
            port=s.ray.ray_redis_port,
            health_tls=redis_dir(s) / "tls",
            before_start=functools.partial(prepare_redis, s),
            data_dir=redis_dir(s) / "data",
        ),
        Service(
            name="s3",
            command=seaweed.command(s, venv_bin("weed")),
            env={**seaweed.GO_ENV},  # a bounded heap (the Go runtime's default let it grow by ~270 MB)
            port=reg.s3_port,
            health_url=f"{s3_url}/healthz",
            stop_timeout_s=5,  # SIGTERM stops its volume server at once, then its filer waits 15 s for its S3
            killed_is_stopped=True,  # gateway's stream: killed at 5 s (kill -9 loses nothing: test_object_store)
            before_start=functools.partial(seaweed.prepare, s),
            after_start=functools.partial(ensure_bucket, s),
            data_dir=seaweed.store_dir(s) / "data",
            compose="minio",
        ),
        Service(
            name="mlflow",
            command=[
                *(venv_bin("mlflow"), "server", "--host", "127.0.0.1", "--port", str(reg.mlflow_port)),
                *("--artifacts-destination", f"s3://{reg.s3_bucket}/mlflow", "--serve-artifacts"),
                *("--workers", "1", "--app-name", "basic-auth"),  # accounts only (devstack/mlflow_auth.py)
            ],
            env={
                **s.registry.s3_env(),
                "AWS_EC2_METADATA_DISABLED": "true",  # no EC2 metadata probing: there is no cloud here
                **mlflow_auth.server_env(s),
                "MLFLOW_BACKEND_STORE_URI": s.db.sqlalchemy_url(s.db.mlflow_database),  # not in `ps`
                # MLflow's GenAI job runner (8 huey processes, ~1 GB) is not used by this project
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get(
                    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"
                ),
            },
            port=reg.mlflow_port,
            health_url=f"{mlflow_url}/health",
            start_timeout_s=180,
            depends_on=("s3",),
            before_start=functools.partial(mlflow_auth.prepare, s),  # its database, the auth app's config
            after_start=functools.partial(mlflow_auth.sync_accounts, s),
        ),
        Service(
            name="ray",
            command=_ray_command(s),
            env={**_ray_env(s), **redis_env(s)},
            env_unset=RAY_HEAD_UNSET,
            port=s.ray.ray_dashboard_port,
            health_url=f"http://127.0.0.1:{s.ray.ray_dashboard_port}/api/version",  # behind the token
            health_headers=s.ray.headers(),
            start_timeout_s=180,
            stop_timeout_s=20,
            stop_first=("raylet",),  # the order of `ray stop`: raylet, the rest, GCS last
            stop_last=("gcs_server",),
            before_start=functools.partial(prepare_ray_node, s),
            data_dir=ray_temp_dir(s),  # sessions, logs (rotated: RAY_LOG_ROTATION), runtime-env files
            depends_on=("redis",),
            compose="ray-head",
        ),
        *(_worker_node(s, index) for index in range(2, s.ray.ray_nodes + 1)),
        airflow_service(
            name="airflow-api-server",
            command=[af, "api-server", "--host", "127.0.0.1", "--port", str(s.airflow.airflow_port)],
            port=s.airflow.airflow_port,
            health_url=f"http://127.0.0.1:{s.airflow.airflow_port}/api/v2/monitor/health",
            stop_timeout_s=20,
        ),
        airflow_service(
            name="airflow-scheduler",
            # no log server: Airflow's binds every interface (host "" in airflow.utils.serve_logs) and the
            # API server reads the task logs from the local log folder; likewise the triggerer's
            command=[af, "scheduler", "--skip-serve-logs"],
            port=af_ports["scheduler"],
            health_url=f"http://127.0.0.1:{af_ports['scheduler']}/health",  # the scheduler's health server
            stop_timeout_s=10,  # idle: exits in seconds; busy: its LocalExecutor waits on tasks that ignore SIGTERM
            depends_on=("airflow-api-server",),
        ),
        *(
            airflow_service(  # health: its process (compose: `airflow jobs check`, its heartbeat in the DB)
                name=f"airflow-{component}",
                command=[af, component, *(["--skip-serve-logs"] if component == "triggerer" else [])],
                stop_timeout_s=30,
                depends_on=("airflow-api-server",),
            )
            for component in ("dag-processor", "triggerer")
        ),
        Service(
            name="serve",
            command=[sys.executable, "-m", "serve_app.keeper"],
            port=s.serving.serve_port,
            health_url=f"http://127.0.0.1:{s.serving.serve_port}/healthz",
            start_timeout_s=600,
            stop_timeout_s=20,
            env={"MUR_SECRETS_DIR": str(write_secrets_dir(s, "serve"))},  # the keeper reads the registry
            depends_on=("ray", "mlflow"),
            cwd=PROJECT_ROOT,
            after_stop=functools.partial(undeploy_serve, s),
            diagnose=functools.partial(serve_diagnosis, s, haproxy_dir(s)),
        ),
        Service(
            name="dash",
            command=[sys.executable, "-m", "dash_app", "--host", ui.dash_host, "--port", str(ui.dash_port)],
            env=_dash_env(s),
            port=ui.dash_port,
            health_url=f"http://127.0.0.1:{ui.dash_port}/login",
            start_timeout_s=180,
            stop_timeout_s=10,
            depends_on=("serve", "airflow-api-server"),
            cwd=PROJECT_ROOT,
            before_start=functools.partial(migrate_app_database, s),  # compose: migrate
        ),
    ]
    return {service.name: service for service in table}
