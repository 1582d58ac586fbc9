"""Health checks as compose writes them: an HTTP URL that answers 2xx, a command that exits 0, or a TCP port."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path
from typing import Any

from devstack.services import Service
from mur.settings import Settings

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


def ray_nodes(settings: Settings, timeout_s: float = 5.0) -> list[dict[str, Any]] | None:
    """The Ray cluster's nodes from the dashboard's state API (with the token): address, head or not, state,
    CPUs, GPUs and the node's custom resources; None when the head does not answer."""
    import httpx

    url = settings.ray.ray_address.rstrip("/") + "/api/v0/nodes"
    try:
        response = httpx.get(url, params={"limit": 100}, headers=settings.ray.headers(), timeout=timeout_s)
        response.raise_for_status()
        rows = response.json()["data"]["result"]["result"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None
    nodes = []
    for row in rows:
        total = row.get("resources_total") or {}
        nodes.append(
            {
                "node_id": row.get("node_id"),
                "ip": row.get("node_ip"),
                "head": bool(row.get("is_head_node")),
                "state": row.get("state"),
                "cpus": total.get("CPU", 0.0),
                "gpus": total.get("GPU", 0.0),
                "resources": sorted(k for k in total if k.startswith("mur_node_")),
            }
        )
    return sorted(nodes, key=lambda n: (not n["head"], n["state"] != "ALIVE", str(n["ip"])))
