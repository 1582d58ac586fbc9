"""Deploy, inspect and remove the Serve application on a running Ray head (what ``mur serve`` calls).

Deployment is declarative, exactly like ``serve deploy serve_app/config.yaml``: the config file is loaded,
the HTTP host/port, application name and builder args are filled in from Settings, and the result is sent
to the Ray dashboard's Serve REST API (``GET/PUT/DELETE /api/serve/applications/`` on
``settings.ray.ray_address``). No Ray driver is needed for that.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mur.errors import ServiceError
from mur.settings import Settings
from mur.waiting import wait_until
from serve_app.args import AppArgs, settings_overrides

log = logging.getLogger(__name__)

CONFIG_PATH = Path(__file__).resolve().parent / "config.yaml"
HEAD_ONLY = {"node:__internal_head__": 0.001}
"""Ray's resource of the head: an API replica listens on Serve's HTTP host, so on loopback (the local stack) it
stays on the head, where HAProxy reaches it (on node 127.0.0.2 it would listen on 127.0.0.1 and refuse it)."""
Progress = Callable[[str], None]


def load_config() -> dict[str, Any]:
    """The Serve config file as a dict."""
    import yaml

    return yaml.safe_load(CONFIG_PATH.read_text(encoding="utf-8"))


def app_config(settings: Settings, args: AppArgs | None = None) -> dict[str, Any]:
    """The config file with HTTP options, app name and builder args taken from ``settings``/``args``."""
    config = load_config()  # a fresh dict each call: edited freely
    config.setdefault("http_options", {}).update(
        host=settings.serving.serve_host, port=settings.serving.serve_port
    )
    apps = config.get("applications") or []
    if len(apps) != 1:
        raise ServiceError(f"{CONFIG_PATH} must define exactly one application")
    app = apps[0]
    app["name"] = settings.serving.serve_app_name
    if settings.serving.serve_host in ("127.0.0.1", "localhost", "::1"):  # the API where HAProxy reaches it
        api = {"num_cpus": 0.1, "resources": HEAD_ONLY}  # replaces serve_app/ingress.py's options
        app.setdefault("deployments", []).append({"name": "api", "ray_actor_options": api})
    if args is None:
        base = AppArgs(**(app.get("args") or {}))
        args = base.model_copy(update={"settings": {**base.settings, **settings_overrides(settings)}})
    app["args"] = args.model_dump(mode="json")
    return config


APPLICATIONS_PATH = "/api/serve/applications/"
"""The Serve REST API on the Ray dashboard: GET the details, PUT a config, DELETE every app."""
REST_TIMEOUT_S = 30.0


def _rest(settings: Settings, method: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One call to the Serve REST API; HTTP and connection errors raise (the callers word them)."""
    import httpx

    url = settings.ray.ray_address.rstrip("/") + APPLICATIONS_PATH
    response = httpx.request(method, url, json=body, headers=settings.ray.headers(), timeout=REST_TIMEOUT_S)
    if response.status_code >= 400:
        raise ServiceError(f"{method} {url}: HTTP {response.status_code}: {response.text.strip()[:500]}")
    return response.json() if method == "GET" else {}


def serve_details(settings: Settings) -> dict[str, Any]:
    """``GET /api/serve/applications/`` of the dashboard (ServiceError when Ray is not reachable)."""
    try:
        return _rest(settings, "GET")
    except Exception as exc:  # connection errors, HTTP errors, a body that is not JSON
        raise ServiceError(
            f"cannot reach the Ray dashboard at {settings.ray.ray_address} ({type(exc).__name__}: {exc}); "
            "start the stack with `mur up`"
        ) from exc


def put_applications(settings: Settings, config: dict[str, Any]) -> None:
    """``PUT /api/serve/applications/``: make ``config`` (a Serve config file as a dict) the set of
    declaratively deployed apps."""
    _rest(settings, "PUT", config)


def app_details(settings: Settings) -> dict[str, Any] | None:
    """Status details of this app (None when it is not deployed)."""
    return (serve_details(settings).get("applications") or {}).get(settings.serving.serve_app_name)


RESUBMIT_AFTER_S = 20.0
"""A submitted app that Serve does not list after this long is submitted again (see :func:`wait_running`)."""


