"""The local stack's ports, and how a test run moves every one of them by one offset.

A stack's services listen on the ports of ``MUR_*_PORT`` (defaults below) and on ports derived from them
(Airflow's log and health ports from ``MUR_AIRFLOW_PORT``; Ray's client, dashboard agent and HAProxy side
ports from ``MUR_RAY_DASHBOARD_PORT``), so adding one offset to the variables moves a whole stack. Two test
runs use it beside the shared stack on the defaults: the end-to-end test (a random offset per run) and the
second shared stack of infra/test.sh's services tier (``MUR_TEST_STACK_OFFSET``, :data:`SECOND_STACK_OFFSET`).
"""

from __future__ import annotations

import socket

DEFAULT_PORTS = {
    "MUR_S3_PORT": 9000,
    "MUR_MLFLOW_PORT": 5000,
    "MUR_RAY_GCS_PORT": 6380,
    "MUR_RAY_DASHBOARD_PORT": 8265,
    "MUR_AIRFLOW_PORT": 8080,
    "MUR_SERVE_PORT": 8000,
    "MUR_DASH_PORT": 8050,
}
SHIFTED_WITH = {  # ports that services derive from the ones above (Airflow's log/health ports, Ray's fixed ones)
    "MUR_AIRFLOW_PORT": (8793, 8794, 8974, 8975, 8976),
    "MUR_RAY_DASHBOARD_PORT": (10001, 52365, 9101, 8404),
}
SECOND_STACK_OFFSET = 13070
"""The second shared stack's offset: its ports stay below 65536 with a worker node's dashboard agent
(52365 + offset + 100, tests/integration/test_cluster.py) and its dashboard agent above Linux's ephemeral
range (32768-60999), as the end-to-end test's offsets (which avoid these ports)."""


def all_ports(offset: int) -> list[int]:
    """Every port a stack moved by ``offset`` listens on."""
    ports = [p + offset for p in DEFAULT_PORTS.values()]
    for derived in SHIFTED_WITH.values():
        ports += [p + offset for p in derived]
    return ports


def shifted_ports(offset: int) -> dict[str, str]:
    """The ``MUR_*_PORT`` variables of a stack moved by ``offset``, and the local URLs that follow them
    (``devstack.config.URL_FIELDS``: what ``mur up`` derives, set here for a process that calls no ``mur``)."""
    from devstack.config import URL_FIELDS

    ports = {name: port + offset for name, port in DEFAULT_PORTS.items()}
    urls = {url: ports[f"MUR_{port.upper()}"] for url, port in URL_FIELDS.items()}
    return {
        **{name: str(port) for name, port in ports.items()},
        **{f"MUR_{url.upper()}": f"http://127.0.0.1:{port}" for url, port in urls.items()},
    }


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True
