"""Benchmark: Ray Train for one pair and for a batch of pairs, and where an epoch's wall time goes.

    python benchmarks/train.py [--pair btc_usdt] [--workers 1 2] [--batch-pairs 5] [--use-gpu]
                               [--concurrent-pairs N] [--address HOST:PORT] [--smoke] [--out FILE]

One year of hourly candles, default hyper-parameters (settings). For each worker count in ``--workers`` one
pair is trained to early stop; then ``--batch-pairs`` bundled pairs are trained in **one** Ray Train run
(:func:`mur.training.ray_fit.run_distributed_many` with N items on ``MUR_NUM_WORKERS`` workers), as the
production batch job does (``ray_jobs/train_pair.py --pairs``), timed end to end (data preparation, worker
start-up, every pair's epochs and checkpoints, teardown). Every run prints

* **epoch compute**: the seconds of ``train_epoch`` (forward, backward, DDP all-reduce of the gradients);
* **epoch wall**: the seconds from one epoch's end to the next one's, summed over the epochs: compute plus
  the validation pass and its all-reduce, the report and checkpoint of the epoch before, the sampler;
* ``epoch overhead ratio: wall / compute`` (1.0: an epoch costs its compute).

``--use-gpu`` runs the same on GPU workers (``--gpus-per-worker``; one worker unless ``--workers``: DDP
ranks each need a whole GPU), ``--concurrent-pairs N`` also trains N
pairs as N separate one-worker runs at once. ``--smoke`` runs tiny sizes in seconds (a test runs it so the
benchmark cannot rot). Connects to ``--address`` (or ``RAY_ADDRESS``), else starts a private local Ray; writes
the figures as JSON to ``--out``. Nothing is registered in MLflow.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import common  # noqa: E402

SMOKE: dict[str, Any] = {"train_days": 20, "epochs": 2, "hidden_size": 8, "num_layers": 1, "num_workers": 1}
"""Tiny sizes for ``--smoke``: seconds of training."""


def epoch_figures(history: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Epoch compute, epoch wall and their ratio from a training's per-epoch rows (``compute_s``, ``wall_s``:
    :func:`mur.training.loop.run_epochs`)."""
    compute = sum(float(r["compute_s"]) for r in history)
    wall = sum(float(r["wall_s"]) for r in history)
    parts = {
        key: round(sum(float(r.get(key, 0.0)) for r in history), 3)
        for key in ("eval_s", "report_s", "checkpoint_s")
    }
    return {
        "epochs_run": len(history),
        "epoch_compute_s": round(compute, 3),
        "epoch_wall_s": round(wall, 3),
        "epoch_overhead_ratio": round(wall / compute, 3) if compute else None,
        "checkpoints": sum(bool(r.get("checkpointed")) for r in history),
        **parts,
    }


def fit_items(settings: Any, pairs: Sequence[str]) -> tuple[list[Any], int, float]:
    """The fit items of ``pairs`` as the driver prepares them (not registered: full trainings), their
    training samples and the seconds taken."""
    from mur.training.driver import PreparedTraining, prepare_training
    from mur.training.loop import LocalFit

    started = time.perf_counter()
    items = []
    for pair in pairs:
        prep = prepare_training(settings, pair, fit=LocalFit(), register=False, emit=lambda _m: None)
        assert isinstance(prep, PreparedTraining)  # only a registering training reuses a version
        items.append(prep.fit_item())
    return items, sum(len(item.train[1]) for item in items), time.perf_counter() - started


def train_run(
    settings: Any,
    pairs: Sequence[str],
    num_workers: int,
    use_gpu: bool,
    gpus_per_worker: float,
) -> dict[str, Any]:
    """Train ``pairs`` in one Ray Train run (one worker group) and return the run's figures, end to end."""
    from mur.training.ray_fit import RayFit, run_distributed_many, storage_for

    started = time.perf_counter()
    items, samples, prep_s = fit_items(settings, pairs)
    storage, fs = storage_for(settings)
    name = f"bench-{len(pairs)}p-{num_workers}w-{int(time.time() * 1000)}"
    scaling = RayFit.from_settings(
        settings.replace(gpus_per_worker=gpus_per_worker), num_workers=num_workers, use_gpu=use_gpu
    ).scaling
    fit_started = time.perf_counter()
    outcomes = run_distributed_many(
        items,
        scaling,
        storage,
        name,
        storage_filesystem=fs,
        checkpoint_every=settings.training.checkpoint_every_epochs,
    )
    fit_s = time.perf_counter() - fit_started
    failed = [str(out) for out in outcomes if isinstance(out, Exception)]
    if failed:
        raise SystemExit(f"training failed: {failed}")
    histories = {item.name: out.history for item, out in zip(items, outcomes, strict=True)}  # none failed
    figures = epoch_figures([row for rows in histories.values() for row in rows])
    compute = figures["epoch_compute_s"]
    seen = sum(len(item.train[1]) * len(histories[item.name]) for item in items)
    return {
        "pairs": list(pairs),
        "num_workers": num_workers,
        "use_gpu": use_gpu,
        "gpus_per_worker": gpus_per_worker if use_gpu else 0.0,
        "train_samples": samples,
        "end_to_end_s": round(time.perf_counter() - started, 2),
        "prepare_s": round(prep_s, 2),
        "fit_wall_s": round(fit_s, 2),
        **figures,
        "samples_per_s": round(seen / compute, 1) if compute else None,
        "per_pair": {pair: epoch_figures(rows) for pair, rows in histories.items()},
    }


