"""Benchmark: many pairs on one machine: Serve memory per pair, latency over random pairs, cold loads, and
the hourly training cycle.

    .venv/bin/python benchmarks/pairs.py --pairs 10 50 200
    .venv/bin/python benchmarks/pairs.py --pairs 10 50 --concurrency 16 --requests 1500 --train-sample 4
    .venv/bin/python benchmarks/pairs.py --train-sample 0   # Serve only; the last training figures kept
    .venv/bin/python benchmarks/pairs.py --pairs 10 50 --train-sample 0 --shadows 2 --json X  # with shadows
    .venv/bin/python benchmarks/pairs.py --smoke   # 2 then 3 pairs, 20 requests, no training, no JSON (CI)

Needs the stack (``mur up``: S3, MLflow, Ray) and PostgreSQL. It uses synthetic pairs (``syn001_usdt`` …,
``mur/data/synthetic.py``; ``MUR_SYNTHETIC_PAIRS`` is set for the app), one small model trained once and
registered for every pair under a private registry prefix (``mur-benchp-``; ``syn002_usdt`` gets two versions
so that an older one can be cold-loaded), its own database (``mur_bench``) and user. For each N it deploys
the Serve app serving the first N pairs (this replaces a running Serve app), waits until every pair is
loaded, then measures:

- **Serve memory**: the PSS of every Serve process (controller, HAProxy/proxy, every replica), and per added
  pair the slope against the 5-pair baseline;
- **latency**: p50/p99 of ``GET /v1/forecast/{pair}`` at a fixed concurrency over random pairs (the API's
  answer cache on, ``MUR_SERVE_ANSWER_TTL_S``), and of ``POST`` with each pair's candles (never shared: the
  Forecaster path alone, like for like across N);
- **cold load**: a request for a model id no replica holds (``syn002_usdt@<older version>``), through the
  Forecaster's handle.

Then the **hourly cycle** on the real path (:func:`training_cycle`): ``--train-sample`` pairs in batch Ray
jobs, one per slot at once (the DAG's ``train_batch``: Job API, Ray Train, export, evaluation, registry,
gate), default settings: full trainings, the next hour's warm starts from those champions
(``mur/training/warm_start.py``), then one pair per job to separate a job's fixed cost from a pair's; the
cycle for 100 pairs follows, the full run amortized over ``MUR_FULL_RETRAIN_HOURS``. The last
lines are ``pairs served: N``, ``serve memory per added pair: X MB``, ``hourly cycle for 100 pairs: Y s``.
A failed request or a latency that is not a finite number fails the run (exit 1, nothing written).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import platform
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks import serve as bench_serve  # noqa: E402  (its load generator, champion and token helpers)
from benchmarks.common import RESULTS, write_json  # noqa: E402
from mur.waiting import wait_until  # noqa: E402

BASELINE_PAIRS = 5
TARGET_MB_PER_PAIR = 5.0
TARGET_P50_RATIO = 1.5
TARGET_CYCLE_S = 45 * 60


def copy_version(client: Any, name: str, version: Any, tags: dict[str, str]) -> Any:
    """A new version of registered model ``name`` with the files of ``version`` (another model's or its own)
    and ``tags``."""
    model_id = getattr(version, "model_id", None) or (
        version.source.removeprefix("models:/") if version.source.startswith("models:/m-") else None
    )  # MLflow 3: a version's source is its logged model, which must be named too
    return client.create_model_version(
        name, version.source, run_id=version.run_id, tags=tags, model_id=model_id
    )


def register_pairs(settings: Any, pairs: list[str], base_pair: str, base_version: int) -> dict[str, int]:
    """Give every pair a champion: a new version with the base model's files (two for the cold-load pair)."""
    from mlflow.exceptions import MlflowException

    from mur.registry import CHAMPION, model_name
    from mur.serving.champions import champions, registry_client

    client = registry_client(settings)
    known = champions(
        client,
        prefix=settings.registry.registry_prefix,
        experiment=settings.registry.mlflow_experiment,
        pairs=pairs,
    )
    src = client.get_model_version(
        model_name(base_pair, settings.registry.registry_prefix), str(base_version)
    )
    versions = {p: int(s["version"]) for p, s in known.items()}
    for pair in pairs:
        if pair in versions:
            continue
        name = model_name(pair, settings.registry.registry_prefix)
        with contextlib.suppress(MlflowException):
            client.create_registered_model(name)
        tags = {**(src.tags or {}), "pair": pair}
        for _ in range(2 if pair == "syn002_usdt" else 1):
            new = copy_version(client, name, src, tags)
        client.set_registered_model_alias(name, CHAMPION, str(new.version))
        versions[pair] = int(new.version)
    return versions


def set_shadows(
    settings: Any, pairs: list[str], shadows: int, *, fresh: bool = False
) -> dict[str, list[int]]:
    """Serve ``shadows`` versions of each pair in shadow (copies of its champion: alias ``shadow-vN``), or
    none: every served candle then also computes that many shadow forecasts (docs/promotion.md, "Shadows").
    ``fresh``: new copies only, none kept from an earlier run (whose rows of the frozen candle are already
    recorded). Each pair's shadow versions, newest first."""
    from mur.registry import CHAMPION, model_name
    from mur.registry.aliases import keep_shadows
    from mur.serving.champions import registry_client

    client = registry_client(settings)
    served = {}
    for pair in pairs:
        name = model_name(pair, settings.registry.registry_prefix)
        kept = keep_shadows(client, name, keep=0 if fresh else shadows)
        champion = client.get_model_version_by_alias(name, CHAMPION)
        for _ in range(shadows - len(kept)):
            new = copy_version(client, name, champion, champion.tags)
            kept = keep_shadows(client, name, keep=shadows, add=int(new.version))
        served[pair] = kept
    return served


def shadow_forecasts_recorded(settings: Any, pairs: list[str], versions: list[int] | None = None) -> int:
    """How many (pair, version) shadows (of ``versions`` only, when given) recorded a forecast in the
    benchmark's database."""
    from mur.db import Database

    sql = "SELECT count(DISTINCT (pair, model_version)) AS n FROM shadow_forecasts WHERE pair = ANY(%s)"
    with Database(settings, maxconn=1) as db, db.cursor() as cur:
        if versions is None:
            cur.execute(sql, (pairs,))
        else:
            cur.execute(sql + " AND model_version = ANY(%s)", (pairs, versions))
        return int(cur.fetchone()["n"])


def serve_pss_mb() -> tuple[float, int]:
    """Total PSS (MB) of the Serve processes on this machine, and how many there are."""
    import psutil

    from devstack.processes import memory_mb

    serve = ("ServeReplica:", "ServeController", "ProxyActor", "haproxy")
    pids: list[int] = []
    for proc in psutil.process_iter(["cmdline", "name"]):
        text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["name"] or "")
        if any(k in text for k in serve):
            pids.append(proc.pid)
    return memory_mb(pids) or 0.0, len(pids)


