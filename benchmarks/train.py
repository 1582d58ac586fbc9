"""Benchmark: Ray Train wall time to early stop and training samples/s for one pair.

    python benchmarks/train.py [--pair btc_usdt] [--workers 1 2] [--use-gpu] [--concurrent-pairs 5] [--out FILE]

One year of hourly candles, default hyper-parameters (settings), 1 and 2 Ray workers on CPU. With
``--concurrent-pairs N`` also N pairs trained at once (one worker each; on GPU with a 1/N GPU share each),
and from that the number of pairs one machine retrains every hour: ``N × 3600 s / wall × 0.7`` (30 %
headroom, see docs/scale-out.md). ``--use-gpu`` runs the same on a GPU machine. Connects to the Ray cluster
at ``RAY_ADDRESS`` (or starts a local one) and writes the figures as JSON. Nothing is registered in MLflow.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any


def train_once(
    settings: Any, pair: str, num_workers: int, use_gpu: bool, gpus_per_worker: float
) -> dict[str, Any]:
    """Train one pair to early stop with Ray Train; return timings."""
    from mur.training.batch import FitItem
    from mur.training.driver import load_candles, prepare
    from mur.training.params import model_config, train_config
    from mur.training.ray_fit import ScalingSettings, run_distributed_many, storage_for

    candles, window, _ = load_candles(settings, pair)
    ds = prepare(settings, candles)
    train, val = ds.model_arrays("train"), ds.model_arrays("val")
    storage, fs = storage_for(settings)
    started = time.perf_counter()
    name = f"bench-{pair}-{num_workers}w-{int(time.time())}"
    out = run_distributed_many(
        [FitItem(name, train, val, model_config(settings), train_config(settings))],
        ScalingSettings(num_workers, use_gpu, settings.cpus_per_worker, gpus_per_worker),
        storage,
        name,
        storage_filesystem=fs,
    )[name]
    if isinstance(out, str):
        raise SystemExit(f"training failed: {out}")
    wall = time.perf_counter() - started
    epochs = len(out.history)
    fit_s = sum(float(r.get("epoch_seconds", 0.0)) for r in out.history)
    return {
        "pair": pair,
        "num_workers": num_workers,
        "use_gpu": use_gpu,
        "train_samples": int(len(train[1])),
        "epochs_run": epochs,
        "best_epoch": out.best_epoch,
        "wall_s": round(wall, 2),
        "epoch_compute_s": round(fit_s, 2),
        "samples_per_s": round(len(train[1]) * epochs / fit_s, 1) if fit_s else None,
        "data_window": window.to_dict(),
    }


def main() -> None:
    import ray

    from mur.settings import Settings

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pair", default="btc_usdt")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--use-gpu", action="store_true")
    p.add_argument("--gpus-per-worker", type=float, default=1.0)
    p.add_argument("--concurrent-pairs", type=int, default=0, help="also train N pairs at once")
    p.add_argument("--out", default="benchmarks/results/train.json")
    args = p.parse_args()

    settings = Settings(train_days=365)
    from mur.devstack.config import use_stack_ray

    use_stack_ray()  # the local stack's head listens on 127.0.0.1 only (docs/services.md)
    ray.init(address="auto" if _cluster_running() else None, ignore_reinit_error=True, log_to_driver=False)
    results: dict[str, Any] = {
        "machine": platform.node(),
        "host_cpus": os.cpu_count(),
        "host_mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "cpus": ray.cluster_resources().get("CPU"),
        "gpus": ray.cluster_resources().get("GPU", 0),
        "runs": [],
    }
    for n in args.workers:
        r = train_once(settings, args.pair, n, args.use_gpu, args.gpus_per_worker)
        results["runs"].append(r)
        print(
            f"{n} worker(s): wall {r['wall_s']} s to early stop after {r['epochs_run']} epochs, "
            f"{r['samples_per_s']} samples/s"
        )
    if args.concurrent_pairs:
        pairs = ["btc_usdt", "eth_usdt", "sol_usdt", "bnb_usdt", "xrp_usdt"][: args.concurrent_pairs]
        gpu_share = 1.0 / len(pairs) if args.use_gpu else 0.0
        remote = ray.remote(num_cpus=0)(train_once)
        started = time.perf_counter()
        outs = ray.get([remote.remote(settings, pair, 1, args.use_gpu, gpu_share) for pair in pairs])
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
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


def _cluster_running() -> bool:
    import os
    import urllib.request

    if os.environ.get("RAY_ADDRESS"):
        return True
    try:
        urllib.request.urlopen("http://127.0.0.1:8265/api/gcs_healthz", timeout=2)  # public: no token needed
        return True
    except OSError:
        return False


if __name__ == "__main__":
    main()
