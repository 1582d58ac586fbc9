"""docker-compose.yml agrees with mur.settings.Settings and with the local service table (pure parsing, no Docker).

No Docker engine runs here, so the production stack is checked by reading it: healthchecks, dependency
conditions, published ports = Settings defaults, MUR_* names = Settings fields, secrets without defaults, the
GPU reservation, named volumes; and every entry of :func:`mur.devstack.services.stack_services` against its
compose counterpart, generically: program, flags, environment, health check, dependencies.
`docker compose config -q` (where Compose is installed) checks the file against the Compose specification.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mur.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "infra" / "docker" / "Dockerfile"

# Variables that are secrets: never a default in the compose file (only ${VAR:?…}, or ${VAR?…} = may be empty).
SECRETS = {
    "POSTGRES_PASSWORD",
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
    "MUR_S3_ACCESS_KEY",
    "MUR_S3_SECRET_KEY",
    "MUR_SECRET_KEY",
    "MUR_AIRFLOW_PASSWORD",
    "MUR_DISCORD_WEBHOOK_URL",
    "RAY_AUTH_TOKEN",
    "MUR_PG_APP_PASSWORD",
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_API_SECRET_KEY",
    "AIRFLOW_JWT_SECRET",
    "GRAFANA_ADMIN_PASSWORD",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|_KEY(_ID)?$|TOKEN|WEBHOOK")

# Ports each service publishes / answers on, as Settings fields (the values are the Settings defaults).
SERVICE_PORTS = {
    "postgres": {"pg_port"},
    "minio": {"s3_port"},
    "mlflow": {"mlflow_port"},
    "ray-head": {"ray_dashboard_port", "serve_port", "ray_gcs_port"},
    "airflow-api-server": {"airflow_port"},
    "dash": {"dash_port"},
}
PUBLISHED = {
    "minio": {"s3_port"},
    "mlflow": {"mlflow_port"},
    "ray-head": {"ray_dashboard_port", "serve_port"},
    "airflow-api-server": {"airflow_port"},
    "dash": {"dash_port"},
}
# The operators' monitoring (no Settings field): published on ADMIN_BIND_ADDRESS, probed by their healthchecks.
MONITORING_PORTS = {"prometheus": {9090}, "grafana": {3000}}
# Container-internal ports that are no Settings field: scheduler health server, Ray's dashboard agent.
INTERNAL_PORTS = {"airflow-scheduler": {8974}, "ray-worker": {52365}, **MONITORING_PORTS}

# What the compose-only services run (the others are compared with the local table below).
EXPECTED_COMMANDS = {
    "ray-worker": ("ray", "start"),
    "migrate": ("mur", "db", "migrate"),
}

# The local S3 is moto, production's MinIO: only their port is compared.
DIFFERENT_PROGRAM = {"s3"}
# Flags whose value differs by design: bind addresses (the loopback locally) and the machine's size.
HOST_FLAGS = {"--host", "--dashboard-host"}
MACHINE_FLAGS = {"--num-cpus", "--workers", "--data-dir", "--object-store-memory"}
LOCAL_ONLY_FLAGS = {
    "--node-ip-address",  # a container's node address is its own interface
    # local worker nodes (`mur up --nodes 2`, one machine): Ray's worker ports picked by the OS, and a custom
    # resource per node so that a test can place work on it (docs/scale-out.md)
    "--min-worker-port",
    "--max-worker-port",
    "--resources",
    "--temp-dir",  # two nodes on one machine need their own Ray temp dirs (a container has its own /tmp)
}
# Flags whose value is an address or port on this machine's loopback interface: a worker node reaches the
# head at [::ffff:127.0.0.1] (mur.devstack.services.HEAD_GCS_HOST says why), and its dashboard agent, which
# also listens on 127.0.0.1, moves off the head's port; compose's ray-worker says ray-head:6380 and 52365.
NODE_ADDRESS_FLAGS = {"--address", "--dashboard-agent-listen-port"}
PROD_ONLY_FLAGS = {"--allowed-hosts"}  # MLflow answers under the service name too
# Environment the local runner sets for its own machine only.
LOCAL_ONLY_ENV = {
    "PATH",
    "VIRTUAL_ENV",
    "NO_PROXY",
    "PYTHONUNBUFFERED",
    "MOTO_S3_DEFAULT_KEY_BUFFER_SIZE",
    "RAY_API_SERVER_ADDRESS",  # pins Ray's actors to their own head when two run on one machine
    # a single-node head on 127.0.0.1 (docs/services.md); compose's head is joined by other containers
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
    # HAProxy's files in the stack's private directory and the launcher binding its side ports to 127.0.0.1
    # (mur/devstack/haproxy_wrapper.py); in a container those ports stay inside unless published
    "RAY_SERVE_HAPROXY_BINARY_PATH",
    "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC",
    "RAY_SERVE_HAPROXY_SOCKET_PATH",
    "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH",
    "RAY_SERVE_HAPROXY_SERVER_STATE_BASE",
    "RAY_SERVE_HAPROXY_SERVER_STATE_FILE",
    "MUR_SECRET_KEY",  # generated once locally; compose takes it from .env (x-mur-settings)
    "MUR_AIRFLOW_PASSWORD",
    # a local worker node: its own runtime dir, and no metrics exporter (it would bind every interface,
    # unauthenticated, since the node's address is not 127.0.0.1; mur.devstack.services.WORKER_NODE_ENV)
    "MUR_RUNTIME_DIR",
    "RAY_enable_metrics_collection",
}
# Environment whose value must be the same locally and in production.
SAME_VALUE_ENV = {
    "AIRFLOW__DAG_PROCESSOR__HEALTH_CHECK_THRESHOLD",
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD",
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__CORE__AUTH_MANAGER",
    "AIRFLOW__CORE__LOAD_EXAMPLES",
    "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST",
    "AWS_DEFAULT_REGION",
    "AWS_EC2_METADATA_DISABLED",
    "RAY_USAGE_STATS_ENABLED",
}

_INTERPOLATION = re.compile(
    r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
)


# --- helpers ---------------------------------------------------------------------------------------------
def resolve(value: Any) -> Any:
    """Compose interpolation with an empty .env: defaults apply, required secrets become ``<NAME>``."""
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        op, arg = m.group("op"), m.group("arg") or ""
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            return f"<{m.group('name')}>"
        return ""

    return _INTERPOLATION.sub(sub, value.replace("$$", "\0")).replace("\0", "$")


def env_var(field: str) -> str:
    return "MUR_" + field.upper()


def field_of(var: str) -> str | None:
    """Settings field named by ``MUR_X`` (None when there is none)."""
    name = var.removeprefix("MUR_").lower()
    return name if var.startswith("MUR_") and name in Settings.model_fields else None


def environment(service: dict[str, Any]) -> dict[str, Any]:
    """A service's environment as a dict (list or mapping syntax); unresolved."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return dict(env)


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return [resolve(str(t)) for t in (cmd.split() if isinstance(cmd, str) else cmd)]


