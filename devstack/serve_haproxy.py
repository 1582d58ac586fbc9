"""Serve's HAProxy on the local Ray head: its private directory and files, and the launcher that binds its
side ports to 127.0.0.1 (:mod:`devstack.haproxy_wrapper`; docs/services.md, "Serve's HAProxy")."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from devstack import haproxy_wrapper, secret_files
from mur.settings import Settings

HAPROXY_SIDE_PORTS: dict[str, int] = {
    "RAY_SERVE_HAPROXY_METRICS_PORT": 9101,
    "RAY_SERVE_HAPROXY_STATS_PORT": 8404,
    "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": 8500,
    "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": 9500,
}
"""The fixed ports of Serve's HAProxy mode (Ray's defaults), moved along with a second head's other ports:
HAProxy's Prometheus and stats ports, and the fallback proxy (HAProxy's ``backup`` server while no replica
answers). That proxy binds with ``SO_REUSEPORT``, so a second stack's proxy on the same port binds too and the
kernel splits connections between the two: requests of one stack reached the other's API (a valid token
answered 401 "invalid or revoked")."""
MAX_SOCKET_PATH = 97
"""The longest Unix socket path HAProxy accepts ("socket path ... too long (max 97)")."""
NODE_SCOPE = 1 + 56
"""Ray puts HAProxy's files in a subdirectory named after the node id (56 hex digits) of each directory."""


def haproxy_dir(settings: Settings) -> Path:
    """HAProxy's private files for this stack (config, admin socket, server state, the launcher), mode 700.

    ``{runtime_dir}/haproxy`` unless that makes its sockets' paths (Ray adds ``/{node id}/admin.sock``) too
    long for a Unix socket; then a
    directory in ``/tmp`` named after the runtime dir. Either way, not Ray's shared ``/tmp/haproxy-serve``:
    a second stack on the machine never rewrites this one's HAProxy configuration, and the owner-only
    directory keeps other users away from the admin socket whatever its mode.
    """
    runtime = Path(settings.general.runtime_dir).resolve()
    preferred = runtime / "haproxy"
    if len(str(preferred)) + NODE_SCOPE + len("/metrics.sock") <= MAX_SOCKET_PATH:
        return preferred
    digest = hashlib.sha256(f"{os.getuid()}:{runtime}".encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"mur-hap-{digest}"


def haproxy_env(settings: Settings) -> dict[str, str]:
    """Where Serve's HAProxy keeps its files, and the launcher that binds its side ports to 127.0.0.1.

    See :mod:`devstack.haproxy_wrapper` for why a launcher: Ray's template hardcodes the stats and
    Prometheus listeners on every interface and the admin socket with mode 666.
    """
    base = haproxy_dir(settings)
    return {
        "RAY_SERVE_HAPROXY_BINARY_PATH": str(base / "bin" / "haproxy"),
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(base / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(base / "admin.sock"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(base / "metrics.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(base),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(base / "server-state"),
    }


def prepare_haproxy(settings: Settings) -> None:
    """Create the owner-only HAProxy directory and its launcher (before the Ray head starts)."""
    secret_files.private_dir(haproxy_dir(settings))
    configured = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    launcher = Path(haproxy_env(settings)["RAY_SERVE_HAPROXY_BINARY_PATH"])
    real = haproxy_wrapper.real_binary(configured if configured and Path(configured) != launcher else None)
    if real is not None:
        haproxy_wrapper.write_launcher(launcher, real)
