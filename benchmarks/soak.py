"""Soak: steady load on the running stack for an hour; do memory and disk stay flat?

    .venv/bin/python benchmarks/soak.py                       # 60 min, 10 req/s, a sample every 30 s
    .venv/bin/python benchmarks/soak.py --minutes 60 --rps 10 --every 30 --out benchmarks/results/soak.json
    .venv/bin/python benchmarks/soak.py --smoke               # 20 s, a sample every 5 s (the services tier)

Against the stack of the environment's settings (``mur up``; a test stack through its ``MUR_*``), Serve
answering: a fresh user with a large quota (in ``--database``, default the settings') sends ``--rps`` GETs a
second of ``/v1/forecast/PAIR`` (open loop: one every 1/rps s, however long the answers take). Every
``--every`` s a sample: each running service's memory as ``mur status`` reads it (PSS, shared pages split;
the RSS of its processes summed beside it), the disk the stack's files take (the logs, each service's data
dir: S3's objects, Redis's tables, the Ray temp dir; Airflow's home, Ray Train's results, the whole runtime
dir), the market time and the requests sent and failed so far. At the end, per service: PSS at the start and
the end, its maximum and its trend (least-squares slope in MB per hour with its standard error,
``scipy.stats.linregress``); per disk item: start and end. Writes everything to ``--out`` (default
``benchmarks/results/soak.json``; ``soak-smoke.json`` with ``--smoke``). Exits 1 when no request was answered.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.serve import failure, make_token  # noqa: E402


class Load(threading.Thread):
    """``rps`` GETs of ``url`` a second until stopped, each on its own (open loop); counts what failed."""

    def __init__(self, url: str, token: str, rps: float) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.rps = url, token, rps
        self.sent = self.failed = 0
        self.first_failure = ""
        self.stopping = threading.Event()

    def run(self) -> None:
        asyncio.run(self._send())

    async def _send(self) -> None:
        import aiohttp

        headers, timeout = {"Authorization": f"Bearer {self.token}"}, aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
            pending: set[asyncio.Task[None]] = set()
            began = time.monotonic()
            while not self.stopping.is_set():
                task = asyncio.create_task(self._one(session))
                pending.add(task)
                task.add_done_callback(pending.discard)
                self.sent += 1
                await asyncio.sleep(max(0.0, began + self.sent / self.rps - time.monotonic()))
            await asyncio.gather(*pending)

    async def _one(self, session: Any) -> None:
        why = await failure(session.get(self.url))
        if why:
            self.failed += 1
            self.first_failure = self.first_failure or why


def disk_items(settings: Any, rows: list[Any]) -> dict[str, float]:
    """MB on disk: each service's data dir (``mur status``'s disk), the logs and the other growing dirs."""
    from devstack.airflow import airflow_home
    from devstack.supervisor import _disk_mb

    runtime = Path(settings.general.runtime_dir)
    items = {f"{r.name} data": r.disk_mb for r in rows if r.disk_mb is not None}
    dirs = {"logs": runtime / "logs", "airflow home": airflow_home(settings)}
    dirs |= {"ray-results": runtime / "ray-results", "runtime dir (all)": runtime}
    return items | {name: _disk_mb(path) for name, path in dirs.items()}


def session_memory(sid: int) -> dict[str, float]:
    """PSS (shared pages split) and RSS (counted in each) summed over the processes of session ``sid``, read
    together per process (a Ray worker that ends between two passes cannot make RSS read below PSS)."""
    import psutil

    from devstack.processes import session_members

    pss = rss = 0
    for pid in session_members(sid):
        try:
            info = psutil.Process(pid).memory_full_info()
        except psutil.Error:
            continue
        pss, rss = pss + info.pss, rss + info.rss
    return {"pss_mb": round(pss / 2**20, 1), "rss_mb": round(rss / 2**20, 1)}


def sample(settings: Any, clock: Any, load: Load, began: float) -> dict[str, Any]:
    from devstack import supervisor

    rows = supervisor.status(settings)
    memory = {
        r.name: {**session_memory(r.pid), "processes": r.processes}
        for r in rows
        if r.pid is not None and r.memory_mb is not None
    }
    return {
        "t_s": round(time.monotonic() - began, 1),
        "wall": datetime.now(UTC).isoformat(timespec="seconds"),
        "market": clock.now().isoformat(),
        "sent": load.sent,
        "failed": load.failed,
        "memory": memory,
        "disk_mb": {k: round(v, 1) for k, v in disk_items(settings, rows).items()},
    }


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Per service: PSS start, end, max and slope (MB/hour ± standard error); per disk item: start, end."""
    import numpy as np
    from scipy.stats import linregress

    first, last, nan = samples[0], samples[-1], float("nan")
    memory = {}
    for name in first["memory"]:
        points = [(s["t_s"] / 3600, s["memory"][name]["pss_mb"]) for s in samples if name in s["memory"]]
        hours, pss = np.array(points).T
        fit = linregress(hours, pss) if len(points) > 2 else None
        memory[name] = {
            "start": pss[0],
            "end": pss[-1],
            "max": pss.max(),
            "slope_mb_per_h": fit.slope if fit else nan,
            "slope_se": fit.stderr if fit else nan,
            "rss_start": first["memory"][name]["rss_mb"],
            "rss_end": last["memory"].get(name, {}).get("rss_mb", nan),
            "samples": len(points),
        }
    disk = {k: {"start": v, "end": last["disk_mb"].get(k, nan)} for k, v in first["disk_mb"].items()}
    return {"memory": memory, "disk_mb": disk}


