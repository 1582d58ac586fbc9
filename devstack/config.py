"""The local stack's settings: URLs that follow their ports, exported to every process; a persistent secret."""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from devstack import secret_files
from devstack.processes import STACK_MARKER
from mur.clock import MarketClock, default_start, read_clock_state, requested_start_of, write_clock_state
from mur.errors import ConfigError
from mur.settings import Settings, get_settings

SECRETS_FILE = "stack-secrets.json"
RAY_LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Why the local stack still sets Ray's single-node switch (the one place that says so; docs/services.md).

Token auth (:func:`use_stack_ray`) is what protects every Ray API: GCS, raylets, workers, each Serve
replica's inter-deployment gRPC server, the dashboard and Jobs API all refuse a caller without the token.
The switch adds defence in depth on one machine: with ``0``, a head started with ``--node-ip-address
127.0.0.1`` keeps that address, so its sockets listen on the loopback interface. That matters because a few
Ray listeners have no authentication at all: the Prometheus exporters of the autoscaler, the dashboard and
the metrics agent bind every interface unless the node's address is loopback. With ``1`` (Ray's Linux
default, and what a multi-node cluster needs), ``ray start`` rewrites ``127.0.0.1`` to the LAN address.

It is an environment variable read when Ray is imported, so it is set before any Ray import: in the
process's environment (the stack exports it to everything it starts; ``tests/conftest.py`` and the
benchmarks set it first). A driver joining a loopback head needs it too (without it Ray looks for the
head's node under the LAN address and waits forever). A second node of the local stack (``mur up --nodes 2``)
runs with ``1`` and its own loopback address (127.0.0.2); the head keeps ``0``. ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1``
in the environment opts the whole stack out (Ray as on a cluster, still behind the token)."""

RAY_AUTH_SWITCH = "RAY_AUTH_MODE"
RAY_TOKEN_VAR = "RAY_AUTH_TOKEN"
"""Ray's token authentication (Ray 2.60): ``RAY_AUTH_MODE=token`` and the token in ``RAY_AUTH_TOKEN`` for the
head, every node and every client. The local stack generates one token into its secrets file (mode 600,
:func:`ray_token`) unless the environment gives one; production sets it from a secret (docs/production.md)."""


def ray_token(settings: Settings) -> str:
    """``RAY_AUTH_TOKEN``, else a token generated once into ``{runtime_dir}/stack-secrets.json`` (mode 600)."""
    return settings.ray.ray_auth_token or _generated_secret(
        settings, "ray_auth_token", lambda: secrets.token_hex(32)
    )


def _generated_secret(settings: Settings, key: str, make: Callable[[], str]) -> str:
    """``key`` of the stack's secrets file, made once by ``make`` (under the file's lock) and then kept."""

    def fill(data: dict[str, Any]) -> dict[str, Any] | None:
        value = data.get(key)
        return None if isinstance(value, str) and len(value) >= 32 else {key: make()}

    return str(secret_files.ensure(Path(settings.general.runtime_dir) / SECRETS_FILE, fill)[key])


SECRETS_DIR = "secrets"
S3_KEYS = ("s3_access_key", "s3_secret_key")
MLFLOW_ADMIN = "mur-admin"
MLFLOW_ROLES = ("trainer", "serve", "dash")
"""The local stack's MLflow accounts (``mur-trainer``, …; devstack/mlflow_auth.py grants them): the trainer
(Ray jobs, Airflow's tasks, the CLI) writes; Serve's registry watcher and the dashboard read."""


def stack_s3_keys(settings: Settings) -> dict[str, str]:
    """The local store's S3 keys: ``MUR_S3_ACCESS_KEY``/``MUR_S3_SECRET_KEY`` from the environment, else
    generated once into the stack's secrets file (never the settings' ``minioadmin`` defaults)."""
    return {
        name: os.environ.get(f"MUR_{name.upper()}")
        or _generated_secret(settings, name, lambda: secrets.token_hex(20))
        for name in S3_KEYS
    }


def mlflow_account(settings: Settings, role: str) -> dict[str, str]:
    """``mlflow_username``/``mlflow_password`` of the stack's account for ``role`` (``admin`` or one of
    :data:`MLFLOW_ROLES`), its password generated once into the stack's secrets file."""
    password = _generated_secret(settings, f"mlflow_{role}_password", lambda: secrets.token_urlsafe(32))
    return {"mlflow_username": f"mur-{role}", "mlflow_password": password}