def wait_running(
    settings: Settings,
    *,
    timeout_s: float = 300.0,
    since: float = 0.0,
    progress: Progress | None = None,
    resubmit: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Wait until the app is RUNNING (deployed after ``since``, a UNIX time); ServiceError on failure.

    ``resubmit`` puts the config again when Serve does not list the app at all after
    :data:`RESUBMIT_AFTER_S`: a config that reached a Serve controller which was still shutting down (a
    ``serve shutdown`` finishing) is dropped with it, and the declarative PUT is safe to repeat.
    """
    last = ""
    submitted = time.monotonic()

    def fresh(details: dict[str, Any]) -> bool:  # deployed after ``since``, not an older app's state
        return bool(details) and (details.get("last_deployed_time_s") or 0) >= since - 1

    def app() -> dict[str, Any]:
        nonlocal last, submitted
        details = app_details(settings) or {}
        if not details and resubmit is not None and time.monotonic() - submitted > RESUBMIT_AFTER_S:
            try:
                resubmit()
            except Exception as exc:  # Serve still restarting: try again at the next interval
                log.warning("resubmitting the Serve app failed: %s", exc)
            submitted = time.monotonic()
        status = details.get("status", "NOT_STARTED")
        if fresh(details) and status in ("DEPLOY_FAILED", "UNHEALTHY"):
            raise ServiceError(
                f"Serve app {settings.serving.serve_app_name!r} is {status}: {details.get('message', '')}"
            )
        if progress and status != last:
            progress(f"{settings.serving.serve_app_name}: {status}")
            last = status
        return details

    return wait_until(
        app,
        what=f"Serve app {settings.serving.serve_app_name!r} to be RUNNING",
        timeout_s=timeout_s,
        interval_s=1.0,
        done=lambda details: fresh(details) and details.get("status") == "RUNNING",
        error=lambda message: ServiceError(f"{message}; see `mur serve status` and the Ray dashboard"),
    )


def deploy(
    settings: Settings,
    args: AppArgs | None = None,
    *,
    wait: bool = True,
    timeout_s: float = 300.0,
    force: bool = False,
    progress: Progress | None = None,
) -> str:
    """Deploy (or update) the app declaratively and return its URL.

    Re-deploying an unchanged config is a no-op for Serve; ``force`` rebuilds the app and restarts its
    replicas anyway (new code, or a config file edited elsewhere).
    """
    config = app_config(settings, args)
    if force:
        config["applications"][0]["args"]["generation"] = int(time.time())
    started = time.time()
    for attempt in (1, 2):
        try:
            put_applications(settings, config)
            break
        except Exception as exc:  # e.g. a proxy killed by a Serve shutdown that was still finishing
            if attempt == 2:
                raise ServiceError(f"deploying to Ray at {settings.ray.ray_address} failed: {exc}") from exc
            time.sleep(3.0)
    if wait:
        wait_running(
            settings,
            timeout_s=timeout_s,
            since=started,
            progress=progress,
            resubmit=lambda: put_applications(settings, config),
        )
    return settings.serving.url


def undeploy(settings: Settings, *, timeout_s: float = 60.0) -> None:
    """Remove every declaratively deployed app and stop Serve (``serve shutdown``); wait until it is gone."""
    _rest(settings, "DELETE")
    wait_until(
        lambda: not (serve_details(settings).get("controller_info") or {}).get("actor_id"),
        what="Serve to shut down",
        timeout_s=timeout_s,
        error=ServiceError,
    )
    time.sleep(1.0)  # the old controller's last actor kills land before a new Serve starts


def _loopback_only(port: int) -> bool:
    """Whether the GCS answers on 127.0.0.1 but not on this machine's LAN address."""
    import socket

    def answers(host: str) -> bool:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return True
        except OSError:
            return False

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: only picks the outgoing interface
            lan = probe.getsockname()[0]
    except OSError:
        return False
    return lan != "127.0.0.1" and answers("127.0.0.1") and not answers(lan)


def connect_ray(settings: Settings) -> None:
    """Join the stack's Ray head as a driver (for ``serve.status()``); ``address="auto"`` could pick
    whichever cluster started last on this machine, so the GCS port from settings is used. The driver
    authenticates with the settings' token (``RAY_AUTH_TOKEN``). A head started with Ray's single-node
    switch listens on 127.0.0.1 only and Ray would rewrite 127.0.0.1 to the LAN address, so the driver then
    runs with the same switch (devstack.config.RAY_LOOPBACK_SWITCH says why it exists); the switch is
    read when Ray is imported, so a process that imported Ray without it is told so instead of waiting."""
    import os
    import sys

    switch = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    if _loopback_only(settings.ray.ray_gcs_port):
        constants: Any = sys.modules.get("ray._private.ray_constants")
        if constants is not None and constants.ENABLE_RAY_CLUSTER:
            raise ServiceError(
                f"the Ray head at 127.0.0.1:{settings.ray.ray_gcs_port} listens on the loopback interface only; "
                f"set {switch}=0 before this process imports Ray"
            )
        os.environ[switch] = "0"
    os.environ.update(settings.ray.auth_env())
    import ray

    if not ray.is_initialized():
        ray.init(
            address=f"127.0.0.1:{settings.ray.ray_gcs_port}", logging_level=logging.ERROR, log_to_driver=False
        )


def replica_counts(details: dict[str, Any]) -> dict[str, int]:
    """``{deployment: RUNNING replicas}`` from app details."""
    return {
        name: sum(1 for r in d.get("replicas", []) if r.get("state") == "RUNNING")
        for name, d in (details.get("deployments") or {}).items()
    }
