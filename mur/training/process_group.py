"""Ray Train's torch process group, with its rendezvous store listening on the node's own address only.

Why this wraps a private Ray API: Ray Train (``ray.train.torch.config._TorchBackend.on_start``) starts the
process group through ``env://``, so rank 0 creates PyTorch's ``TCPStore`` server, which listens on every
interface (``::``, else ``0.0.0.0``; torch has no bind-address option) without any credential for as long as
a training runs: on the local stack a port beyond 127.0.0.1 that anyone on the network could write to. The
one way PyTorch offers to choose the address is ``master_listen_fd``, a socket bound by the caller.

:class:`BoundStoreTorchConfig` is Ray's ``TorchConfig`` with a backend that does what Ray's does (the same
backend choice, ``MASTER_ADDR``/``MASTER_PORT`` and the ``LOCAL_RANK``... variables, the same timeout), except
that worker 0 binds the store's socket to the address Ray chose for it, ``ray.util.get_node_ip_address()``
(127.0.0.1 on the local stack; the node's cluster-network address on a real cluster, where the other nodes
must reach it), and every rank hands that store to ``init_process_group``. Anything but gloo/NCCL falls back
to Ray's own set-up. This module is the project's one use of Ray Train's private backend API;
``tests/unit/test_process_group.py`` checks the names it relies on against the installed Ray.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any

from ray.train.torch.config import TorchConfig, _TorchBackend  # [ray] private: see the module docstring

#: Worker 0's bound listening socket, kept from :func:`bind_store_socket` until :func:`setup_process_group`
#: hands it to the store (a Ray Train worker process runs one training's worker 0 at a time).
_BOUND: dict[str, socket.socket] = {}
BACKENDS = ("gloo", "nccl")
NCCL_ERROR_VARS = ("TORCH_NCCL_ASYNC_ERROR_HANDLING", "TORCH_NCCL_BLOCKING_WAIT")


def bind_store_socket() -> tuple[str, int]:
    """On worker 0: bind a listening socket to this node's address (a free port); its address and port."""
    import ray

    address = ray.util.get_node_ip_address()
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.create_server((address, 0), family=family, backlog=128)  # SO_REUSEADDR, bound, listening
    if (previous := _BOUND.pop("store", None)) is not None:
        previous.close()
    _BOUND["store"] = sock
    return address, int(sock.getsockname()[1])


def setup_process_group(
    backend: str, world_rank: int, world_size: int, address: str, port: int, timeout_s: float
) -> None:
    """On every worker: join (rank 0: serve, on its bound socket) the store, then start the process group."""
    import torch.distributed as dist

    timeout = timedelta(seconds=timeout_s)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = address, str(port)
    # as Ray's set-up: NCCL fails on a timed-out collective unless the user chose otherwise
    if backend == "nccl" and os.environ.keys().isdisjoint(NCCL_ERROR_VARS):
        os.environ["TORCH_NCCL_ASYNC_ERROR_HANDLING"] = "1"
    if world_rank == 0:
        if (sock := _BOUND.pop("store", None)) is None:
            raise RuntimeError("worker 0 has no bound store socket (bind_store_socket did not run here)")
        fd = sock.detach()  # the store owns the listening socket from now on
        store = dist.TCPStore(address, port, world_size, True, timeout=timeout, master_listen_fd=fd)
    else:
        store = dist.TCPStore(address, port, world_size, False, timeout=timeout)
    dist.init_process_group(
        backend=backend, store=store, rank=world_rank, world_size=world_size, timeout=timeout
    )


class BoundStoreTorchBackend(_TorchBackend):  # [ray]
    """Ray's torch backend, with the rendezvous store bound to worker 0's node address (module docstring)."""

    def on_start(self, worker_group: Any, backend_config: Any) -> None:
        import ray

        backend = backend_config.backend
        if backend is None:
            backend = "nccl" if worker_group.get_resources_per_worker().get("GPU", 0) > 0 else "gloo"
        if backend not in BACKENDS:
            super().on_start(worker_group, backend_config)
            return
        from ray.train.torch.config import V1WorkerGroup, _set_torch_distributed_env_vars  # [ray]

        address, port = worker_group.execute_single(0, bind_store_socket)
        if not isinstance(worker_group, V1WorkerGroup):  # as Ray's: LOCAL_RANK, RANK, WORLD_SIZE...
            worker_group.execute(_set_torch_distributed_env_vars)
        ray.get(
            [
                worker_group.execute_single_async(
                    rank,
                    setup_process_group,
                    backend=backend,
                    world_rank=rank,
                    world_size=len(worker_group),
                    address=address,
                    port=port,
                    timeout_s=backend_config.timeout_s,
                )
                for rank in range(len(worker_group))
            ]
        )


class BoundStoreTorchConfig(TorchConfig):  # [ray]
    """``TorchConfig`` whose process group's store listens on the node's own address only."""

    @property
    def backend_cls(self) -> type[BoundStoreTorchBackend]:
        return BoundStoreTorchBackend