def write_secrets_dir(settings: Settings, role: str = "trainer") -> Path:
    """The ``MUR_SECRETS_DIR`` of ``role``: one file per secret setting (directory 700, files 600), what
    Settings' secrets source reads instead of the environment or a Ray job's runtime env, which Ray logs.
    ``{runtime_dir}/secrets``: the trainer's MLflow account, the S3 keys and the Ray token (every process ``mur
    up`` starts, Airflow's tasks, Ray jobs, ``mur train --ray`` in a new shell); ``secrets-serve`` (the Ray head:
    Serve's replicas) and ``secrets-dash``: their read-only MLflow account only."""
    suffix = "" if role == "trainer" else f"-{role}"
    folder = secret_files.private_dir(Path(settings.general.runtime_dir) / f"{SECRETS_DIR}{suffix}")
    values = mlflow_account(settings, role)
    if role == "trainer":
        values |= {name: str(settings.flat()[name]) for name in S3_KEYS}
        values |= {"ray_auth_token": ray_token(settings)} if settings.ray.ray_auth_mode == "token" else {}
    for field_name, value in values.items():
        path = folder / f"mur_{field_name}"
        if not path.exists() or path.read_text() != value:
            secret_files.write_private(path, value)
        path.chmod(0o600)
    return folder


def use_stack_ray(settings: Settings | None = None) -> None:
    """Make this process, and every process it starts, use the local stack's Ray: the single-node switch
    (:data:`RAY_LOOPBACK_SWITCH`, unless the environment sets it) and token auth with the stack's token
    (:data:`RAY_TOKEN_VAR`; ``RAY_AUTH_MODE=disabled`` in the environment turns it off, for tests of it).
    Call it before Ray is imported."""
    settings = settings or get_settings()
    os.environ.setdefault(RAY_LOOPBACK_SWITCH, "0")
    mode = os.environ.setdefault(RAY_AUTH_SWITCH, "token")
    if mode == "token":
        os.environ[RAY_TOKEN_VAR] = ray_token(settings)
    get_settings.cache_clear()


URL_FIELDS = {
    "mlflow_tracking_uri": "mlflow_port",
    "s3_endpoint_url": "s3_port",
    "ray_address": "ray_dashboard_port",
    "airflow_url": "airflow_port",
}
"""URL setting → the port setting it must agree with (both default to the same local port)."""


def align_settings(settings: Settings, *, export: bool = True) -> Settings:
    """URLs that were not set explicitly follow their port; a local URL contradicting its port is an error.

    With ``export`` the derived URLs and the absolute runtime dir go into ``os.environ``, so every service,
    Airflow task, Ray job and Serve replica started from this process sees the same settings.
    """
    update: dict[str, Any] = {}
    values, explicit = settings.flat(), settings.flat(exclude_unset=True)
    for url_field, port_field in URL_FIELDS.items():
        port, url = values[port_field], values[url_field]
        parts = urlsplit(url)
        if url_field not in explicit:
            wanted = f"http://127.0.0.1:{port}"
            if url != wanted:
                update[url_field] = wanted
        elif parts.hostname in ("127.0.0.1", "localhost") and parts.port not in (None, port):
            raise ConfigError(
                f"MUR_{url_field.upper()}={url} does not match MUR_{port_field.upper()}={port}: "
                f"set one of them only (the URL follows the port)"
            )
    runtime_dir = Path(settings.general.runtime_dir).resolve()
    update["runtime_dir"] = runtime_dir
    aligned = settings.replace(**update)
    aligned = aligned.replace(**stack_s3_keys(aligned))
    if "MUR_MLFLOW_USERNAME" not in os.environ:  # the stack's trainer account (mur train, mur up's checks)
        aligned = aligned.replace(**mlflow_account(aligned, "trainer"))
    # the stack's token, from its secrets
    if aligned.ray.ray_auth_mode == "token" and not aligned.ray.ray_auth_token:
        aligned = aligned.replace(ray_auth_token=ray_token(aligned))
    nodes = stack_ray_nodes(aligned, remember=export)
    if nodes != aligned.ray.ray_nodes:
        aligned = aligned.replace(ray_nodes=nodes)
    if export:
        update["ray_nodes"] = nodes
        for name, value in update.items():
            os.environ[f"MUR_{name.upper()}"] = str(value)
        os.environ[STACK_MARKER] = str(runtime_dir)  # inherited by everything started from here
        os.environ["MUR_SECRETS_DIR"] = str(write_secrets_dir(aligned))
        use_stack_ray(aligned)  # the Ray head, the keeper, Airflow's tasks, `mur serve`: one token, loopback
    return aligned


NODES_FILE = "ray-nodes.json"