def healthcheck_text(service: dict[str, Any]) -> str:
    test = (service.get("healthcheck") or {}).get("test") or []
    return resolve(test if isinstance(test, str) else " ".join(str(t) for t in test))


def signature(argv: list[str]) -> tuple[str, ...]:
    """Executable (basename, ``python*`` → ``python``) + ``-m module`` + leading positional sub-commands."""
    if not argv:
        return ()
    exe = os.path.basename(argv[0])
    exe = "python" if re.fullmatch(r"python(\d+(\.\d+)?)?", exe) else exe
    rest = list(argv[1:])
    sig = [exe]
    if exe == "python" and rest[:1] == ["-m"] and len(rest) > 1:
        sig += ["-m", rest[1]]
        rest = rest[2:]
    for token in rest:
        if token.startswith("-"):
            break
        sig.append(token)
    return tuple(sig)


def healthcheck_argv(service: dict[str, Any]) -> list[str]:
    """The healthcheck as a command line (``CMD`` list, or the ``CMD-SHELL`` string split)."""
    test = (service.get("healthcheck") or {}).get("test") or []
    if isinstance(test, str):
        return shlex.split(resolve(test))
    kind, *rest = [resolve(str(t)) for t in test]
    return shlex.split(rest[0]) if kind == "CMD-SHELL" else rest


