"""Keep the Serve application deployed on the Ray head (compose service ``serve``, local service ``serve``).

    python -m serve_app.keeper

Serve runs *on the Ray cluster* (``proxy_location: HeadOnly``: the HTTP proxy listens on the head, port
``MUR_SERVE_PORT``), deployed declaratively through the head's dashboard exactly as ``mur serve`` /
``serve deploy serve_app/config.yaml`` does (:func:`serve_app.deploy.deploy`, HTTP host/port from
``MUR_SERVE_HOST``/``MUR_SERVE_PORT``). A Ray head that restarts without GCS fault tolerance forgets its
Serve applications, so this process does not exit after the first deployment: every ``SERVE_KEEPER_INTERVAL_S``
(default 30 s) it asks the dashboard for the app and

* deploys it when it is missing (first start, or the head restarted);
* rebuilds it (``force``) when it is ``DEPLOY_FAILED`` (e.g. MLflow was down while the builder ran:
  re-applying an unchanged config would be a no-op for Serve);
* leaves an ``UNHEALTHY`` app to Serve, which replaces failed replicas itself, and logs it.

A Ray head that cannot be reached is retried; the process only exits on SIGTERM/SIGINT. Removing the app is
the caller's business (the local supervisor undeploys it when it stops this service).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Any

log = logging.getLogger("serve-keeper")


# by the app's status (None: not deployed)
ACTIONS = {None: "deploy", "DEPLOY_FAILED": "rebuild", "UNHEALTHY": "report"}


def action_for(details: dict[str, Any] | None) -> str:
    """What to do about the app's dashboard details: ``deploy``, ``rebuild``, ``report`` or ``nothing``."""
    return ACTIONS.get(None if details is None else details.get("status"), "nothing")


def main() -> int:
    from mur.errors import MurError
    from mur.settings import get_settings
    from serve_app.deploy import app_details, deploy

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    interval = float(os.environ.get("SERVE_KEEPER_INTERVAL_S", "30"))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    name = settings.serving.serve_app_name
    while not stop.is_set():
        try:
            details = app_details(settings)
            action = action_for(details)
            if action in ("deploy", "rebuild"):
                what = (details or {}).get("status") or "missing"
                log.info("app %r is %s on %s: deploying", name, what, settings.ray.ray_address)
                url = deploy(settings, wait=True, force=action == "rebuild", progress=log.info)
                log.info("app %r RUNNING at %s", name, url)
            elif action == "report":
                log.warning("app %r is UNHEALTHY: %s", name, (details or {}).get("message", ""))
        except MurError as exc:
            log.warning("%s (retrying in %.0f s)", exc, interval)
        stop.wait(interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
