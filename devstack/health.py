"""Health checks: an HTTP URL that answers 2xx (with a component's JSON status, where asked), or a TCP port."""

from __future__ import annotations

import json
import socket
import ssl
from pathlib import Path
from typing import Any

import httpx

from devstack.services import Service
from mur.settings import Settings


def probe(service: Service, timeout_s: float = 2.0) -> bool:
    """True when the service passes its health check now: its health URL answers 2xx, or, without a URL, its
    port accepts; a service with neither has no check of its own (its process is its health)."""
    if service.health_url:
        try:  # never via a proxy
            return httpx.get(
                service.health_url,
                headers=service.health_headers,
                timeout=timeout_s,
                trust_env=False,
                follow_redirects=True,
            ).is_success
        except httpx.HTTPError:
            return False
    return service.port is not None and port_open(service.host, service.port, timeout_s, service.health_tls)


def check_text(service: Service) -> str:
    """The health check, in words."""
    if service.health_url:
        return service.health_url
    scheme = "tls" if service.health_tls else "tcp"
    return f"{scheme}://{service.host}:{service.port}" if service.port is not None else "its process running"


STATE_FILE, ALERTS_FILE = "watchdog.json", "service-alerts.jsonl"  # in the runtime dir


def read_state(settings: Settings) -> dict[str, dict[str, Any]]:
    """What the watchdog (:mod:`devstack.watchdog`) did, per service: ``restarts``, ``state`` (running,
    restarting, fatal), ``failures`` (deaths in a row), ``sid`` and ``since`` (its last start)."""
    try:
        data = json.loads((Path(settings.general.runtime_dir) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def latest_alerts(settings: Settings, limit: int = 5) -> list[dict[str, Any]]:
    """The newest service alerts the watchdog recorded (delivered or not), oldest first."""
    try:
        lines = (Path(settings.general.runtime_dir) / ALERTS_FILE).read_text().splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines[-limit:] if line.strip()]


def port_open(host: str, port: int, timeout_s: float = 1.0, tls: Path | None = None) -> bool:
    """Whether the port accepts a connection; with ``tls`` (a folder of ``ca.pem``, ``cert.pem``, ``key.pem``),
    and a TLS handshake with that client certificate (Redis logs a bare connect to its TLS port as an error)."""
    try:
        if tls:  # the certificate first: a missing one must not leave a bare connect (Redis logs those)
            context = ssl.create_default_context(cafile=tls / "ca.pem")
            context.load_cert_chain(tls / "cert.pem", tls / "key.pem")
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            if tls:
                context.wrap_socket(sock, server_hostname=host).close()
            return True
    except OSError:
        return False


def ray_nodes(settings: Settings, timeout_s: float = 5.0) -> list[dict[str, Any]] | None:
    """The Ray cluster's nodes from the dashboard's state API (with the token): address, head or not, state,
    CPUs, GPUs and the node's custom resources; None when the head does not answer."""
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
