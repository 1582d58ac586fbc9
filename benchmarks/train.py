"""Benchmark: Ray Train wall time to early stop and training samples/s for one pair.

    python benchmarks/train.py [--pair btc_usdt] [--workers 1 2] [--use-gpu] [--concurrent-pairs 5] [--out FILE]

One year of hourly candles, default hyper-parameters (settings), 1 and 2 Ray workers on CPU. With
``--use-gpu`` on a GPU machine the same, plus N pairs trained concurrently with fractional GPUs
(``--gpus-per-worker 0.2``). Connects to the Ray cluster at ``RAY_ADDRESS`` (or starts a local one) and
writes the figures as JSON. Nothing is registered in MLflow.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any


def train_once(
    settings: Any, pair: str, num_workers: int, use_gpu: bool, gpus_per_worker: float
) -> dict[str, Any]:
    """Train one pair to early stop with Ray Train; return timings."""
    from mur.pipeline import load_candles, model_config, prepare, train_config
    from mur.ray_train import ScalingSettings, run_distributed, storage_for

    candles, window, _ = load_candles(settings, pair)
    ds = prepare(settings, candles)
    train, val = ds.model_arrays("train"), ds.model_arrays("val")
    storage, fs = storage_for(settings)
    started = time.perf_counter()
    out = run_distributed(
        train,
        val,
        model_config(settings),
        train_config(settings),
        ScalingSettings(num_workers, use_gpu, settings.cpus_per_worker, gpus_per_worker),
        storage,
        f"bench-{pair}-{num_workers}w-{int(time.time())}",
        storage_filesystem=fs,
    )
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
    p.add_argument("--concurrent-pairs", type=int, default=0, help="(GPU) also train N pairs at once")
    p.add_argument("--out", default="benchmarks/results/train.json")
    args = p.parse_args()

    settings = Settings(train_days=365)
    ray.init(address="auto" if _cluster_running() else None, ignore_reinit_error=True, log_to_driver=False)
    results: dict[str, Any] = {
        "machine": platform.node(),
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
    if args.use_gpu and args.concurrent_pairs:
        pairs = ["btc_usdt", "eth_usdt", "sol_usdt", "bnb_usdt", "xrp_usdt"][: args.concurrent_pairs]
        remote = ray.remote(num_cpus=0)(train_once)
        started = time.perf_counter()
        outs = ray.get([remote.remote(settings, pair, 1, True, 1.0 / len(pairs)) for pair in pairs])
        results["concurrent"] = {
            "pairs": pairs,
            "wall_s": round(time.perf_counter() - started, 2),
            "runs": outs,
        }
        print(f"{len(pairs)} pairs concurrently on fractional GPUs: {results['concurrent']['wall_s']} s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


def _cluster_running() -> bool:
    import os
    import urllib.request

    if os.environ.get("RAY_ADDRESS"):
        return True
    try:
        urllib.request.urlopen("http://127.0.0.1:8265/api/version", timeout=2)
        return True
    except OSError:
        return False


if __name__ == "__main__":
    main()
