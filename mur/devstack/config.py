"""The local stack's settings: URLs that follow their ports, exported to every process; a persistent secret."""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mur.clock import MarketClock, default_start, read_clock_state, requested_start_of, write_clock_state
from mur.devstack import secret_files
from mur.devstack.processes import STACK_MARKER
from mur.errors import ConfigError
from mur.settings import Settings, get_settings

SECRETS_FILE = "stack-secrets.json"
RAY_LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's single-node switch: ``0`` keeps a head's node address 127.0.0.1, so that every Ray socket (GCS, raylet,
workers, agents, client server) listens on the loopback interface (docs/services.md, "Ray and the loopback
interface"). The local stack sets it to ``0`` unless the environment says otherwise; ``1`` is Ray's Linux
default (a multi-node cluster: Ray binds the LAN address and every interface)."""


RAY_AUTH_SWITCH = "RAY_AUTH_MODE"
"""Ray's authentication mode. Ray 2.60 turns token authentication on for a head started where a token file
exists (``~/.ray/auth_token``, written by any local ``ray.init()``), and then the stack's health checks and
clients, which do not send one, get 401. The local stack, on the loopback interface, states the mode
instead of depending on that file: ``disabled`` unless the environment says otherwise (``token`` with
``RAY_AUTH_TOKEN`` for a head other users or machines reach; docs/services.md)."""


def use_loopback_ray(*, force: bool = False) -> str:
    """Make this process, and every process it starts, run Ray on the loopback interface (unless
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` is already set and not ``force``: the environment wins). Returns the
    value in force.

    Ray reads the switch when ``ray._private.ray_constants`` is imported; if Ray was imported already, its
    constant follows too. A driver that joins a loopback-only head needs the switch: without it Ray rewrites
    ``127.0.0.1`` to the LAN address, where nothing listens, and ``ray.init`` waits forever.
    """
    import sys

    if force:
        os.environ[RAY_LOOPBACK_SWITCH] = "0"
    value = os.environ.setdefault(RAY_LOOPBACK_SWITCH, "0")
    os.environ.setdefault(RAY_AUTH_SWITCH, "disabled")  # consistent with the stack's head (_ray_env)
    constants: Any = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = value.lower() in ("1", "true")  # as Ray's env_bool reads it
    return value


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
    for url_field, port_field in URL_FIELDS.items():
        port = getattr(settings, port_field)
        url = getattr(settings, url_field)
        if url_field not in settings.model_fields_set:
            wanted = f"http://127.0.0.1:{port}"
            if url != wanted:
                update[url_field] = wanted
            continue
        parts = urlsplit(url)
        if parts.hostname in ("127.0.0.1", "localhost") and parts.port not in (None, port):
            raise ConfigError(
                f"MUR_{url_field.upper()}={url} does not match MUR_{port_field.upper()}={port}: "
                f"set one of them only (the URL follows the port)"
            )
    runtime_dir = Path(settings.runtime_dir).resolve()
    update["runtime_dir"] = runtime_dir
    aligned = settings.model_copy(update=update)
    if export:
        for name, value in update.items():
            os.environ[f"MUR_{name.upper()}"] = str(value)
        os.environ[STACK_MARKER] = str(runtime_dir)  # inherited by everything started from here
        use_loopback_ray()  # the Ray head, the Serve keeper, Airflow's tasks, `mur serve`: all on loopback
        get_settings.cache_clear()
    return aligned


def stack_secret(settings: Settings) -> str:
    """``MUR_SECRET_KEY``, else a key generated once into ``{runtime_dir}/stack-secrets.json`` (mode 600).

    The dashboard signs sessions and derives its per-user API tokens with it: a key that changed at every
    start would log everybody out and revoke those tokens.
    """
    if settings.secret_key:
        return settings.secret_key
    path = Path(settings.runtime_dir) / SECRETS_FILE

    def fill(data: dict[str, Any]) -> dict[str, Any] | None:
        key = data.get("secret_key")
        return None if isinstance(key, str) and len(key) >= 32 else {"secret_key": secrets.token_urlsafe(32)}

    return str(secret_files.ensure(path, fill)["secret_key"])


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
    if settings.market_data == "binance":
        return MarketClock.real_time()
    wanted = (
        speed
        if speed is not None
        else (settings.clock_speed if "clock_speed" in settings.model_fields_set else None)
    )
    stored = read_clock_state(settings.runtime_dir)
    if running and stored is not None:
        if wanted is not None and wanted != stored.speed:
            raise ConfigError(
                f"the stack runs with market clock speed {stored.speed:g}; run `mur down` first to change it "
                f"to {wanted:g}"
            )
        clock = stored
    elif settings.clock_start is not None and (
        stored is None or requested_start_of(settings.runtime_dir) != settings.clock_start
    ):
        origin = settings.clock_origin if settings.clock_origin is not None else time.time()
        clock = MarketClock(
            start=settings.clock_start, origin=origin, speed=wanted if wanted is not None else 1.0
        )
    elif stored is not None:
        resume = _paused_speed(settings)
        pace = wanted if wanted is not None else (resume if resume is not None else stored.speed)
        clock = stored.rebased(speed=pace)
    else:
        origin = time.time()
        clock = MarketClock(start=default_start(), origin=origin, speed=wanted if wanted is not None else 1.0)
    write_clock_state(settings.runtime_dir, clock, requested_start=settings.clock_start)
    (Path(settings.runtime_dir) / RESUME_FILE).unlink(missing_ok=True)
    os.environ.update(clock.env())
    get_settings.cache_clear()
    return clock


def pause_market_clock(settings: Settings) -> MarketClock | None:
    """At ``mur down``: freeze the market where it stands (the next ``mur up`` resumes it at the same speed)."""
    stored = read_clock_state(settings.runtime_dir)
    if stored is None or settings.market_data == "binance" or stored.speed == 0:
        return stored
    paused = stored.rebased(speed=0.0)
    (Path(settings.runtime_dir) / RESUME_FILE).write_text(json.dumps({"speed": stored.speed}) + "\n")
    write_clock_state(settings.runtime_dir, paused, requested_start=requested_start_of(settings.runtime_dir))
    return paused


def _paused_speed(settings: Settings) -> float | None:
    try:
        return float(json.loads((Path(settings.runtime_dir) / RESUME_FILE).read_text())["speed"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