def readyz(url: str) -> dict[str, Any]:
    import httpx

    return httpx.get(f"{url}/readyz", timeout=120).json()


def deploy_pairs(
    settings: Any, pairs: list[str], timeout_s: float = 900, *, loaded: bool = True, **app: Any
) -> tuple[float, str]:
    """Deploy the app for ``pairs`` (``app``: its other arguments); with ``loaded``, wait until every pair
    serves its champion. Returns the seconds taken and the API's URL (Serve keeps the HTTP port it started
    with)."""
    from serve_app.args import AppArgs, settings_overrides
    from serve_app.deploy import deploy, serve_details

    began = time.monotonic()
    args = AppArgs(pairs=pairs, settings=settings_overrides(settings), **app)
    deploy(settings, args, timeout_s=timeout_s, force=True)
    port = int(serve_details(settings).get("http_options", {}).get("port") or settings.serving.serve_port)
    url = f"http://127.0.0.1:{port}"
    if loaded:
        wait_until(  # an exception: the API replica may still be starting
            lambda: sum(1 for p in readyz(url).get("pairs", {}).values() if p.get("loaded")) == len(pairs),
            what="every pair loaded",
            timeout_s=timeout_s - (time.monotonic() - began),
            interval_s=2.0,
            retry_on=(Exception,),
        )
    return time.monotonic() - began, url


