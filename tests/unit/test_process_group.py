"""The training's process group listens on the node's address only (mur/training/process_group.py).

Ray Train's own set-up lets PyTorch's rendezvous store listen on every interface; the project's backend binds
it to the address Ray chose for worker 0. Checked here with two real gloo ranks in two processes (the Ray
worker group's calls, without a cluster), and against the installed Ray's private names the backend uses.
"""

from __future__ import annotations

import inspect
import multiprocessing
from typing import Any

import pytest

ADDRESS = "127.0.0.1"


def _rank(rank: int, port_queue: Any, results: Any) -> None:
    """One worker: rank 0 binds (as ``bind_store_socket`` does on worker 0), both join and all-reduce."""
    from unittest import mock

    import psutil
    import torch
    import torch.distributed as dist

    from mur.training import process_group

    try:
        if rank == 0:
            with mock.patch("ray.util.get_node_ip_address", return_value=ADDRESS):
                address, port = process_group.bind_store_socket()
            port_queue.put(port)
        else:
            address, port = ADDRESS, port_queue.get(timeout=60)
        process_group.setup_process_group("gloo", rank, 2, address, port, timeout_s=60)
        total = torch.tensor([float(rank + 1)])
        dist.all_reduce(total)
        listening = [
            c.laddr.ip
            for c in psutil.Process().net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        ]
        dist.destroy_process_group()
        results.put((rank, float(total.item()), listening))
    except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
        results.put((rank, repr(exc), []))


def test_two_ranks_rendezvous_on_the_bound_address_and_listen_nowhere_else() -> None:
    ctx = multiprocessing.get_context("spawn")
    port_queue, results = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(rank, port_queue, results)) for rank in (0, 1)]
    for proc in procs:
        proc.start()
    try:
        seen = sorted(results.get(timeout=120) for _ in procs)
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    assert [s[1] for s in seen] == [3.0, 3.0], seen  # 1 + 2 on both ranks: the group works
    rank0_listening = seen[0][2]
    assert rank0_listening, "rank 0 serves the store"
    assert set(rank0_listening) == {ADDRESS}, seen  # neither "::" nor "0.0.0.0"
    assert all(set(s[2]) <= {ADDRESS} for s in seen), seen


def test_setup_without_a_bound_socket_on_rank_0_says_so() -> None:
    from mur.training import process_group

    process_group._BOUND.clear()
    with pytest.raises(RuntimeError, match="no bound store socket"):
        process_group.setup_process_group("gloo", 0, 1, ADDRESS, 1, timeout_s=1)


def test_the_private_ray_names_the_backend_relies_on_are_there() -> None:
    from ray.train.torch.config import V1WorkerGroup, _set_torch_distributed_env_vars, _TorchBackend

    from mur.training.process_group import BoundStoreTorchBackend, BoundStoreTorchConfig

    assert callable(_set_torch_distributed_env_vars) and isinstance(V1WorkerGroup, type)
    assert list(inspect.signature(_TorchBackend.on_start).parameters) == [
        "self",
        "worker_group",
        "backend_config",
    ]
    config = BoundStoreTorchConfig(backend="gloo")
    assert config.backend_cls is BoundStoreTorchBackend and config.timeout_s > 0