def describe(label: str, run: dict[str, Any]) -> str:
    return (
        f"{label}: {run['end_to_end_s']} s end to end ({run['fit_wall_s']} s in Ray Train), "
        f"{run['epochs_run']} epochs, epoch compute {run['epoch_compute_s']} s vs epoch wall "
        f"{run['epoch_wall_s']} s (eval {run['eval_s']} s, reports {run['report_s']} s, "
        f"{run['checkpoints']} checkpoint(s)); epoch overhead ratio: {run['epoch_overhead_ratio']}"
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--pair", default="btc_usdt")
    p.add_argument("--workers", type=int, nargs="*", default=[1, 2], help="one-pair runs with these workers")
    p.add_argument(
        "--batch-pairs", type=int, default=5, help="bundled pairs trained in one run (0: no batch run)"
    )
    p.add_argument("--batch-workers", type=int, help="workers of the batch run (default MUR_NUM_WORKERS)")
    p.add_argument("--use-gpu", action="store_true")
    p.add_argument("--gpus-per-worker", type=float, default=1.0)
    p.add_argument("--concurrent-pairs", type=int, default=0, help="also N one-worker runs at once")
    p.add_argument("--address", help="Ray cluster to use (default RAY_ADDRESS, else a private local Ray)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (seconds): checks the benchmark runs")
    p.add_argument("--out", default="benchmarks/results/train.json")
    args = p.parse_args(argv)

    from devstack.config import use_stack_ray

    use_stack_ray()  # token auth, and the loopback switch a local head needs (docs/services.md)
    import ray

    from mur.settings import Settings

    settings = Settings(**SMOKE) if args.smoke else Settings(train_days=365)
    # the default worker counts, where a 2-rank DDP needs two GPUs: 1 on a GPU machine or in a smoke run
    workers = [1] if (args.smoke or args.use_gpu) and args.workers == [1, 2] else args.workers
    batch_pairs = min(args.batch_pairs, 2) if args.smoke else args.batch_pairs
    address = args.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    else:  # a private head: the figures do not depend on what else a shared cluster runs
        ray.init(
            address="local",
            num_cpus=max(4, os.cpu_count() or 1),
            include_dashboard=False,
            log_to_driver=False,
        )
    results: dict[str, Any] = {
        "machine": platform.node(),
        "host_cpus": os.cpu_count(),
        "host_mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        "cpus": ray.cluster_resources().get("CPU"),
        "gpus": ray.cluster_resources().get("GPU", 0),
        "smoke": args.smoke,
        "train_days": settings.training.train_days,
        "checkpoint_every_epochs": settings.training.checkpoint_every_epochs,
        "runs": [],
    }
    for n in workers:
        run = train_run(settings, [args.pair], n, args.use_gpu, args.gpus_per_worker)
        results["runs"].append(run)
        print(describe(f"{args.pair}, {n} worker(s)", run), flush=True)
    if batch_pairs:
        pairs = list(common.BUNDLED[:batch_pairs])
        n = args.batch_workers or settings.training.num_workers
        if args.use_gpu:
            n = min(n, int(results["gpus"] // max(args.gpus_per_worker, 1e-9)) or 1)
        batch = train_run(settings, pairs, n, args.use_gpu, args.gpus_per_worker)
        results["batch"] = batch
        print(describe(f"batch of {len(pairs)} pairs, one run, {n} worker(s)", batch), flush=True)
    if args.concurrent_pairs:
        pairs = list(common.BUNDLED[: args.concurrent_pairs])
        gpu_share = 1.0 / len(pairs) if args.use_gpu else 0.0
        remote = ray.remote(num_cpus=0)(train_run)
        started = time.perf_counter()
        outs = ray.get([remote.remote(settings, [pair], 1, args.use_gpu, gpu_share) for pair in pairs])
        wall = time.perf_counter() - started
        per_hour = len(pairs) * 3600.0 / wall * 0.7
        results["concurrent"] = {
            "pairs": pairs,
            "use_gpu": args.use_gpu,
            "wall_s": round(wall, 2),
            "pairs_per_machine_hourly": int(per_hour),
            "runs": outs,
        }
        where = "on fractional GPUs" if args.use_gpu else "on CPU, one worker each"
        print(
            f"{len(pairs)} pairs concurrently {where}: {wall:.1f} s wall "
            f"-> about {int(per_hour)} pairs retrained per hour on this machine (30 % headroom)"
        )
    results["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    common.write_json(args.out, results)
    print(f"wrote {args.out}")
    ray.shutdown()
    return results


if __name__ == "__main__":
    main()
