"""Keep the Serve application deployed on the Ray head (docker-compose service ``serve``).

    python infra/docker/serve_keeper.py

Serve runs *on the Ray cluster* (``proxy_location: HeadOnly``: the HTTP proxy listens on the head, port
``MUR_SERVE_PORT``), deployed declaratively through the head's dashboard exactly as ``mur serve`` /
``serve deploy serve_app/config.yaml`` does locally (:func:`serve_app.deploy.deploy`, HTTP host/port from
``MUR_SERVE_HOST``/``MUR_SERVE_PORT``). A Ray head that restarts without GCS fault tolerance forgets its
Serve applications, so this process does not exit after the first deployment: every ``SERVE_KEEPER_INTERVAL_S``
(default 30 s) it asks the dashboard for the app and deploys it again when it is missing or failed.
A Ray head that cannot be reached is retried; the process only exits on SIGTERM.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

log = logging.getLogger("serve-keeper")
REDEPLOY = {None, "DEPLOY_FAILED", "UNHEALTHY"}


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
    while not stop.is_set():
        try:
            details = app_details(settings)
            status = None if details is None else details.get("status")
            if status in REDEPLOY:
                log.info(
                    "app %r is %s on %s: deploying",
                    settings.serve_app_name,
                    status or "missing",
                    settings.ray_address,
                )
                url = deploy(settings, wait=True, progress=log.info)
                log.info("app %r RUNNING at %s", settings.serve_app_name, url)
        except MurError as exc:
            log.warning("%s (retrying in %.0f s)", exc, interval)
        stop.wait(interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