async def random_load(
    url: str,
    token: str,
    pairs: list[str],
    concurrency: int,
    requests: int,
    bodies: dict[str, Any] | None = None,
) -> Any:
    """``requests`` GETs over random pairs at ``concurrency`` (POSTs of each pair's ``bodies`` when given),
    through benchmarks/serve.py's load generator; its ``Result``."""
    rng = random.Random(7)

    def call(session: Any) -> Any:
        pair = rng.choice(pairs)
        if bodies is None:
            return session.get(f"{url}/v1/forecast/{pair}")
        return session.post(f"{url}/v1/forecast/{pair}", json=bodies[pair])

    return await bench_serve.load("random", url, token, concurrency, requests, call)


def cold_load_ms(settings: Any, version: int) -> float:
    """A status call for ``syn002_usdt@version`` (held by no replica) through the Forecaster's handle."""
    from ray import serve

    from serve_app.deploy import connect_ray

    connect_ray(settings)
    handle = serve.get_deployment_handle("forecaster", settings.serving.serve_app_name)
    began = time.perf_counter()
    status = (
        handle.options(multiplexed_model_id=f"syn002_usdt@{version}").status.remote().result(timeout_s=120)
    )
    took = (time.perf_counter() - began) * 1000
    if not status.get("loaded"):
        raise RuntimeError(f"cold load failed: {status.get('load_error')}")
    return took


def posted_candles(settings: Any, url: str, token: str, pairs: list[str]) -> dict[str, Any]:
    """Each pair's latest closed candles as a ``POST /v1/forecast/{pair}`` body (the model's window length)."""
    import httpx

    from mur.serving.market_cache import MarketCache
    from mur.serving.payload import candles_to_payload

    headers = {"Authorization": f"Bearer {token}"}
    models = httpx.get(f"{url}/v1/models", headers=headers, timeout=60).json()["models"]
    seq_len = {m["pair"]: int(m["seq_len"]) for m in models}
    cache = MarketCache(settings, pairs)
    return {
        pair: {"candles": candles_to_payload(cache.fetch(pair).candles.iloc[-seq_len[pair] :])}
        for pair in pairs
    }


def measure(settings: Any, token: str, pairs: list[str], opts: Any, cold_version: int) -> dict[str, Any]:
    seconds, url = deploy_pairs(settings, pairs)
    for pair in pairs:  # every pair answered once: its candles are cached, its model warm
        asyncio.run(random_load(url, token, [pair], 1, 1))
    if opts.shadows:  # and its shadows loaded: each recorded the candle's forecast
        wait_until(
            lambda: shadow_forecasts_recorded(settings, pairs) >= len(pairs) * opts.shadows,
            timeout_s=300,
            what=f"{opts.shadows} shadow forecast(s) of each of {len(pairs)} pairs",
        )
    # settle before the memory figure (the smoke's only has to be a number)
    time.sleep(1.0 if opts.smoke else 5.0)
    pss, processes = serve_pss_mb()
    # before the load: a replica the autoscaler adds under load preloads every champion first, and a cold
    # load would queue behind those (docs/scale-out.md)
    cold = cold_load_ms(settings, cold_version) if "syn002_usdt" in pairs else None
    gets = asyncio.run(random_load(url, token, pairs, opts.concurrency, opts.requests))
    # the Forecaster path alone: POSTed candles are never shared (no single-flight, no answer cache)
    bodies = posted_candles(settings, url, token, pairs)
    posts = asyncio.run(random_load(url, token, pairs, opts.concurrency, opts.requests, bodies))
    row = {
        "pairs": len(pairs),
        "deploy_to_all_loaded_s": round(seconds, 1),
        "serve_pss_mb": round(pss, 1),
        "serve_processes": processes,
        **{k: round(v, 1) for k, v in gets.figures().items()},
        "errors": gets.errors,
        **{k: round(v, 1) for k, v in posts.figures("post_").items()},
        "post_errors": posts.errors,
        "cold_load_ms": round(cold, 1) if cold is not None else None,
    }
    print(
        f"N={len(pairs):4d}  serve PSS {pss:7.0f} MB ({processes} processes)  GET p50 {row['p50_ms']:6.1f} ms  "
        f"p99 {row['p99_ms']:6.1f} ms  {row['rps']:6.1f} req/s  errors {gets.errors}  POST p50 "
        f"{row['post_p50_ms']:6.1f} ms  p99 {row['post_p99_ms']:6.1f} ms  errors {posts.errors}  cold load "
        f"{row['cold_load_ms']} ms  (all loaded {seconds:.0f}s after deploy)",
        flush=True,
    )
    return row


