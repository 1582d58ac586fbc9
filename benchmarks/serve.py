"""Benchmark GET /v1/forecast/{pair}: the Ray Serve app vs a bare FastAPI + onnxruntime process.

Both servers do the same work per request (bearer-token lookup, one atomic quota statement, the latest
cached candles through the same ONNX model) and are measured side by side on loopback, at fixed
concurrencies, with the same client. The reference runs in one uvicorn process at the same CPU niceness
as Ray's worker processes (Ray starts its workers with ``nice 15``), so neither gets a scheduling edge.

    .venv/bin/python benchmarks/serve.py                      # btc_usdt, concurrency 1 16 64
    .venv/bin/python benchmarks/serve.py --concurrency 1 16 64 --requests 2000 --keep
    .venv/bin/python benchmarks/serve.py --smoke               # tiny sizes: does it still measure? (CI)
    .venv/bin/python benchmarks/serve.py --shadows 2 --json X  # with 2 versions served in shadow

Needs the stack (``mur up``: S3, MLflow, Ray) and PostgreSQL. It trains a small champion under a private
registry prefix (``mur-bench-``) if there is none, uses its own database (``mur_bench``) and user, deploys
the Serve app with those settings (this replaces a running Serve app) and removes it at the end unless
``--keep``. Prints both results, the ratio Serve/reference of throughput and the p99 latencies, and the Serve
processes' memory (PSS) before the load. ``--shadows K`` serves K fresh copies of the champion in shadow
(docs/promotion.md, "Shadows"; 0, the default, removes any): the load starts once each has recorded its
forecast of the candle (its ONNX session loaded), and a replica the autoscaler adds computes them on its
first request, under the load. The reference builds the model's input from the model's own metadata
(``mur.features``), as Serve does (:func:`reference_forecast`). A run in which any request failed or a figure
is not a finite number measured nothing: it says why on stderr and exits 1 (and writes no ``--json``).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.common import write_json  # noqa: E402
from mur.waiting import wait_until  # noqa: E402

TARGET_RATIO = 0.8
"""Serve/reference throughput aimed at from 16 concurrent requests (with the answer cache off)."""
TARGET_RATIO_SINGLE = 0.6
"""... and at one request at a time."""
TARGET_P99_MS = 50.0


@dataclass
class Result:
    """One load level against one server."""

    name: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    cpu_ms: dict[str, float] = field(default_factory=dict)
    """Server CPU milliseconds per request, by process."""

    @property
    def rps(self) -> float:
        return (self.requests - self.errors) / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        lat = sorted(self.latencies_ms)
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")

    def figures(self, prefix: str = "") -> dict[str, float]:
        """Throughput and the p50 and p99 latencies (nearest rank): ``<prefix>rps``, ``<prefix>p50_ms`` and
        ``<prefix>p99_ms``."""
        return {f"{prefix}rps": self.rps, f"{prefix}p50_ms": self.pct(0.5), f"{prefix}p99_ms": self.pct(0.99)}


# --- Load generator -----------------------------------------------------------------------------------------


async def failure(request: Any) -> str:
    """Why ``request`` (an aiohttp request context) failed: its HTTP status and the start of its body, or the
    client's exception; ``""`` when it answered 200."""
    import aiohttp

    try:
        async with request as response:
            body = await response.read()
            return "" if response.status == 200 else f"HTTP {response.status}: {body[:200]!r}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return repr(exc)


