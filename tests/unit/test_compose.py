"""docker-compose.yml against devstack's service table and Settings, by reading both (no Docker).

Every local service (:func:`devstack.services.stack_services`; ``Service.compose`` names its counterpart) runs
its compose counterpart's program with the same flags, environment names, health check and dependencies; the
tables below are the differences by design. Compose alone: ports = Settings defaults, every ``MUR_*`` a
setting, secrets required and never defaulted, the Ray token only where Ray runs or is called. The images:
``test_images.py``; Prometheus and Grafana: ``test_monitoring_config.py``.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.services import (
    LOCAL_DRAIN_ENV,
    RAY_LOG_ROTATION,
    RAY_ONE_MACHINE,
    SERVE_FAST_PATH_ENV,
    stack_services,
)
from mur.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TEXT = "\n".join(x for x in (ROOT / "docker-compose.yml").read_text().splitlines() if x.lstrip()[:1] != "#")
COMPOSE: dict[str, Any] = yaml.safe_load(TEXT)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
VAR = re.compile(r"(?<!\$)\$\{(?P<name>\w+)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")
#: Never defaulted in compose: only ``${VAR:?…}`` (``${VAR?…}``: may be empty).
SECRETS = set(
    "POSTGRES_PASSWORD MINIO_ROOT_USER MINIO_ROOT_PASSWORD MUR_S3_ACCESS_KEY MUR_S3_SECRET_KEY MUR_SECRET_KEY "
    "MUR_AIRFLOW_PASSWORD MUR_DISCORD_WEBHOOK_URL RAY_AUTH_TOKEN MUR_PG_APP_PASSWORD AIRFLOW_FERNET_KEY "
    "AIRFLOW_API_SECRET_KEY AIRFLOW_JWT_SECRET GRAFANA_ADMIN_PASSWORD MLFLOW_ADMIN_PASSWORD "
    "MLFLOW_FLASK_SERVER_SECRET_KEY".split()
)
SECRET_NAME = re.compile(r"PASSWORD|SECRET|_KEY(_ID)?$|TOKEN|WEBHOOK")
#: The ports each service answers on (settings; published unless in UNPUBLISHED), or fixed ports.
PORTS: dict[str, set[str | int]] = {
    "postgres": {"pg_port"},
    "minio": {"s3_port"},
    "mlflow": {"mlflow_port"},
    "ray-head": {"ray_dashboard_port", "serve_port", "ray_gcs_port"},
    "airflow-api-server": {"airflow_port"},
    "dash": {"dash_port"},
    "airflow-scheduler": {8974},  # its health server
    "ray-worker": {52365},  # Ray's dashboard agent
    "prometheus": {9090},  # the operators' monitoring, published on ADMIN_BIND_ADDRESS
    "grafana": {3000},
}
UNPUBLISHED = {"pg_port", "ray_gcs_port", 8974, 52365}
ONE_SHOTS = {"minio-init", "migrate", "airflow-init"}
COMPOSE_ONLY = {"postgres", "prometheus", "grafana"} | ONE_SHOTS  # locally: the machine's PostgreSQL
# Local vs compose by design: SeaweedFS for MinIO (the port only); flags whose value is a loopback bind or address,
# the machine's size, or several nodes on one machine (docs/scale-out.md); MLflow answers its service name.
DIFFERENT_PROGRAM = {"s3"}
ANY_VALUE = {"--host", "--dashboard-host", "--address", "--dashboard-agent-listen-port"}
MACHINE_FLAGS = {"--num-cpus", "--workers", "--data-dir", "--object-store-memory"}
LOCAL_FLAGS = {"--node-ip-address", "--min-worker-port", "--max-worker-port", "--resources", "--temp-dir"}
COMPOSE_FLAGS = {"--allowed-hosts", "--redis-password"}  # the GCS's Redis: locally mutual TLS, no password
# Environment for this machine only: paths; one machine's Ray (a loopback head, HAProxy's files in the stack's
# private dir: devstack/haproxy_wrapper.py; a worker node without metrics exporter; a short ingress drain,
# devstack.services.LOCAL_DRAIN_ENV); generated secrets.
LOCAL_ENV = set(
    "PATH VIRTUAL_ENV NO_PROXY PYTHONUNBUFFERED RAY_API_SERVER_ADDRESS "
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER RAY_enable_metrics_collection MUR_SECRET_KEY MUR_AIRFLOW_PASSWORD "
    "MUR_RUNTIME_DIR".split()
) | {f"RAY_SERVE_HAPROXY_{k}" for k in "BINARY_PATH CONFIG_FILE_LOC SOCKET_PATH METRICS_SOCKET_PATH".split()}
LOCAL_ENV |= {"RAY_SERVE_HAPROXY_SERVER_STATE_BASE", "RAY_SERVE_HAPROXY_SERVER_STATE_FILE", *LOCAL_DRAIN_ENV}
LOCAL_ENV |= {"RAY_REDIS_CA_CERT", "RAY_REDIS_CLIENT_CERT", "RAY_REDIS_CLIENT_KEY"}  # the local Redis's TLS
# one machine's Ray: its logs, no spot node to watch, no idle workers (compose: Ray's defaults)
LOCAL_ENV |= set(RAY_LOG_ROTATION) | set(RAY_ONE_MACHINE)
SAME_VALUE_ENV = set(
    "AWS_DEFAULT_REGION AWS_EC2_METADATA_DISABLED RAY_USAGE_STATS_ENABLED AIRFLOW__CORE__EXECUTOR "
    "AIRFLOW__CORE__AUTH_MANAGER AIRFLOW__CORE__LOAD_EXAMPLES AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK "
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST AIRFLOW__DAG_PROCESSOR__HEALTH_CHECK_THRESHOLD "
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD".split()
)
RAY_CLIENTS = {"ray-head", "ray-worker", "serve", "airflow-scheduler", "airflow-api-server"}
S3_KEY_FILES = {"mur_s3_access_key", "mur_s3_secret_key"}  # compose secrets (files), never the environment


def resolve(value: Any) -> Any:
    """Interpolation with an empty .env: defaults apply, required variables become ``<NAME>``; a value that
    is no string (None: passed through from .env) is returned as it is."""

    def sub(m: re.Match[str]) -> str:
        return (
            (m["arg"] or "") if m["op"] in (":-", "-") else f"<{m['name']}>" if "?" in (m["op"] or "") else ""
        )

    return VAR.sub(sub, value.replace("$$", "\0")).replace("\0", "$") if isinstance(value, str) else value


# by service (test_kuberay.py compares the Kubernetes manifests with compose through these too)
def environment(service: dict[str, Any]) -> dict[str, Any]:
    return dict(service.get("environment") or {})  # the file uses the mapping syntax


def command(service: dict[str, Any]) -> list[str]:
    return [resolve(str(t)) for t in service.get("command") or []]


def env(name: str) -> dict[str, Any]:
    return environment(SERVICES[name])


def argv(name: str) -> list[str]:
    return command(SERVICES[name])


def flags(args: list[str]) -> dict[str, str | None]:
    """``--flag value``, ``--flag=value`` and ``--flag`` of a command line."""
    found: dict[str, str | None] = {}
    for i, token in enumerate(args):
        name, eq, inline = token.partition("=")
        following = args[i + 1] if i + 1 < len(args) and args[i + 1][:2] != "--" else None
        if token.startswith("--"):
            found[name] = inline if eq else following
    return found


def signature(args: list[str]) -> tuple[str, ...]:
    """Program (``python*`` -> ``python``, with ``-m module``) and its leading sub-commands."""
    exe = re.sub(r"^python[\d.]*$", "python", os.path.basename(args[0]))
    words = [exe, *args[1:3]] if exe == "python" and args[1] == "-m" else [exe]
    for token in args[len(words) :]:
        if token.startswith("-"):
            break
        words.append(token)
    return tuple(words)


def check(name: str) -> list[str]:
    kind, *rest = [resolve(str(t)) for t in (SERVICES[name].get("healthcheck") or {}).get("test") or ["NONE"]]
    return shlex.split(rest[0]) if kind == "CMD-SHELL" else rest


def published(name: str) -> set[tuple[int, ...]]:
    return {tuple(int(p) for p in resolve(str(x)).split(":")[-2:]) for x in SERVICES[name].get("ports") or []}


def waits_for(name: str) -> set[str]:
    deps = set(SERVICES[name].get("depends_on") or {})
    return deps.union(*(waits_for(d) for d in deps))


def clean_settings(**values: Any) -> Settings:
    """Settings from their defaults (no MUR_* of this process, no .env)."""
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("MUR_")]:
            mp.delenv(key)
        return Settings(_env_file=None, **values)


_DEFAULT = clean_settings()  # flat(): the grouped settings (issue 23); model_dump() the flat ones
DEFAULTS = {f"MUR_{k.upper()}": v for k, v in getattr(_DEFAULT, "flat", _DEFAULT.model_dump)().items()}
# with a worker node (`mur up --nodes 2`), which mirrors compose's ray-worker
LOCAL = stack_services(clean_settings(runtime_dir=Path("/nonexistent-runtime"), ray_nodes=2))


def port(setting: str | int) -> int:
    return setting if isinstance(setting, int) else DEFAULTS[f"MUR_{setting.upper()}"]


def test_the_same_services_run_locally_and_in_compose() -> None:
    assert {s.compose or n for n, s in LOCAL.items()} == set(SERVICES) - COMPOSE_ONLY
    text = resolve(TEXT)
    for name, ports in PORTS.items():  # every `service:port` written anywhere is one of its ports
        found = {int(p) for p in re.findall(rf"(?<![\w.-]){re.escape(name)}:(\d+)(?![\w.-])", text)}
        assert found <= {port(p) for p in ports}, f"{name}:{found} in docker-compose.yml"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_health_restart_dependencies_ports(name: str) -> None:
    svc, health = SERVICES[name], SERVICES[name].get("healthcheck") or {}
    assert svc.get("restart") in (("no", "on-failure") if name in ONE_SHOTS else ("unless-stopped",))
    assert bool(health.get("test")) != (name in ONE_SHOTS) and not health.get("disable"), "a long runner"
    for dep, spec in svc.get("depends_on", {}).items():
        done = "service_completed_successfully" if dep in ONE_SHOTS else "service_healthy"
        assert dep in SERVICES and spec["condition"] == done, f"{name} -> {dep}"
    assert name[:8] != "airflow-" or name == "airflow-init" or "airflow-init" in svc["depends_on"]
    ports = {port(p) for p in PORTS.get(name, set())}
    assert published(name) == {(p, p) for p in ports - {port(p) for p in UNPUBLISHED}}
    assert {int(p) for p in re.findall(r"localhost:(\d+)", " ".join(check(name)))} <= ports
    for key, value in env(name).items():
        assert key[:4] != "MUR_" or key in DEFAULTS, f"{key} is no setting"
        if key.endswith("_PORT") and key in DEFAULTS and value is not None:
            assert resolve(str(value)) == str(DEFAULTS[key]), key
    if any(k[:4] == "MUR_" for k in env(name)) and name not in ("postgres", "minio-init"):
        assert env(name).get("MUR_ENV") == "production"


@pytest.mark.parametrize("name", sorted(LOCAL))
def test_every_local_service_mirrors_its_compose_counterpart(name: str) -> None:
    """Same program and flags, the same environment names, the same health check, no extra dependencies."""
    local, prod = LOCAL[name], LOCAL[name].compose or name
    assert {LOCAL[d].compose or d for d in local.depends_on} <= waits_for(prod)
    if name in DIFFERENT_PROGRAM:
        assert (local.port, local.port) in published(prod)
        return
    if name == "redis":  # compose writes its config (the password from its secret file) in `sh -c`
        assert local.command[0] == "redis-server" and "exec redis-server " in argv(prod)[-1]
        assert f"--port {local.port} " in argv(prod)[-1] and "redis-cli" in " ".join(check(prod))
        return
    assert signature(argv(prod)) == signature(local.command), f"{argv(prod)}, locally {local.command}"
    mine, theirs = flags(local.command), flags(argv(prod))
    assert set(mine) - LOCAL_FLAGS - MACHINE_FLAGS == set(theirs) - COMPOSE_FLAGS - MACHINE_FLAGS
    compared = set(mine) & set(theirs) - ANY_VALUE - MACHINE_FLAGS
    assert {f: mine[f] for f in compared} == {f: theirs[f] for f in compared}
    for key, value in local.env.items():
        assert key in LOCAL_ENV or key in env(prod), f"the local service sets {key}, compose does not"
        assert key not in SAME_VALUE_ENV or resolve(str(env(prod)[key])) == value, key
    if name in ("airflow-dag-processor", "airflow-triggerer"):  # each judged by itself, never another service
        job = {"airflow-dag-processor": "DagProcessorJob", "airflow-triggerer": "TriggererJob"}[name]
        assert check(prod) == ["airflow", "jobs", "check", "--job-type", job, "--local"]  # its own heartbeat
        assert local.health_url is None and local.port is None  # locally: its process (the watchdog's rule)
        return
    assert local.health_url, name  # the same path (maybe piped to grep)
    path = "/" + local.health_url.split("://", 1)[1].split("/", 1)[1]
    assert re.search(re.escape(path) + r"(\s|$)", " ".join(check(prod))), f"probe {path}"


@pytest.mark.parametrize("match", list(VAR.finditer(TEXT)), ids=lambda m: m[0][:48])
def test_interpolations_are_settings_defaults_and_required_secrets(match: re.Match[str]) -> None:
    name, op = match["name"], match["op"]
    assert name[:4] != "MUR_" or name in DEFAULTS, f"{name} is no setting"
    if name in SECRETS:
        assert op in (":?", "?"), "a secret is required, never defaulted"
    elif name in DEFAULTS and op in (":-", "-"):
        assert match["arg"] == str(DEFAULTS[name]), f"the setting's default is {DEFAULTS[name]!r}"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_secrets_and_tokens_reach_only_who_needs_them(name: str) -> None:
    values = env(name)
    for key, value in values.items():
        if value is not None and SECRET_NAME.search(key) and not key.endswith(("_FILE", "_DIR")):
            refs = {m["name"] for m in VAR.finditer(str(value))}
            assert refs and refs <= SECRETS, f"{key} must come from a secret in .env"
        if re.search(r"://[^/@\s]+:[^/@\s]+@", str(value)):
            assert "${POSTGRES_PASSWORD:?" in str(value), f"{key} embeds a password literally"
        if value and key in (
            "MUR_PG_HOST",
            "MUR_S3_ENDPOINT_URL",
            "MUR_MLFLOW_TRACKING_URI",
            "MUR_RAY_ADDRESS",
        ):
            assert re.split(r"[:/]", re.sub(r"^\w+://", "", resolve(str(value))))[0] in SERVICES, key
    if name in RAY_CLIENTS:  # issue 22: Ray's token where Ray runs or is called
        assert (
            resolve(values["RAY_AUTH_MODE"]) == "token" and "${RAY_AUTH_TOKEN:?" in values["RAY_AUTH_TOKEN"]
        )
    assert name in RAY_CLIENTS or name[:8] == "airflow-" or "RAY_AUTH_TOKEN" not in values  # dash, mlflow…
    if name in ("ray-head", "ray-worker", "serve"):  # and the S3 keys stay out of every Ray process
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MUR_S3_SECRET_KEY"} & set(values)
    assert "MUR_SECRETS_DIR" not in values or S3_KEY_FILES <= set(SERVICES[name].get("secrets") or [])
    if name in ("prometheus", "grafana"):  # admin UIs: on the admin address, by default the loopback
        assert all(p.startswith("${ADMIN_BIND_ADDRESS:-127.0.0.1}:") for p in SERVICES[name]["ports"])


def test_settings_secrets_and_hosts_reach_the_containers() -> None:
    fields = set(DEFAULTS) - {"MUR_RAY_AUTH_MODE", "MUR_RAY_AUTH_TOKEN"} - {k.upper() for k in S3_KEY_FILES}
    assert fields <= set(COMPOSE["x-mur-settings"]), "add them to x-mur-settings (no value: from .env)"
    assert SECRETS <= {m["name"] for m in VAR.finditer(TEXT)}, "a secret is never used"
    assert all(source == {"environment": name.upper()} for name, source in COMPOSE["secrets"].items())
    assert env("serve")["MUR_SERVE_HOST"] == env("dash")["MUR_DASH_HOST"] == "0.0.0.0"
    assert env("dash")["MUR_SERVE_HOST"] in SERVICES, "the dashboard calls the API by its service name"
    for name in ("ray-head", "ray-worker"):  # Serve's request path as on the local head
        assert {k: str(env(name).get(k)) for k in SERVE_FAST_PATH_ENV} == SERVE_FAST_PATH_ENV
    assert signature(argv("migrate")) == ("mur", "db", "migrate")
    assert signature(argv("ray-worker")) == ("ray", "start") and "--block" in argv("ray-worker")
    assert flags(argv("ray-worker"))["--address"] == f"ray-head:{DEFAULTS['MUR_RAY_GCS_PORT']}"
    for name, db, key in (
        ("mlflow", "mlflow", "MLFLOW_BACKEND_STORE_URI"),
        ("airflow-scheduler", "airflow", ""),
    ):
        conn = resolve(env(name)[key or "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        assert conn.startswith("postgresql+psycopg2://") and conn.endswith(f"/{db}"), conn
    # Airflow 3 would derive postgresql+asyncpg; asyncpg is no dependency of the images, psycopg 3 is
    conn = resolve(env("airflow-scheduler")["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"])
    assert conn.startswith("postgresql+psycopg://") and conn.endswith("/airflow")