def compose_closure(services: dict[str, Any], name: str) -> set[str]:
    """Every service ``name`` waits for, directly or through others (one-shots included)."""
    seen: set[str] = set()
    pending = [name]
    while pending:
        for dep in services[pending.pop()].get("depends_on") or {}:
            if dep not in seen:
                seen.add(dep)
                pending.append(dep)
    return seen


def flags(argv: list[str]) -> dict[str, str | None]:
    """``--flag value`` / ``--flag`` pairs of a command line."""
    found: dict[str, str | None] = {}
    for i, token in enumerate(argv):
        if token.startswith("--"):
            name, eq, inline = token.partition("=")
            nxt = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else None
            found[name] = inline if eq else nxt
    return found


def published(service: dict[str, Any]) -> list[tuple[int, int]]:
    """(host port, container port) of each published port (short or long syntax)."""
    pairs = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            pairs.append((int(resolve(str(entry["published"]))), int(entry["target"])))
            continue
        parts = resolve(str(entry)).split("/")[0].split(":")
        assert len(parts) >= 2, f"port {entry!r}: publish host:container explicitly"
        pairs.append((int(parts[-2]), int(parts[-1])))
    return pairs


@contextlib.contextmanager
def clean_mur_env() -> Iterator[None]:
    """No MUR_* from the test process: Settings gives its defaults."""
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith("MUR_"):
                mp.delenv(key)
        yield


# --- fixtures --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def raw() -> str:
    """The compose file without its comments (they quote ${VAR:?…} as an example)."""
    return "\n".join(line for line in COMPOSE.read_text().splitlines() if not line.lstrip().startswith("#"))


@pytest.fixture(scope="module")
def compose(raw: str) -> dict[str, Any]:
    data = yaml.safe_load(raw)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def defaults() -> Settings:
    with clean_mur_env():
        return Settings(_env_file=None)