def report(summary: dict[str, Any], samples: list[dict[str, Any]], load: Load) -> None:
    head = f"{'PSS start':>10}{'end':>9}{'max':>9}{'slope MB/h ± se':>20}{'RSS start':>11}{'end':>9}"
    print(f"\n{'memory (MB)':<20}{head}")
    for name, m in summary["memory"].items():
        slope = f"{m['slope_mb_per_h']:+.1f} ± {m['slope_se']:.1f}"
        figures = f"{m['start']:>10.1f}{m['end']:>9.1f}{m['max']:>9.1f}{slope:>20}"
        print(f"{name:<20}{figures}{m['rss_start']:>11.1f}{m['rss_end']:>9.1f}")
    print(f"\n{'disk (MB)':<20}{'start':>10}{'end':>9}")
    for name, d in summary["disk_mb"].items():
        print(f"{name:<20}{d['start']:>10.1f}{d['end']:>9.1f}")
    first, last = samples[0], samples[-1]
    print(f"\nmarket time: {first['market']} -> {last['market']}; wall {first['wall']} -> {last['wall']}")
    failure = f" (first: {load.first_failure})" if load.failed else ""
    print(f"requests: sent {load.sent}, failed {load.failed}{failure}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--rps", type=float, default=10.0, help="requests a second (default 10)")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples (default 30)")
    parser.add_argument("--pair", default="btc_usdt")
    parser.add_argument("--database", help="PostgreSQL database of the token (default: the settings')")
    parser.add_argument("--smoke", action="store_true", help="20 s, a sample every 5 s: does it measure?")
    parser.add_argument("--out", type=Path, help="results JSON (default benchmarks/results/soak.json)")
    opts = parser.parse_args()
    minutes, every = (20 / 60, 5.0) if opts.smoke else (opts.minutes, opts.every)

    from benchmarks.common import RESULTS, write_json
    from devstack.config import align_settings
    from mur.clock import market_clock
    from mur.settings import get_settings

    out = opts.out or RESULTS / ("soak-smoke.json" if opts.smoke else "soak.json")
    settings = align_settings(get_settings(), export=False)
    if opts.database:
        settings = settings.replace(pg_database=opts.database)
    clock = market_clock(settings)
    url = f"http://127.0.0.1:{settings.serving.serve_port}/v1/forecast/{opts.pair}"
    load = Load(url, make_token(settings), opts.rps)
    print(f"[soak] {minutes:g} min, {opts.rps:g} req/s on {url}, a sample every {every:g} s", flush=True)
    began = time.monotonic()
    load.start()
    samples = [sample(settings, clock, load, began)]
    while len(samples) <= minutes * 60 / every:  # by count: slow samples (a busy machine) lengthen the run
        time.sleep(max(0.0, began + len(samples) * every - time.monotonic()))
        samples.append(sample(settings, clock, load, began))
        print(f"[soak] {samples[-1]['t_s']:.0f} s: sent {load.sent}, failed {load.failed}", flush=True)
    load.stopping.set()
    load.join(timeout=15)
    summary = summarize(samples)
    report(summary, samples, load)
    params = {"minutes": minutes, "rps": opts.rps, "every_s": every, "url": url, "speed": clock.speed}
    requests = {"sent": load.sent, "failed": load.failed, "first_failure": load.first_failure}
    write_json(out, {"params": params, "requests": requests, **summary, "samples": samples}, indent=1)
    print(f"results: {out}")
    return 0 if load.sent > load.failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