async def load(
    name: str, url: str, token: str, concurrency: int, requests: int, call: Callable[[Any], Any] | None = None
) -> Result:
    """Send ``requests`` GETs of ``url`` with ``concurrency`` workers on kept-alive connections (``call``: the
    request to send instead, made from the session)."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    first = ""
    remaining = requests
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker() -> None:
            nonlocal remaining, errors, first
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                why = await failure(session.get(url) if call is None else call(session))
                latencies.append((time.perf_counter() - started) * 1000)
                errors += bool(why)
                first = first or why

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - began
    if first:
        print(f"  {name}: {errors} failed request(s), first: {first}", flush=True)
    return Result(name, concurrency, requests, errors, seconds, latencies)


# --- Reference server: FastAPI + onnxruntime in one process, same per-request work as the Serve app ---------


def reference_forecast(model: Any, snap: Any) -> dict[str, Any]:
    """The forecast body for ``model`` from a market-cache snapshot, built like the Serve app's Forecaster:
    the window with the model's own input columns (ONNX metadata ``mur.features``, the contract of
    ``mur/model/export.py``), one onnxruntime call for the point and the quantiles, then
    :func:`~mur.model.inference.forecast_body` with the horizons' rows. No column list of its own: a model
    with other inputs than the reference's nine is fed what it declares."""
    from mur.model.inference import forecast_body

    window = snap.window(model.seq_len, model.features or None)
    points, quantiles = model.forecast(window[None])
    q = None if quantiles is None else quantiles[0]
    return forecast_body(
        model.pair,
        prediction=float(points[0]),
        last_close=snap.last_close,
        candle_time=snap.candle_time,
        model_version=model.version,
        horizons=model.horizon_rows(q, snap.candle_time),
    )


def reference_app(overrides: dict[str, Any], pair: str, version: int) -> Any:
    """The single-process reference design (no Ray): auth, quota, cached candles, one ORT call."""
    from concurrent.futures import ThreadPoolExecutor

    from fastapi import FastAPI, Header
    from fastapi.responses import JSONResponse

    from mur.db import Database
    from mur.errors import MurError, UnknownPairError
    from mur.pairs import normalize_pair
    from mur.registry.download import model_bytes
    from mur.serving.champions import registry_client
    from mur.serving.http import authenticate, charge, http_error, quota_headers
    from mur.serving.market_cache import MarketCache
    from mur.serving.model import LoadedModel
    from mur.settings import Settings

    settings = Settings(**overrides)
    registry_client(settings)
    model = LoadedModel.from_bytes(pair, version, model_bytes(settings, pair, version), {})
    cache = MarketCache(settings, [pair])
    cache.start(settings.serving.market_refresh_s)
    db = Database(settings, minconn=8, maxconn=8)  # as in the ingress: keep every pooled connection
    pool = ThreadPoolExecutor(8)
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/forecast/{name}")
    async def forecast(name: str, authorization: str | None = Header(default=None)):  # noqa: ANN202 (FastAPI must not read a response model here)
        loop = asyncio.get_running_loop()
        try:
            owner = await loop.run_in_executor(pool, authenticate, db, authorization)
            if normalize_pair(name) != model.pair:
                raise UnknownPairError(f"unknown pair {name!r}")
            body = reference_forecast(model, cache.snapshot(model.pair))  # before the charge, as Serve
            quota = await loop.run_in_executor(pool, charge, db, owner)
        except MurError as exc:
            status, body, headers = http_error(exc)
            return JSONResponse(body, status_code=status, headers=headers)
        return JSONResponse(body, headers=quota_headers(quota))

    return app