def stack_ray_nodes(settings: Settings, *, remember: bool) -> int:
    """The stack's Ray node count: ``MUR_RAY_NODES`` (``mur up --nodes N``) when set, remembered in the runtime
    dir (with ``remember``), else the remembered one, so that ``mur status``, ``mur down`` and a later
    ``mur up`` see the worker nodes an earlier ``mur up --nodes N`` started."""
    path = Path(settings.general.runtime_dir) / NODES_FILE
    if "ray_nodes" in settings.flat(exclude_unset=True):
        if remember:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"ray_nodes": settings.ray.ray_nodes}) + "\n")
        return settings.ray.ray_nodes
    return remembered_ray_nodes(settings.general.runtime_dir) or settings.ray.ray_nodes


def remembered_ray_nodes(runtime_dir: str | Path) -> int | None:
    """The node count the last ``mur up --nodes N`` remembered (None: never given)."""
    try:
        return max(1, int(json.loads((Path(runtime_dir) / NODES_FILE).read_text())["ray_nodes"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def stack_secret(settings: Settings) -> str:
    """``MUR_SECRET_KEY``, else a key generated once into ``{runtime_dir}/stack-secrets.json`` (mode 600).

    The dashboard signs sessions and derives its per-user API tokens with it: a key that changed at every
    start would log everybody out and revoke those tokens.
    """
    return settings.dashboard.secret_key or _generated_secret(
        settings, "secret_key", lambda: secrets.token_urlsafe(32)
    )


# --- the market clock of the stack (mur/clock.py) --------------------------------------------------------
RESUME_FILE = "clock-paused.json"


def fix_market_clock(settings: Settings, *, speed: float | None = None, running: bool = False) -> MarketClock:
    """Fix the stack's market clock once and export it (``MUR_CLOCK_*``) to every process started from here.

    * live data (``binance``): real time, nothing to fix;
    * services already running keep the clock they started with (a different speed asks for ``mur down``);
    * a new ``MUR_CLOCK_START`` (with or without ``MUR_CLOCK_ORIGIN``) starts the market there;
    * otherwise the market resumes where ``mur down`` paused it (``clock.json``), or starts at
      :func:`mur.clock.default_start`; ``speed`` (``mur up --speed``) else ``MUR_CLOCK_SPEED`` sets the pace.
    """
    if settings.data.market_data == "binance":
        return MarketClock.real_time()
    wanted = speed
    if wanted is None and "clock_speed" in settings.flat(exclude_unset=True):
        wanted = settings.clock.clock_speed
    stored = read_clock_state(settings.general.runtime_dir)
    requested = settings.clock.clock_start
    if running and stored is not None:
        if wanted is not None and wanted != stored.speed:
            raise ConfigError(
                f"the stack runs with market clock speed {stored.speed:g}; run `mur down` first to change it "
                f"to {wanted:g}"
            )
        clock = stored
    elif stored is not None and requested in (None, requested_start_of(settings.general.runtime_dir)):
        resume = _paused_speed(settings)
        pace = wanted if wanted is not None else (resume if resume is not None else stored.speed)
        clock = stored.rebased(speed=pace)
    else:  # a new market: at MUR_CLOCK_START (and MUR_CLOCK_ORIGIN, if given), else at the default start
        origin = settings.clock.clock_origin if requested is not None else None
        clock = MarketClock(
            start=requested or default_start(),
            origin=origin if origin is not None else time.time(),
            speed=wanted if wanted is not None else 1.0,
        )
    write_clock_state(settings.general.runtime_dir, clock, requested_start=requested)
    (Path(settings.general.runtime_dir) / RESUME_FILE).unlink(missing_ok=True)
    os.environ.update(clock.env())
    get_settings.cache_clear()
    return clock


def pause_market_clock(settings: Settings) -> MarketClock | None:
    """At ``mur down``: freeze the market where it stands (the next ``mur up`` resumes it at the same speed)."""
    stored = read_clock_state(settings.general.runtime_dir)
    if stored is None or settings.data.market_data == "binance" or stored.speed == 0:
        return stored
    paused = stored.rebased(speed=0.0)
    (Path(settings.general.runtime_dir) / RESUME_FILE).write_text(json.dumps({"speed": stored.speed}) + "\n")
    write_clock_state(
        settings.general.runtime_dir, paused, requested_start=requested_start_of(settings.general.runtime_dir)
    )
    return paused


def _paused_speed(settings: Settings) -> float | None:
    try:
        return float(json.loads((Path(settings.general.runtime_dir) / RESUME_FILE).read_text())["speed"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
