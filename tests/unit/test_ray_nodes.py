"""The local stack's Ray worker nodes (`mur up --nodes N`), as the service table defines them: nothing started.

The running two-node cluster is tested in tests/integration/test_cluster.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devstack.config import NODES_FILE, align_settings, remembered_ray_nodes, stack_ray_nodes
from devstack.services import (
    HEAD_GCS_HOST,
    RAY_HEAD_UNSET,
    prepare_ray_node,
    ray_temp_dir,
    stack_services,
    worker_node_ip,
    worker_node_resource,
    worker_node_runtime_dir,
)
from mur.settings import Settings


def settings_for(tmp_path: Path, **fields: object) -> Settings:
    return Settings(_env_file=None, runtime_dir=tmp_path, ray_auth_token="t" * 64, **fields)  # type: ignore[call-arg]


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_one_node_by_default_and_one_service_per_extra_node(tmp_path: Path) -> None:
    assert not [n for n in stack_services(settings_for(tmp_path)) if n.startswith("ray-node-")]
    services = stack_services(settings_for(tmp_path, ray_nodes=3))
    nodes = [n for n in services if n.startswith("ray-node-")]
    assert nodes == ["ray-node-2", "ray-node-3"]
    order = list(services)
    assert order.index("ray") < order.index("ray-node-2"), "a node starts after the head"
    assert all(services[n].depends_on == ("ray",) and services[n].compose == "ray-worker" for n in nodes)


def test_a_worker_node_joins_the_loopback_head_with_the_token(tmp_path: Path) -> None:
    s = settings_for(tmp_path, ray_nodes=2)
    node = stack_services(s)["ray-node-2"]
    argv = node.command
    assert argv[1:3] == ["start", "--block"] and "--head" not in argv
    # the head's GCS under a name `ray start` does not rewrite to the LAN address
    assert flag(argv, "--address") == f"{HEAD_GCS_HOST}:{s.ray.ray_gcs_port}" == "[::ffff:127.0.0.1]:6380"
    assert flag(argv, "--node-ip-address") == worker_node_ip(2) == "127.0.0.2"
    assert json.loads(flag(argv, "--resources")) == {worker_node_resource(2): 100}
    head_agent = 52365
    assert int(flag(argv, "--dashboard-agent-listen-port")) != head_agent, "it also listens on 127.0.0.1"
    env = node.env
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "1", "Ray refuses to join a cluster without it"
    assert env["RAY_enable_metrics_collection"] == "0", "no unauthenticated exporter on every interface"
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"] == "t" * 64
    assert env["MUR_RUNTIME_DIR"] == str(worker_node_runtime_dir(s, 2))
    assert worker_node_runtime_dir(s, 2) != Path(s.general.runtime_dir).resolve()
    assert set(RAY_HEAD_UNSET) <= set(node.env_unset), "no S3 keys in the node's environment"
    assert node.health_url and node.health_url.endswith("/api/local_raylet_healthz")
    assert node.health_headers == {"Authorization": f"Bearer {'t' * 64}"}
    head = stack_services(s)["ray"]
    assert head.env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0", "the head stays on loopback"


def test_the_node_count_is_remembered_for_status_down_and_the_next_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert remembered_ray_nodes(tmp_path) is None
    assert stack_ray_nodes(settings_for(tmp_path), remember=True) == 1
    assert not (tmp_path / NODES_FILE).exists(), "nothing remembered unless a count was given"
    assert stack_ray_nodes(settings_for(tmp_path, ray_nodes=2), remember=True) == 2  # mur up --nodes 2
    assert remembered_ray_nodes(tmp_path) == 2
    assert stack_ray_nodes(settings_for(tmp_path), remember=False) == 2  # mur status / mur down
    monkeypatch.delenv("MUR_RAY_NODES", raising=False)
    aligned = align_settings(settings_for(tmp_path), export=False)
    assert aligned.ray.ray_nodes == 2 and "ray-node-2" in stack_services(aligned)
    assert stack_ray_nodes(settings_for(tmp_path, ray_nodes=1), remember=True) == 1  # mur up --nodes 1
    assert remembered_ray_nodes(tmp_path) == 1
    (tmp_path / NODES_FILE).write_text("not json")
    assert remembered_ray_nodes(tmp_path) is None


def test_mur_up_nodes_sets_the_count_for_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from mur.commands.stack import use_ray_nodes
    from mur.settings import get_settings

    monkeypatch.delenv("MUR_RAY_NODES", raising=False)
    use_ray_nodes(2)
    try:
        assert get_settings().ray.ray_nodes == 2
    finally:
        monkeypatch.delenv("MUR_RAY_NODES", raising=False)
        get_settings.cache_clear()


def test_a_ray_node_start_keeps_one_earlier_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    settings = Settings(_env_file=None, runtime_dir=tmp_path / "runtime")
    temp = ray_temp_dir(settings, 2)
    names = [f"session_2026-11-2{day}_10-00-00_000000_{day}" for day in (3, 5, 4)]
    for name in names:
        (temp / name / "logs").mkdir(parents=True)
    (temp / "session_latest").symlink_to(temp / names[1])
    prepare_ray_node(settings, 2)
    assert sorted(p.name for p in temp.iterdir()) == [names[1], "session_latest"]
