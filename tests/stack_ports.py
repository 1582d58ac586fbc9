"""The local stack's ports, and how a test run moves every one of them by one offset.

A stack's services listen on the ports of ``MUR_*_PORT`` (defaults below) and on ports derived from them
(Airflow's log and health ports from ``MUR_AIRFLOW_PORT``; Ray's client, dashboard agent and HAProxy side
ports from ``MUR_RAY_DASHBOARD_PORT``), so adding one offset to the variables moves a whole stack. No test
run uses the defaults (a developer's ``mur up``): the shared test stack is moved by :data:`FIRST_STACK_OFFSET`,
the second shared stack of infra/test.sh's services tier by :data:`SECOND_STACK_OFFSET` (``MUR_TEST_STACK_OFFSET``)
and the end-to-end test by a random offset per run; :func:`stack_env` names the rest of a test stack.
"""

from __future__ import annotations

import socket
from pathlib import Path

from devstack.serve_haproxy import HAPROXY_SIDE_PORTS, haproxy_dir
from mur.settings import Settings

DEFAULT_PORTS = {
    "MUR_S3_PORT": 9000,
    "MUR_MLFLOW_PORT": 5000,
    "MUR_RAY_GCS_PORT": 6380,
    "MUR_RAY_DASHBOARD_PORT": 8265,
    "MUR_RAY_REDIS_PORT": 6381,
    "MUR_AIRFLOW_PORT": 8080,
    "MUR_SERVE_PORT": 8000,
    "MUR_DASH_PORT": 8050,
}
SHIFTED_WITH = {  # ports that services derive from the ones above (Airflow's log/health ports, Ray's fixed ones)
    "MUR_S3_PORT": (
        9001,
        9002,
        9003,
        9004,
        9005,
        9006,
        9007,
    ),  # SeaweedFS's other listeners (devstack/seaweed.py)
    "MUR_AIRFLOW_PORT": (8793, 8794, 8974, 8975, 8976),
    "MUR_RAY_DASHBOARD_PORT": (10001, 52365, *HAPROXY_SIDE_PORTS.values()),
}
FIRST_STACK_OFFSET = 8650
"""The first shared test stack's offset (tests/conftest.py), as :data:`SECOND_STACK_OFFSET`'s constraints say
(its dashboard agent on 61015) and apart from that stack's ports and from the end-to-end test's offsets."""
SECOND_STACK_OFFSET = 13070
"""The second shared stack's offset: its ports stay below 65536 with a worker node's dashboard agent
(52365 + offset + 100, tests/integration/test_cluster.py) and its dashboard agent above Linux's ephemeral
range (32768-60999), as the end-to-end test's offsets (which avoid these ports)."""

SECOND_STACK_TESTS = (
    "serve",
    "dash",
    "gpu",
    "integration/test_benchmark_smoke_services.py",
)
"""The services-tier tests on the second shared stack, under ``tests/`` (``SECOND_STACK_PATHS`` in
tests/conftest.py says why these); infra/test.sh collects only these for that run (``python tests/stack_ports.py``
prints them)."""


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


def stack_env(offset: int, root: Path, run: str) -> dict[str, str]:
    """``MUR_*`` of the test stack moved by ``offset``: its ports, and its own runtime dir (``root/stack-N``),
    databases and S3 bucket (kept services find them again) and the registry prefix of test run ``run``; none of
    them a default (tests/integration/test_isolation.py)."""
    return {
        **shifted_ports(offset),
        "MUR_PG_DATABASE": f"mur_stack_{offset}",
        "MUR_MLFLOW_DATABASE": f"mlflow_stack_{offset}",
        "MUR_AIRFLOW_DATABASE": f"airflow_stack_{offset}",
        "MUR_RUNTIME_DIR": str(root / f"stack-{offset}"),
        "MUR_S3_BUCKET": f"mur-test-{offset}",
        "MUR_REGISTRY_PREFIX": f"t{run}-mur-",
    }


def remove_temp_files(settings: Settings) -> None:
    """What a stopped test stack leaves in the system temp dir, outside its runtime dir: its Ray nodes' temp dirs
    (``ray-GCS_PORT``, ``ray-GCS_PORT-nN``: sessions and logs, ~5-20 MB a node), SeaweedFS's Unix sockets
    (:func:`remove_seaweed_sockets`) and HAProxy's dir (when the runtime dir's path is long). A user's
    ``mur down`` keeps them (the logs); a test run leaves nothing behind. Only for a stack whose Ray is its
    own (the Ray ports of ``settings`` name the temp dirs removed), and only once it stopped: while anything
    listens on its GCS port, a running head's files stay (and a line says so)."""
    import shutil

    from devstack.services import ray_temp_dir

    head = ray_temp_dir(settings)
    folders = [head, *head.parent.glob(f"{head.name}-n*")] if port_free(settings.ray.ray_gcs_port) else []
    if not folders:
        print(f"[services] a Ray GCS still listens on {settings.ray.ray_gcs_port}: {head}* left", flush=True)
    for folder in (*folders, haproxy_dir(settings)):
        shutil.rmtree(folder, ignore_errors=True)
    remove_seaweed_sockets(settings.registry.s3_port)


def remove_seaweed_sockets(s3_port: int) -> None:
    """The Unix sockets a stopped SeaweedFS left in the system temp dir (``seaweedfs-*-PORT.sock``, one per
    listener that opens one) for the object store on ``s3_port``."""
    import tempfile

    from devstack.seaweed import ports

    for port in ports(s3_port).values():
        for socket_file in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
            socket_file.unlink(missing_ok=True)


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_ray_shift(shifts: range) -> int:
    """The first shift in ``shifts`` that leaves a second Ray head's default ports (dashboard, GCS and its Redis,
    client server, agent, Serve's HAProxy-mode ports) all free on 127.0.0.1."""
    for shift in shifts:
        try:
            for port in (8265, 6380, 6381, *SHIFTED_WITH["MUR_RAY_DASHBOARD_PORT"]):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port + shift))
        except OSError:
            continue
        return shift
    raise RuntimeError(f"no free port range for a second Ray head in {shifts}")


if __name__ == "__main__":  # infra/test.sh: the paths its second-stack run collects
    print(" ".join(f"tests/{path}" for path in SECOND_STACK_TESTS))