@pytest.fixture(scope="module")
def local_services(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The local service table (built only: nothing is started)."""
    from mur.devstack.services import stack_services

    with clean_mur_env():
        # with a worker node (`mur up --nodes 2`): it mirrors compose's ray-worker too
        settings = Settings(_env_file=None, runtime_dir=tmp_path_factory.mktemp("runtime"), ray_nodes=2)
        return stack_services(settings)


def one_shots(services: dict[str, dict[str, Any]]) -> set[str]:
    """Services others wait for with ``service_completed_successfully``."""
    return {
        dep
        for svc in services.values()
        for dep, spec in (svc.get("depends_on") or {}).items()
        if isinstance(spec, dict) and spec.get("condition") == "service_completed_successfully"
    }


# --- structure -------------------------------------------------------------------------------------------
def test_expected_services_exist(services: dict[str, Any]) -> None:
    wanted = {
        "postgres",
        "minio",
        "minio-init",
        "migrate",
        "mlflow",
        "airflow-init",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "ray-head",
        "ray-worker",
        "serve",
        "dash",
        "prometheus",
        "grafana",
    }
    assert wanted <= set(services), f"missing services: {sorted(wanted - set(services))}"


def test_every_long_running_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    shots = one_shots(services)
    for name, svc in services.items():
        if name in shots:
            assert svc.get("restart") in ("no", "on-failure"), f"one-shot {name} must not restart forever"
            assert "healthcheck" not in svc, f"one-shot {name} needs no healthcheck"
            continue
        check = svc.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        assert svc.get("restart") == "unless-stopped", f"{name}: restart: unless-stopped"


def test_depends_on_uses_conditions(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on must use the long form with conditions"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            condition = (spec or {}).get("condition")
            assert condition in ("service_healthy", "service_completed_successfully"), (
                f"{name} → {dep}: condition {condition!r}"
            )
            if condition == "service_healthy":
                assert services[dep].get("healthcheck"), (
                    f"{name} waits for {dep} to be healthy: it has no check"
                )


def test_one_shots_run_the_setup_steps(services: dict[str, Any]) -> None:
    assert {"minio-init", "migrate", "airflow-init"} <= one_shots(services)
    for component in (
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
    ):
        deps = services[component]["depends_on"]
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", component


# --- ports -----------------------------------------------------------------------------------------------
def test_published_ports_are_the_settings_defaults(services: dict[str, Any], defaults: Settings) -> None:
    for name, svc in services.items():
        ports = published(svc)
        wanted = {getattr(defaults, f) for f in PUBLISHED.get(name, set())} | MONITORING_PORTS.get(
            name, set()
        )
        assert {c for _, c in ports} == wanted, f"{name} publishes {ports}, expected {sorted(wanted)}"
        for host, container in ports:
            assert host == container, f"{name}: publish {container} on the same host port, not {host}"
    assert not published(services["ray-worker"]), "ray-worker must publish nothing (it is scaled)"


def test_service_addresses_use_the_settings_ports(
    raw: str, services: dict[str, Any], defaults: Settings
) -> None:
    """Every ``<service>:<port>`` written anywhere (URLs, --address, healthchecks) is that service's port."""
    text = resolve(raw)
    for name, fields in SERVICE_PORTS.items():
        allowed = {getattr(defaults, f) for f in fields}
        for port in re.findall(rf"(?<![\w.-]){re.escape(name)}:(\d+)(?![\w.-])", text):
            assert int(port) in allowed, (
                f"{name}:{port} in docker-compose.yml; Settings says {sorted(allowed)}"
            )
    for name, svc in services.items():
        own = {getattr(defaults, f) for f in SERVICE_PORTS.get(name, set())} | INTERNAL_PORTS.get(name, set())
        for port in re.findall(r"localhost:(\d+)", healthcheck_text(svc)):
            assert int(port) in own, (
                f"{name}'s healthcheck probes localhost:{port}, not one of its ports {own}"
            )


def test_mur_port_variables_are_the_settings_defaults(services: dict[str, Any], defaults: Settings) -> None:
    for name, svc in services.items():
        for key, value in environment(svc).items():
            field = field_of(key)
            if field and field.endswith("_port") and value is not None:
                assert resolve(str(value)) == str(getattr(defaults, field)), f"{name}: {key}={value}"


# --- environment -----------------------------------------------------------------------------------------
def test_mur_variables_are_settings_fields(raw: str, services: dict[str, Any]) -> None:
    used = {key for svc in services.values() for key in environment(svc) if key.startswith("MUR_")}
    used |= {m.group("name") for m in _INTERPOLATION.finditer(raw) if m.group("name").startswith("MUR_")}
    unknown = sorted(v for v in used if field_of(v) is None)
    assert not unknown, f"not fields of mur.settings.Settings: {unknown}"


S3_KEY_FILES = {"mur_s3_access_key": "s3_access_key", "mur_s3_secret_key": "s3_secret_key"}
"""The S3 keys reach the containers as compose secrets (files in MUR_SECRETS_DIR), never their environment."""
RAY_AUTH_FIELDS = {"ray_auth_mode": "RAY_AUTH_MODE", "ray_auth_token": "RAY_AUTH_TOKEN"}
"""Ray's own variables (Settings reads them by Ray's names): set only where Ray runs or is called."""


def test_every_settings_field_reaches_the_containers(compose: dict[str, Any]) -> None:
    shared = compose.get("x-mur-settings") or {}
    fields = set(Settings.model_fields) - set(RAY_AUTH_FIELDS) - set(S3_KEY_FILES.values())
    missing = sorted(env_var(f) for f in fields if env_var(f) not in shared)
    assert not missing, (
        f"add {missing} to x-mur-settings in docker-compose.yml (a key without a value passes .env through)"
    )


def test_ray_token_reaches_ray_and_its_clients_only(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    """Issue 22: the head, the workers and every Ray client (Airflow's tasks, the Serve keeper) share the
    token; services that never call Ray (dashboard, MLflow, migrate) do not get it."""
    for name in ("ray-head", "ray-worker", "serve", "airflow-scheduler", "airflow-api-server"):
        env = environment(services[name])
        assert resolve(str(env["RAY_AUTH_MODE"])) == "token", name
        assert "${RAY_AUTH_TOKEN:?" in str(env["RAY_AUTH_TOKEN"]), name
    for name in ("dash", "mlflow", "migrate"):
        assert "RAY_AUTH_TOKEN" not in environment(services[name]), name
    for name in ("ray-head", "ray-worker", "serve"):  # S3 keys stay out of every Ray process's environment
        env = environment(services[name])
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MUR_S3_SECRET_KEY"} & set(env), name
    for name, svc in services.items():  # every container with the settings reads them as files
        if "MUR_SECRETS_DIR" in environment(svc):
            assert set(S3_KEY_FILES) <= set(svc.get("secrets") or []), name
    for name, source in compose["secrets"].items():
        assert source == {"environment": name.upper()}, name


def test_interpolation_defaults_are_the_settings_defaults(raw: str, defaults: Settings) -> None:
    for m in _INTERPOLATION.finditer(raw):
        field = field_of(m.group("name"))
        if field and m.group("op") in (":-", "-"):
            assert m.group("arg") == str(getattr(defaults, field)), (
                f"${{{m.group('name')}:-{m.group('arg')}}}: Settings default is {getattr(defaults, field)!r}"
            )


def test_containers_get_production_settings(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        env = environment(svc)
        if any(k.startswith("MUR_") for k in env) and name not in ("postgres", "minio-init"):
            assert env.get("MUR_ENV") == "production", f"{name}: MUR_ENV=production"
    assert environment(services["serve"])["MUR_SERVE_HOST"] == "0.0.0.0"
    assert environment(services["dash"])["MUR_DASH_HOST"] == "0.0.0.0"
    assert environment(services["dash"])["MUR_SERVE_HOST"] in services, "the dashboard calls the API by name"
    for name in ("migrate", "mlflow", "airflow-scheduler", "ray-head", "ray-worker", "serve", "dash"):
        env = {k: resolve(str(v)) for k, v in environment(services[name]).items() if v is not None}
        for key in ("MUR_PG_HOST", "MUR_S3_ENDPOINT_URL", "MUR_MLFLOW_TRACKING_URI", "MUR_RAY_ADDRESS"):
            if key in env:
                host = re.sub(r"^\w+://", "", env[key]).split(":")[0].split("/")[0]
                assert host in services, f"{name}: {key}={env[key]} names no compose service"


# --- secrets ---------------------------------------------------------------------------------------------
def test_secrets_have_no_defaults(raw: str) -> None:
    seen = set()
    for m in _INTERPOLATION.finditer(raw):
        if m.group("name") in SECRETS:
            seen.add(m.group("name"))
            assert m.group("op") in (":?", "?"), f"{m.group(0)}: a secret is required, never defaulted"
    assert seen == SECRETS, f"secrets never used: {sorted(SECRETS - seen)}"


def test_secret_looking_values_come_from_env(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        for key, value in environment(svc).items():
            if value is None:  # passed through from .env
                continue
            text = str(value)
            if SECRET_NAME.search(key) and not key.endswith(("_FILE", "_DIR")):
                refs = [m.group("name") for m in _INTERPOLATION.finditer(text)]
                assert refs and all(r in SECRETS for r in refs), (
                    f"{name}: {key} must come from a secret in .env"
                )
            if re.search(r"://[^/@\s]+:[^/@\s]+@", text):
                assert "${POSTGRES_PASSWORD:?" in text, f"{name}: {key} embeds a password literally"


# --- GPU, scaling, volumes, images ---------------------------------------------------------------------
def test_ray_worker_reserves_a_gpu_and_scales(services: dict[str, Any]) -> None:
    worker = services["ray-worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d.get("capabilities", []) and d.get("driver") == "nvidia" for d in devices)
    assert "container_name" not in worker and "hostname" not in worker, "a fixed name prevents --scale"
    argv = command(worker)
    assert flags(argv).get("--address") == "ray-head:6380" and "--block" in argv
    assert "cu" in resolve(worker["build"]["args"]["TORCH_INDEX_URL"]).rsplit("/", 1)[-1]
    assert worker["image"] != services["ray-head"]["image"], "the GPU worker has its own (CUDA) image"
    assert worker.get("profiles") == ["gpu"], (
        "CPU-only hosts start without it (COMPOSE_PROFILES=gpu enables it)"
    )


def test_named_volumes_are_declared_and_used(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, svc in services.items():
        for entry in svc.get("volumes") or []:
            source = entry["source"] if isinstance(entry, dict) else str(entry).split(":")[0]
            if source.startswith((".", "/", "~", "$")):
                assert (ROOT / source).exists() or not source.startswith("."), f"{name}: {source} missing"
                continue
            assert source in declared, f"{name} uses undeclared volume {source}"
            used.add(source)
    assert declared == used, f"declared but unused volumes: {sorted(declared - used)}"
    data_dirs = {str(v).split(":")[0] for n in ("postgres", "minio") for v in services[n]["volumes"]}
    assert {"pg-data", "minio-data"} <= data_dirs


def test_project_images_build_from_infra_docker(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        if "build" in svc:
            assert (ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file(), name
            assert resolve(svc["image"]).split(":")[0] in ("make-us-rich", "make-us-rich-gpu"), name
    cpu = services["mlflow"]["build"]["args"]["TORCH_INDEX_URL"]
    assert cpu == "https://download.pytorch.org/whl/cpu"


def test_dockerfile_installs_the_pinned_cpu_torch() -> None:
    text = DOCKERFILE.read_text()
    pin = re.search(r"^torch==(\S+)", (ROOT / "constraints.txt").read_text(), re.M)
    assert pin, "constraints.txt pins torch"
    assert f"ARG TORCH_VERSION={pin.group(1)}" in text
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    assert '--index-url "${TORCH_INDEX_URL}"' in text
    ignored = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().split()
    assert ".env" in ignored and ".venv" in ignored, "never bake .env or the venv into the image"


def test_command_files_exist(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        for token in command(svc):
            if re.fullmatch(r"(infra|serve_app|dash_app|ray_jobs|dags)/[\w./-]+", token):
                assert (ROOT / token).is_file(), f"{name} runs {token}, which does not exist"


# --- the same commands as the local runner ---------------------------------------------------------------
def test_compose_only_services_run_the_expected_programs(services: dict[str, Any]) -> None:
    for name, wanted in EXPECTED_COMMANDS.items():
        assert signature(command(services[name])) == wanted, f"{name}: {command(services[name])}"
    store = resolve(str(environment(services["mlflow"]).get("MLFLOW_BACKEND_STORE_URI", "")))
    assert store.startswith("postgresql+psycopg2://") and store.endswith("/mlflow"), store
    conn = resolve(str(environment(services["airflow-scheduler"])["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]))
    assert conn.startswith("postgresql+psycopg2://") and conn.endswith("/airflow"), conn
    # Airflow 3 derives postgresql+asyncpg from it unless told otherwise; asyncpg is no dependency, psycopg 3 is.
    async_conn = resolve(
        str(environment(services["airflow-scheduler"]).get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC", ""))
    )
    assert async_conn.startswith("postgresql+psycopg://") and async_conn.endswith("/airflow"), async_conn


def test_every_local_service_mirrors_its_compose_counterpart(
    services: dict[str, Any], local_services: dict[str, Any]
) -> None:
    """Same program and flags, the same environment keys, the same health check, no extra dependencies."""
    assert {"s3", "mlflow", "ray", "serve", "dash"} <= set(local_services)
    for name, local in local_services.items():
        prod_name = local.compose or name
        assert prod_name in services, f"local service {name} has no compose counterpart {prod_name}"
        prod = services[prod_name]
        mapped = {local_services[d].compose or d for d in local.depends_on}
        assert mapped <= compose_closure(services, prod_name), f"{prod_name} does not wait for {mapped}"
        if name in DIFFERENT_PROGRAM:
            assert local.port in {c for _, c in published(prod)}, f"{name}/{prod_name}: port {local.port}"
            continue
        argv = command(prod)
        assert signature(argv) == signature(local.command), (
            f"{prod_name} runs {argv}, locally {local.command}"
        )
        local_flags, prod_flags = flags(local.command), flags(argv)
        assert (
            set(local_flags) - LOCAL_ONLY_FLAGS - MACHINE_FLAGS
            == set(prod_flags) - PROD_ONLY_FLAGS - MACHINE_FLAGS
        ), prod_name
        for flag, value in local_flags.items():
            if flag not in HOST_FLAGS | MACHINE_FLAGS | LOCAL_ONLY_FLAGS | NODE_ADDRESS_FLAGS:
                assert prod_flags[flag] == value, f"{prod_name} {flag}: {prod_flags[flag]!r} vs {value!r}"
        prod_env = environment(prod)
        for key, value in local.env.items():
            if key in LOCAL_ONLY_ENV:
                continue
            assert key in prod_env, f"{prod_name}: the local service sets {key}, docker-compose.yml does not"
            if key in SAME_VALUE_ENV:
                assert resolve(str(prod_env[key])) == value, f"{prod_name}: {key}"
        check = healthcheck_argv(prod)
        if local.health_url:
            path = "/" + local.health_url.split("://", 1)[1].split("/", 1)[1]
            probed = re.search(re.escape(path) + r"(\s|$)", " ".join(check))  # the URL, maybe piped to grep
            assert probed, f"{prod_name}: healthcheck should probe {path} as locally"
        else:
            local_check = [os.path.basename(local.health_cmd[0]), *local.health_cmd[1:]]
            assert check == local_check, f"{prod_name}: healthcheck {check}, locally {local_check}"


def test_serve_keeper_redeploys_only_what_serve_cannot_fix() -> None:
    from serve_app import keeper

    assert keeper.action_for(None) == "deploy"  # never deployed, or the head restarted
    assert keeper.action_for({"status": "DEPLOY_FAILED"}) == "rebuild"  # same config would be a no-op
    assert keeper.action_for({"status": "UNHEALTHY"}) == "report"  # Serve replaces replicas itself
    for status in ("RUNNING", "DEPLOYING", "NOT_STARTED", "DELETING"):
        assert keeper.action_for({"status": status}) == "nothing"


def test_ray_nodes_get_the_serve_fast_path_env(services: dict[str, Any]) -> None:
    """The Ray containers run Serve with the same request-path flags as the local head."""
    from mur.devstack.services import SERVE_FAST_PATH_ENV

    for name in ("ray-head", "ray-worker"):
        env = {k: str(v) for k, v in services[name]["environment"].items()}
        missing = {k: v for k, v in SERVE_FAST_PATH_ENV.items() if env.get(k) != v}
        assert not missing, f"{name} lacks Serve flags {missing}"


# --- the operators' monitoring: Prometheus and Grafana (docs/metrics.md) ----------------------------------
PROMETHEUS_DIR = ROOT / "infra" / "prometheus"
GRAFANA_DIR = ROOT / "infra" / "grafana"
METRIC_NAME = re.compile(r"\bmur_[a-z0-9_]+\b")


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of each bind mount of a project file or folder."""
    found = {}
    for entry in service.get("volumes") or []:
        source, target = str(entry).split(":")[:2]
        if source.startswith("./"):
            found[target] = ROOT / source
    return found


def exported_samples() -> set[str]:
    """Every sample name the API's /metrics shows when every series has data, parsed from its text."""
    from prometheus_client.parser import text_string_to_metric_families

    from serve_app.metrics import DbSeries, RequestMetrics, families, render, sample_names

    recorder = RequestMetrics()
    recorder.observe("/v1/forecast/{pair}", "GET", 429, 0.01)
    counts = recorder.snapshot()
    counts.answers = {"cache": 2, "forecaster": 1}
    db = DbSeries(counts={"eth_usdt": (3, 2)}, skill={"eth_usdt": 0.1}, coverage={"eth_usdt": 0.9})
    text = render(families(counts, replicas=1, hub_ok=True, versions={"eth_usdt": 3.0}, db=db))
    names = {s.name for f in text_string_to_metric_families(text.decode()) for s in f.samples}
    assert names == sample_names(), "serve_app.metrics.FAMILIES names exactly what /metrics exports"
    return names


def test_monitoring_ports_bind_the_admin_address(services: dict[str, Any]) -> None:
    for name in MONITORING_PORTS:
        for entry in services[name]["ports"]:
            assert str(entry).startswith("${ADMIN_BIND_ADDRESS:-127.0.0.1}:"), f"{name}: {entry} (admin UI)"


def test_prometheus_scrapes_the_api_metrics(services: dict[str, Any], defaults: Settings) -> None:
    prometheus = services["prometheus"]
    config_path = flags(command(prometheus)).get("--config.file") or next(
        t.split("=", 1)[1] for t in command(prometheus) if t.startswith("--config.file=")
    )
    mounted = mounts(prometheus)
    assert config_path in mounted and mounted[config_path] == PROMETHEUS_DIR / "prometheus.yml"
    config = yaml.safe_load(mounted[config_path].read_text())
    api_jobs = [
        job
        for job in config["scrape_configs"]
        for group in job.get("static_configs") or []
        for target in group["targets"]
        if target == f"ray-head:{defaults.serve_port}"
    ]
    assert api_jobs, "Prometheus scrapes the Serve ingress (ray-head, serve_port) by service name"
    assert "serve_port" in SERVICE_PORTS["ray-head"] and "ray-head" in services
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in api_jobs)
    assert all(job.get("scheme", "http") == "http" for job in api_jobs)
    targets = [t for job in config["scrape_configs"] for g in job["static_configs"] for t in g["targets"]]
    assert sum(t.endswith(f":{defaults.serve_port}") for t in targets) == 1, (
        "one API target: /metrics is a total"
    )


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(services: dict[str, Any]) -> None:
    grafana = services["grafana"]
    env = environment(grafana)
    assert (
        env["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:?set GRAFANA_ADMIN_PASSWORD in .env}"
    )
    assert env.get("GF_AUTH_ANONYMOUS_ENABLED") == "false" and env.get("GF_USERS_ALLOW_SIGN_UP") == "false"
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"
    mounted = mounts(grafana)
    assert mounted["/etc/grafana/provisioning"] == GRAFANA_DIR / "provisioning"
    (datasources,) = (GRAFANA_DIR / "provisioning" / "datasources").glob("*.yml")
    (source,) = yaml.safe_load(datasources.read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert source["url"].split("//")[1].split(":")[0] in services
    (providers,) = (GRAFANA_DIR / "provisioning" / "dashboards").glob("*.yml")
    (provider,) = yaml.safe_load(providers.read_text())["providers"]
    folder = provider["options"]["path"]
    assert mounted[folder] == GRAFANA_DIR / "dashboards", "the provider reads the mounted dashboards"
    dashboards = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
    assert [d.name for d in dashboards] == ["mur.json"]
    home = env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    assert home is None or home == f"{folder}/mur.json"
    for panel in json.loads(dashboards[0].read_text())["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == source["uid"], panel["title"]


def test_every_dashboard_query_uses_metrics_the_api_exports() -> None:
    exported = exported_samples()
    dashboard = json.loads((GRAFANA_DIR / "dashboards" / "mur.json").read_text())
    used: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets") or []:
            names = set(METRIC_NAME.findall(target["expr"]))
            assert names, f"panel {panel['title']!r}: {target['expr']} queries no mur_ metric"
            unknown = names - exported
            assert not unknown, (
                f"panel {panel['title']!r} queries {sorted(unknown)}: /metrics has no such series"
            )
            used |= names
    wanted = {
        "mur_http_requests_total",
        "mur_http_request_duration_seconds_bucket",
        "mur_quota_rejections_total",
        "mur_served_model_version",
        "mur_forecasts_recorded_total",
        "mur_forecasts_resolved_total",
        "mur_rolling_skill",
        "mur_rolling_coverage",
    }
    assert wanted <= used, f"the dashboard shows no {sorted(wanted - used)}"