def _run_batches(
    settings: Any, batches: list[list[str]], end: Any, kind: str
) -> tuple[float, dict[str, Any], list[str]]:
    """Submit one batch Ray job per slot at once (``python -m ray_jobs.train_pair --pairs …``, the DAG's
    ``train_batch``), follow them to the end; wall time, every pair's result and the jobs' log lines."""
    from concurrent.futures import ThreadPoolExecutor
    from functools import partial

    from mur.orchestration.job_submission import submit_batch

    lines: list[str] = []
    job = partial(
        submit_batch, settings, end=end, kind=kind, no_reuse=True, stream_logs=True, log=lines.append
    )
    began = time.perf_counter()
    with ThreadPoolExecutor(len(batches)) as pool:
        results = {pair: r for batch in pool.map(job, batches) for pair, r in batch.items()}
    wall = time.perf_counter() - began
    failed = {p: r.error for p, r in results.items() if not r.ok}
    if failed:
        raise SystemExit(f"training failed: {failed}")
    return wall, results, lines


def training_cycle(opts: Any, most: int) -> dict[str, Any]:
    """The hourly cycle measured on the real path for the first ``--train-sample`` of the ``most`` synthetic
    pairs: batch Ray jobs (one per slot, ``--slots`` at once) through the Job API, Ray Train, export,
    evaluation, MLflow registration and the gate, under a private registry prefix (``--prefix`` + ``train-``).

    Three rounds on the same pairs: (1) full trainings (the first models: champions), (2) the next market
    hour's scheduled run, warm-started from those champions, (3) the hour after with one pair per job. (2)
    and (3) separate a job's fixed cost F (job start-up, imports, the Ray Train worker group) from the
    marginal cost of a pair; the cycle for 100 pairs is ``ceil(100 / slots / batch size)`` jobs' F per slot
    plus ``100 / slots`` pairs at the marginal cost, the full training amortized over
    ``full_retrain_hours``. The same figures give one job per pair (the DAG before batching) for comparison."""
    from datetime import timedelta

    from mur.data import get_market_data, synthetic_pairs
    from mur.settings import Settings

    settings = Settings(synthetic_pairs=most, market_data="bundled", registry_prefix=opts.prefix + "train-")
    pairs = synthetic_pairs(most)[: opts.train_sample]
    slots = opts.slots
    per_job = max(len(pairs) // slots, 1)
    batches = [pairs[i * per_job : (i + 1) * per_job] for i in range(slots)]
    end = get_market_data(settings).data_range(pairs[0])[1] - timedelta(days=30)
    full_wall, _, _ = _run_batches(settings, batches, end, "manual")
    print(f"[train] full: {slots} job(s) x {per_job} pair(s) in {full_wall:.1f} s", flush=True)
    warm_wall, _, lines = _run_batches(settings, batches, end + timedelta(hours=1), "scheduled")
    warm = sum("warm training" in line for line in lines)
    print(f"[train] warm: {slots} job(s) x {per_job} pair(s) in {warm_wall:.1f} s ({warm} warm)", flush=True)
    small_wall, _, _ = _run_batches(settings, [b[:1] for b in batches], end + timedelta(hours=2), "scheduled")
    print(f"[train] warm, one pair per job: {small_wall:.1f} s", flush=True)
    marginal_warm = (warm_wall - small_wall) / max(per_job - 1, 1)
    fixed = max(small_wall - marginal_warm, 0.0)
    marginal_full = (full_wall - fixed) / per_job
    every = settings.training.full_retrain_hours
    marginal = (marginal_full + (every - 1) * marginal_warm) / every
    per_slot = 100 / slots
    jobs_per_slot = math.ceil(per_slot / settings.airflow.train_batch_size)
    return {
        "pairs": len(pairs),
        "slots": slots,
        "pairs_per_job": per_job,
        "full_wall_s": round(full_wall, 1),
        "warm_wall_s": round(warm_wall, 1),
        "warm_starts": warm,
        "one_pair_jobs_wall_s": round(small_wall, 1),
        "job_fixed_s": round(fixed, 1),
        "per_pair_full_s": round(marginal_full, 1),
        "per_pair_warm_s": round(marginal_warm, 1),
        "full_retrain_hours": every,
        "per_pair_s": round(marginal, 1),
        "train_batch_size": settings.airflow.train_batch_size,
        "cycle_100_one_job_per_pair_s": round(per_slot * (fixed + marginal), 0),
        "cycle_100_s": round(jobs_per_slot * fixed + per_slot * marginal, 0),
    }


def training_line(cycle: dict[str, Any]) -> str:
    return (
        f"training: batch jobs of {cycle['pairs_per_job']} pairs on {cycle['slots']} slots: fixed cost per job "
        f"{cycle['job_fixed_s']} s; per pair: full {cycle['per_pair_full_s']} s, warm start "
        f"{cycle['per_pair_warm_s']} s; one full run every {cycle['full_retrain_hours']} h: "
        f"{cycle['per_pair_s']} s per pair-hour; one job per pair instead: "
        f"{cycle['cycle_100_one_job_per_pair_s']} s per 100 pairs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=1500, help="per N")
    parser.add_argument(
        "--train-sample", type=int, default=8, help="pairs trained for the hourly cycle (0: skip)"
    )
    parser.add_argument("--slots", type=int, default=2, help="trainings at once (trainer slots)")
    parser.add_argument("--shadows", type=int, default=0, help="versions per pair served in shadow")
    parser.add_argument("--prefix", default="mur-benchp-")
    parser.add_argument("--database", default="mur_bench")
    parser.add_argument("--keep", action="store_true", help="leave the Serve app deployed")
    parser.add_argument("--train-only", action="store_true", help="only the hourly-cycle measurement")
    parser.add_argument(
        "--start-services",
        action="store_true",
        help="start S3, MLflow and Ray if down (stopped again at the end)",
    )
    parser.add_argument("--json", type=Path, help="default: benchmarks/results/pairs.json (smoke: none)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a 2-pair baseline and 3 pairs, a 4-unit model, 20 requests at 2 concurrent, no training "
        "cycle, no JSON unless --json: does it still measure? (CI)",
    )
    opts = parser.parse_args()
    opts.baseline = BASELINE_PAIRS
    if opts.smoke:
        opts.pairs, opts.baseline, opts.concurrency, opts.requests = [3], 2, 2, 20
        opts.shadows = max(opts.shadows, 1)  # the shadow path on the real Serve app, in CI
        opts.train_sample = 0
    elif opts.json is None:
        opts.json = RESULTS / "pairs.json"

    from devstack import supervisor
    from devstack.config import use_stack_ray
    from mur.settings import Settings

    use_stack_ray()  # the stack's Ray token (deployments go through Ray's dashboard API)
    most = max([*opts.pairs, opts.baseline])
    started: list[str] = []
    if opts.start_services:
        results = supervisor.up(Settings(), list(supervisor.CORE_SERVICES), progress=print)
        started = [r.name for r in results if r.action == "started"]
    try:
        if opts.train_only:
            cycle = training_cycle(opts, most)
            print(json.dumps(cycle))
            if opts.json is not None:  # the Serve rows kept
                saved = json.loads(opts.json.read_text()) if opts.json.exists() else {}
                write_json(opts.json, {**saved, "training": cycle}, end="\n")
            print(training_line(cycle))
            print(f"hourly cycle for 100 pairs: {cycle['cycle_100_s']} s")
        else:
            run(opts, most)
    finally:
        if started:
            supervisor.down(Settings(), started)


def run(opts: Any, most: int) -> None:
    """Set up the ``most`` pairs (the largest N), measure each N, train a sample, print and write the results."""
    from mur.data import synthetic_pairs
    from mur.settings import Settings
    from serve_app.deploy import undeploy

    settings = Settings().replace(
        registry_prefix=opts.prefix,
        pg_database=opts.database,
        synthetic_pairs=most,
        market_data="bundled",
        registry_poll_s=600.0,  # one poll reads every pair's champion: not during the measurements
    )
    pairs = synthetic_pairs(most)
    began = time.monotonic()
    base_version = bench_serve.ensure_champion(settings, pairs[0], tiny=opts.smoke)
    versions = register_pairs(settings, pairs, pairs[0], base_version)
    set_shadows(settings, pairs, opts.shadows)
    print(
        f"[setup] {len(versions)} synthetic pairs registered in {time.monotonic() - began:.0f}s", flush=True
    )
    token = bench_serve.make_token(settings)
    rows = []
    try:
        for n in sorted({opts.baseline, *opts.pairs}):
            rows.append(measure(settings, token, pairs[:n], opts, versions["syn002_usdt"] - 1))
    except Exception:  # shown before the teardown: stopping Ray afterwards may end this driver abruptly
        traceback.print_exc()
        raise
    finally:
        if not opts.keep:
            try:
                undeploy(settings)
            except Exception as exc:  # report, keep the figures
                print(f"[teardown] {exc}", flush=True)
    problems = [
        f"N={r['pairs']}: {r['errors']} GET and {r['post_errors']} POST request(s) failed"
        for r in rows
        if r["errors"] or r["post_errors"]
    ] + [
        f"N={r['pairs']}: {k} is {r[k]}"
        for r in rows
        for k in ("p50_ms", "p99_ms", "post_p50_ms", "post_p99_ms", "rps", "serve_pss_mb")
        if not math.isfinite(r[k]) or r[k] <= 0
    ]
    if problems:  # failed requests or missing figures: no measurement, nothing written
        raise SystemExit("FAIL: " + "; ".join(problems))
    base = next(r for r in rows if r["pairs"] == opts.baseline)
    for row in rows:  # every figure checked above: finite, above 0
        added = row["pairs"] - opts.baseline
        row["mb_per_added_pair"] = (
            round((row["serve_pss_mb"] - base["serve_pss_mb"]) / added, 2) if added else None
        )
        row["p50_vs_5_pairs"] = round(row["p50_ms"] / base["p50_ms"], 2)
        row["post_p50_vs_5_pairs"] = round(row["post_p50_ms"] / base["post_p50_ms"], 2)
    saved = json.loads(opts.json.read_text()) if opts.json is not None and opts.json.exists() else {}
    if opts.train_sample:
        cycle = training_cycle(opts, most)
    else:  # --train-sample 0: the last measured cycle is kept (and said to be kept)
        cycle = saved.get("training")
        if cycle:
            print("[training] not measured this run: the figures of the last run are kept", flush=True)

    largest = rows[-1]
    result = {
        "machine": platform.node(),
        "concurrency": opts.concurrency,
        "requests_per_n": opts.requests,
        "answer_ttl_s": settings.serving.serve_answer_ttl_s,
        "shadows_per_pair": opts.shadows,
        "rows": rows,
        "training": cycle,
        "targets": {
            "mb_per_added_pair": TARGET_MB_PER_PAIR,
            "p50_vs_5_pairs": TARGET_P50_RATIO,
            "cycle_100_s": TARGET_CYCLE_S,
        },
    }
    if opts.json is not None:
        write_json(opts.json, result, end="\n")
    print()
    for row in rows:
        print(
            f"N={row['pairs']:4d}: {row['serve_pss_mb']:.0f} MB, {row['mb_per_added_pair']} MB/added pair, "
            f"GET p50 {row['p50_ms']} ms ({row['p50_vs_5_pairs']}x the 5-pair p50), p99 {row['p99_ms']} ms; "
            f"POST p50 {row['post_p50_ms']} ms ({row['post_p50_vs_5_pairs']}x), p99 {row['post_p99_ms']} ms; "
            f"cold load {row['cold_load_ms']} ms"
        )
    if cycle:
        print(training_line(cycle))
    print(f"pairs served: {largest['pairs']}")
    print(f"shadows per pair: {opts.shadows}")
    print(f"serve memory per added pair: {largest['mb_per_added_pair']} MB")
    print(f"hourly cycle for 100 pairs: {cycle['cycle_100_s'] if cycle else 'not measured'} s")


if __name__ == "__main__":
    main()