def run_reference_server(port: int, overrides: dict[str, Any], pair: str, version: int, nice: int) -> None:
    """Entry point of the reference process, at niceness ``nice`` (Ray's workers')."""
    import uvicorn

    os.nice(nice)
    uvicorn.run(
        reference_app(overrides, pair, version),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_cpu_seconds(reference_pid: int) -> dict[str, float]:
    """CPU seconds used so far by each server process: Serve's ingress (HAProxy or Ray's Python proxy) and
    replicas, and the reference."""
    import psutil

    out: dict[str, float] = {}
    for proc in psutil.process_iter(["cmdline", "name", "cpu_times"]):
        cmd, times = (proc.info["cmdline"] or [""])[0], proc.info["cpu_times"]
        if proc.pid == reference_pid:
            name = "reference"
        elif cmd.startswith(("ray::ProxyActor", "ray::ServeReplica", "ray::HAProxyManager")):
            name = cmd.removeprefix("ray::").split(".")[0]
        elif proc.info["name"] == "haproxy":  # Serve's HAProxy ingress (RAY_SERVE_ENABLE_HA_PROXY=1)
            name = "haproxy"
        else:
            continue
        if times is not None:
            out[name] = out.get(name, 0.0) + times.user + times.system
    return out


def ray_worker_niceness() -> int:
    """The niceness of a running Serve replica (Ray starts workers niced), else 15."""
    import psutil

    for proc in psutil.process_iter(["cmdline", "nice"]):
        cmd, nice = (proc.info["cmdline"] or [""])[0], proc.info["nice"]
        if cmd.startswith("ray::ServeReplica") and nice is not None:
            return int(nice)
    return 15


def wait_http(url: str, proc: multiprocessing.process.BaseProcess, timeout_s: float = 120.0) -> None:
    import httpx

    def answers() -> bool:
        if not proc.is_alive():
            raise SystemExit(f"the reference server exited with code {proc.exitcode}")
        return httpx.get(url, timeout=2).status_code == 200

    wait_until(
        answers, what=url, timeout_s=timeout_s, interval_s=0.5, retry_on=(httpx.HTTPError,), error=SystemExit
    )


# --- Setup: champion, user/token, Serve deployment ----------------------------------------------------------


def ensure_champion(settings: Any, pair: str, *, tiny: bool = False) -> int:
    """The champion version under the benchmark's registry prefix (training a small one if needed;
    ``tiny``: a 4-unit model on 30 days, for the smoke run)."""
    from mur.serving.champions import champions, registry_client

    client = registry_client(settings)
    found = champions(
        client,
        prefix=settings.registry.registry_prefix,
        experiment=settings.registry.mlflow_experiment,
        pairs=[pair],
    )
    if pair in found:
        return int(found[pair]["version"])
    from mur.registry import CHAMPION, model_name
    from mur.training.driver import train_and_register
    from mur.training.loop import LocalFit

    print(
        f"[setup] training a champion for {settings.registry.registry_prefix}{pair} (one epoch) …", flush=True
    )
    extra: dict[str, Any] = {"hidden_size": 4} if tiny else {}
    result = train_and_register(
        settings.replace(train_days=30 if tiny else 60),
        pair,
        fit=LocalFit(),
        epochs=1,
        **extra,
    )
    assert result.version is not None
    version = result.version
    client.set_registered_model_alias(
        model_name(pair, settings.registry.registry_prefix), CHAMPION, str(version)
    )
    return version


def make_token(settings: Any) -> str:
    """A fresh user with a quota large enough for the benchmark, and its token."""
    from mur.db import Database, create_token, create_user, migrate

    migrate(settings)
    with Database(settings, maxconn=1) as db:
        user = create_user(
            db,
            username=f"bench-{uuid.uuid4().hex[:8]}",
            password=f"Bench-{uuid.uuid4().hex}",
            monthly_quota=2_000_000_000,
        )
        token, _ = create_token(db, user_id=user.id, name="benchmark")
    return token


def check(results: list[Result], summary: list[dict[str, Any]]) -> list[str]:
    """What makes a run no measurement: a failed request, a figure that is not a finite number."""
    problems = [
        f"{r.name} at {r.concurrency} concurrent: {r.errors} of {r.requests} request(s) failed"
        for r in results
        if r.errors
    ]
    for row in summary:
        bad = [
            k
            for k in ("serve_rps", "reference_rps", "serve_p99_ms", "reference_p99_ms", "ratio")
            if not math.isfinite(row[k]) or (k.endswith("rps") and row[k] <= 0)
        ]
        if bad:
            problems.append(f"at {row['concurrency']} concurrent: no finite figure for {', '.join(bad)}")
    return problems


def target_ratio(concurrency: int) -> float:
    """The Serve/reference throughput ratio aimed at: :data:`TARGET_RATIO` from 16 concurrent requests,
    :data:`TARGET_RATIO_SINGLE` below (one request at a time pays Serve's extra hops in full)."""
    return TARGET_RATIO if concurrency >= 16 else TARGET_RATIO_SINGLE


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pair", default="btc_usdt")
    parser.add_argument("--concurrency", type=int, nargs="+", default=None, help="default: 1 16 64")
    parser.add_argument("--requests", type=int, default=0, help="per level (default: max(300, 40*conc))")
    parser.add_argument("--prefix", default="mur-bench-", help="registry prefix of the benchmark's model")
    parser.add_argument("--database", default="mur_bench", help="PostgreSQL database for the bench user")
    parser.add_argument("--keep", action="store_true", help="leave the Serve app deployed")
    parser.add_argument("--shadows", type=int, default=0, help="versions served in shadow (default 0)")
    smoke_help = "tiny sizes (a 4-unit champion, concurrency 1 and 4, 24 requests each): does it measure?"
    parser.add_argument("--smoke", action="store_true", help=smoke_help)
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    opts = parser.parse_args()
    from devstack.config import use_stack_ray

    use_stack_ray()  # the stack's Ray token (the deployment goes through Ray's dashboard API)
    levels = opts.concurrency or ([1, 4] if opts.smoke else [1, 16, 64])
    warm_up = (2, 10) if opts.smoke else (8, 200)

    from benchmarks.pairs import deploy_pairs, serve_pss_mb, set_shadows, shadow_forecasts_recorded
    from mur.settings import Settings
    from serve_app.args import settings_overrides
    from serve_app.deploy import undeploy

    settings = Settings().replace(  # replace(), not model_copy(): the grouped fields must change too
        registry_prefix=opts.prefix,
        pg_database=opts.database,
        serve_answer_ttl_s=0.0,  # like for like with the reference, which runs its model per request
    )
    token = make_token(settings)  # migrates the database first: the gate records its move there
    version = ensure_champion(settings, opts.pair, tiny=opts.smoke)
    shadows = set_shadows(settings, [opts.pair], opts.shadows, fresh=True)[opts.pair]

    print(f"[setup] deploying the Serve app ({opts.prefix}{opts.pair} v{version}) …", flush=True)
    seconds, serve_url = deploy_pairs(settings, [opts.pair], 600, loaded=False)
    print(f"[setup] Serve app running after {seconds:.0f}s at {serve_url}", flush=True)

    nice = ray_worker_niceness()  # the reference's too: the same priority as Ray's workers
    ref_port = free_port()
    reference = (ref_port, settings_overrides(settings), opts.pair, version, nice)
    ref = multiprocessing.get_context("spawn").Process(target=run_reference_server, args=reference)
    ref.start()
    load_before = os.getloadavg()[0]
    results: dict[tuple[str, int], Result] = {}
    try:
        wait_http(f"http://127.0.0.1:{ref_port}/healthz", ref)
        urls = {
            "serve": f"{serve_url}/v1/forecast/{opts.pair}",
            "reference": f"http://127.0.0.1:{ref_port}/v1/forecast/{opts.pair}",
        }
        for name, url in urls.items():  # warm-up: connections, caches, autoscaler baseline
            warm = asyncio.run(load(name, url, token, *warm_up))
            if warm.errors == warm.requests:  # nothing answers: no point measuring
                raise SystemExit(f"FAIL: every warm-up request to the {name} server failed (see above)")
        if shadows:  # each shadow's session loaded: it recorded the candle's forecast
            wait_until(
                lambda: shadow_forecasts_recorded(settings, [opts.pair], shadows) == len(shadows),
                what=f"the shadow forecasts of versions {shadows}",
                timeout_s=300,
                error=SystemExit,
            )
        pss_mb, processes = serve_pss_mb()
        for conc in levels:
            n = opts.requests or (24 if opts.smoke else max(300, 40 * conc))
            for name, url in urls.items():
                before = server_cpu_seconds(ref.pid)
                result = asyncio.run(load(name, url, token, conc, n))
                after = server_cpu_seconds(ref.pid)
                used = {
                    k: (after[k] - before.get(k, 0.0)) * 1000 / n
                    for k in after
                    if (k == "reference") == (name == "reference") and after[k] > before.get(k, 0.0)
                }
                result.cpu_ms = used
                results[name, conc] = result
                cpu = ", ".join(f"{k} {v:.1f}" for k, v in sorted(used.items(), key=lambda kv: -kv[1]))
                print(
                    f"  {name:<9} c={conc:<3} {result.rps:8.1f} req/s  p50 {result.pct(0.5):6.1f} ms  "
                    f"p99 {result.pct(0.99):6.1f} ms  errors {result.errors}  CPU ms/request: {cpu}",
                    flush=True,
                )
    finally:
        ref.terminate()
        ref.join(timeout=15)
        if not opts.keep:
            try:
                undeploy(settings, timeout_s=180)
            except Exception as exc:  # a slow shutdown (a busy machine) is no failed measurement
                print(f"[teardown] undeploying the Serve app: {exc}", file=sys.stderr, flush=True)
    load_after = os.getloadavg()[0]

    print(f"\nGET /v1/forecast/{opts.pair} on loopback (niceness {nice} for both servers)")
    print(
        f"{'conc':>5} | {'serve req/s':>11} {'p50':>7} {'p99':>7} | {'ref req/s':>10} {'p50':>7} {'p99':>7} | ratio"
    )
    summary = []
    for conc in levels:
        s, r = results["serve", conc], results["reference", conc]
        ratio = s.rps / r.rps if r.rps else float("nan")
        summary.append(
            {
                "concurrency": conc,
                **s.figures("serve_"),
                **r.figures("reference_"),
                "serve_cpu_ms_per_request": s.cpu_ms,
                "reference_cpu_ms_per_request": r.cpu_ms,
                "ratio": ratio,
                "target_ratio": target_ratio(conc),
                "errors": s.errors + r.errors,
            }
        )
        print(
            f"{conc:>5} | {s.rps:11.1f} {s.pct(0.5):7.1f} {s.pct(0.99):7.1f} | "
            f"{r.rps:10.1f} {r.pct(0.5):7.1f} {r.pct(0.99):7.1f} | {ratio:5.2f}"
        )
    problems = check(list(results.values()), summary)
    if problems:  # a run with failed requests or nan figures measured nothing: say so, write nothing
        for problem in problems:
            print(f"FAIL: {problem}", file=sys.stderr, flush=True)
        return 1
    print()
    for row in summary:
        met = "met" if row["ratio"] >= row["target_ratio"] else "NOT met"
        print(
            f"ratio at {row['concurrency']} concurrent: {row['ratio']:.2f} (target >= {row['target_ratio']}): {met}"
        )
    top = summary[-1]
    print(
        f"Serve p99 at {top['concurrency']} concurrent: {top['serve_p99_ms']:.1f} ms (target < {TARGET_P99_MS:g} ms)"
    )
    serve_cpu, ref_cpu = top["serve_cpu_ms_per_request"], top["reference_cpu_ms_per_request"]
    parts = ", ".join(f"{k} {v:.1f}" for k, v in sorted(serve_cpu.items(), key=lambda kv: -kv[1]))
    print(
        f"server CPU per request at {top['concurrency']} concurrent: Serve {sum(serve_cpu.values()):.1f} ms "
        f"({parts}) vs reference {sum(ref_cpu.values()):.1f} ms"
    )
    ingress = (
        "HAProxy -> API replica (direct ingress)" if "haproxy" in serve_cpu else "Ray's Python HTTP proxy"
    )
    print(f"Serve ingress: {ingress}")
    print(f"Serve PSS before the load: {pss_mb:.0f} MB in {processes} processes")
    print(f"shadows per pair: {len(shadows)}")
    floor_ms = 1000.0 * top["concurrency"] / top["reference_rps"]
    print(
        f"note: with {top['concurrency']} requests always in flight, mean latency = concurrency / throughput; "
        f"even the reference's {top['reference_rps']:.0f} req/s means {floor_ms:.0f} ms on this machine "
        f"({os.cpu_count()} CPUs, client included); load average {load_before:.2f} before, "
        f"{load_after:.2f} after"
    )
    if opts.json:
        out = {
            "cpus": os.cpu_count(),
            "load_average_1m": {"before": round(load_before, 2), "after": round(load_after, 2)},
            "answer_ttl_s": settings.serving.serve_answer_ttl_s,
            "ingress": ingress,
            "shadows_per_pair": len(shadows),
            "serve_pss_mb": round(pss_mb, 1),
            "serve_processes": processes,
            "levels": summary,
        }
        write_json(opts.json, out, end="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
