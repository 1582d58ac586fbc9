"""Health checks as compose writes them: an HTTP URL that answers 2xx, a command that exits 0, or a TCP port."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from mur.devstack.services import Service

COMMAND_PROBE_INTERVAL_S = 3.0
"""Between two runs of a command health check (each costs seconds of CPU: ``airflow jobs check``)."""


def probe(service: Service, timeout_s: float = 2.0) -> bool:
    """True when the service passes its health check now (HTTP 2xx, a command's exit 0, or a TCP connect)."""
    if service.health_url:
        import urllib.error
        import urllib.request

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
        request = urllib.request.Request(service.health_url, headers=service.health_headers)
        try:
            with opener.open(request, timeout=timeout_s) as response:
                return 200 <= response.status < 300
        except (urllib.error.URLError, OSError, ValueError):
            return False
    if service.health_cmd:
        try:
            done = subprocess.run(
                service.health_cmd,
                env={**os.environ, **service.env},
                cwd=service.cwd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=max(timeout_s, 30.0),  # a CLI (`airflow jobs check`) needs seconds to import
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0
    if service.port is not None:
        return port_open(service.host, service.port, timeout_s)
    return False


def check_text(service: Service) -> str:
    """The health check, in words."""
    if service.health_url:
        return service.health_url
    if service.health_cmd:
        return "`" + " ".join([Path(service.health_cmd[0]).name, *service.health_cmd[1:]]) + "`"
    return f"tcp://{service.host}:{service.port}"


def port_open(host: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False
