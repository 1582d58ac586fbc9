"""Issue 26 #1-3: the GPU training path, correct by construction and checked without a GPU.

* every collective's tensor lives on the worker's device (NCCL has no CPU tensors): a ``meta`` device stands
  in for ``cuda`` and the all-reduce records where its tensor is;
* a checkpoint a GPU worker saved (its tensors tagged ``cuda:0``) loads on a CPU-only machine (the driver on
  a CPU head);
* a GPU request the cluster cannot place fails at once, naming the numbers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ray.train import ScalingConfig

from mur.training import ray_fit
from mur.training.ray_fit import check_gpu_placement, load_checkpoint_state, mean_over_workers


class Recorded(Exception):
    """Stops the collective once it has seen its tensor."""


def test_every_collective_tensor_is_on_the_workers_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed as dist

    seen: list[torch.device] = []

    def all_reduce(tensor: torch.Tensor) -> None:
        seen.append(tensor.device)
        raise Recorded

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    with pytest.raises(Recorded):
        mean_over_workers(0.25, torch.device("meta"))  # stands in for the worker's cuda:N
    assert seen == [torch.device("meta")]


def test_mean_over_workers_averages(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed as dist

    other = torch.tensor([4.0 * 3, 3.0], dtype=torch.float64)  # the other rank: 4.0 over a share of 3
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "all_reduce", lambda tensor: tensor.add_(other))  # the sum over both ranks
    assert mean_over_workers(2.0, torch.device("cpu"), weight=1.0) == pytest.approx((2.0 + 12.0) / 4)
    other = torch.tensor([4.0, 1.0], dtype=torch.float64)  # unweighted: the plain mean
    assert mean_over_workers(3.0, torch.device("cpu")) == pytest.approx(3.5)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    assert mean_over_workers(3.0, torch.device("cpu"), weight=5.0) == 3.0


def test_the_worker_loop_uses_the_device_helper_for_every_collective() -> None:
    """No collective of the loop is written out again on a tensor made elsewhere (the bug: CPU tensors)."""
    import inspect

    source = inspect.getsource(ray_fit)
    assert source.count("dist.all_reduce(") == 1, "collectives go through mean_over_workers"
    assert "torch.load(" in source and source.count("torch.load(") == 1, "checkpoints go through one loader"


def test_a_checkpoint_saved_on_a_gpu_loads_on_a_cpu_only_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GPU worker's checkpoint records its tensors' device (``cuda:0``); a CPU driver (compose: the head)
    must read it. The save is made to record ``cuda:0`` as a GPU worker's does."""
    import torch.serialization

    path = tmp_path / "state.pt"
    with monkeypatch.context() as patch:
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save({"model": {"w": torch.ones(3)}, "step": torch.tensor(4)}, path)
    if not torch.cuda.is_available():  # what the driver met before
        with pytest.raises(RuntimeError, match="CUDA device"):
            torch.load(path, weights_only=True)
    state = load_checkpoint_state(path)
    assert state["model"]["w"].device.type == "cpu" and state["model"]["w"].tolist() == [1.0, 1.0, 1.0]
    assert int(state["step"]) == 4


@pytest.mark.parametrize(
    ("workers", "per_worker", "gpus", "message"),
    [
        (2, 1.0, 1.0, "2 worker(s) x 1 GPU = 2 GPU(s), but the Ray cluster has 1"),
        (1, 1.0, 0.0, "but the Ray cluster has 0"),
        (2, 0.5, 4.0, "would share a GPU, which NCCL refuses"),
    ],
)
def test_a_gpu_request_the_cluster_cannot_place_fails_at_once(
    workers: int, per_worker: float, gpus: float, message: str
) -> None:
    scaling = ScalingConfig(num_workers=workers, use_gpu=True, resources_per_worker={"GPU": per_worker})
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_gpu_placement(scaling, gpus)


def test_placeable_gpu_requests_pass() -> None:
    check_gpu_placement(ScalingConfig(num_workers=1, use_gpu=True, resources_per_worker={"GPU": 1.0}), 1.0)
    check_gpu_placement(
        ScalingConfig(num_workers=1, use_gpu=True, resources_per_worker={"GPU": 0.5}), 1.0
    )  # may share
    check_gpu_placement(ScalingConfig(num_workers=2, use_gpu=True, resources_per_worker={"GPU": 1.0}), 2.0)
