"""The benchmarks that need the stack run in their smoke mode (``--smoke``: a 4-unit model, a few requests)
and print finite figures: a benchmark that no longer measures (a reference server feeding the model the
wrong columns, every request failing, a ratio of ``nan``) fails the services tier.

Each run uses a private registry prefix, a fresh database and a free Serve HTTP port; it deploys the Serve
app on the shared Ray head (replacing any app there) and shuts Serve down at its end, like the Serve tests'
fixture. The benchmarks that need no service: ``tests/unit/test_benchmark_smoke.py``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mur.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"([-+]?(?:\d+\.?\d*|nan|inf))"

pytestmark = [pytest.mark.services, pytest.mark.serve, pytest.mark.timeout(600)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def bench_settings(services: Settings, pg_database_factory: Callable[..., Settings]) -> Iterator[Settings]:
    """The stack's settings with a private registry prefix, a fresh database and a free Serve port; the
    prefix's registered models and champion store are removed afterwards."""
    from mur import registry
    from mur.serving.champion_store import ChampionStore

    db = pg_database_factory()
    settings = services.replace(
        registry_prefix=f"mur-bsmoke{uuid.uuid4().hex[:6]}-",
        pg_database=db.db.pg_database,
        serve_port=_free_port(),
    )
    yield settings
    shutil.rmtree(ChampionStore.for_settings(settings).directory, ignore_errors=True)
    client = registry.configure(services)
    for model in client.search_registered_models(f"name LIKE '{settings.registry.registry_prefix}%'"):
        with contextlib.suppress(Exception):
            client.delete_registered_model(model.name)


def run_smoke(script: str, settings: Settings, timeout_s: float = 540) -> str:
    """``benchmarks/<script> --smoke`` against the stack; its stdout (the test fails on exit != 0)."""
    private = ["--prefix", settings.registry.registry_prefix, "--database", settings.db.pg_database]
    command = [sys.executable, str(ROOT / "benchmarks" / script), "--smoke", *private]
    env = {**os.environ, "MUR_SERVE_PORT": str(settings.serving.serve_port)}
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    assert proc.returncode == 0, f"{script} --smoke exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def table(out: str, pattern: str, first_column: list[int]) -> list[tuple[str, ...]]:
    """The rows of ``out`` matching ``pattern`` (one per load level); their first column must be these."""
    rows = re.findall(pattern, out, re.MULTILINE)
    assert [int(r[0]) for r in rows] == first_column, out
    return rows


def finite(text: str) -> float:
    value = float(text)
    assert value == value and abs(value) != float("inf"), text
    return value


def test_serve_benchmark_smoke(bench_settings: Settings) -> None:
    """Serve and the reference answer every request; the ratio and both throughputs are numbers."""
    out = run_smoke("serve.py", bench_settings)
    level = rf"^\s+(\d+) \| +{NUMBER} +{NUMBER} +{NUMBER} \| +{NUMBER} +{NUMBER} +{NUMBER} \| +{NUMBER}$"
    for row in table(out, level, [1, 4]):  # concurrency | serve req/s p50 p99 | ref req/s p50 p99 | ratio
        assert all(finite(cell) > 0 for cell in row[1:]), row
    assert re.search(r"errors 0 ", out) and not re.search(r"errors [1-9]", out), out
    assert re.search(rf"^ratio at 4 concurrent: {NUMBER} \(target", out, re.MULTILINE), out


def test_pairs_benchmark_smoke(bench_settings: Settings) -> None:
    """Memory, latency and a cold load are measured for a few synthetic pairs; every request answered."""
    out = run_smoke("pairs.py", bench_settings)
    level = rf"^N=\s*(\d+): {NUMBER} MB, (\S+) MB/added pair, GET p50 {NUMBER} ms .* cold load (\S+) ms$"
    rows = table(out, level, [2, 3])
    for _n, mb, _slope, p50, cold in rows:  # syn002_usdt is served at every N: its older version cold-loads
        assert finite(mb) > 0 and finite(p50) > 0 and finite(cold) > 0, rows
    finite(rows[-1][2])  # the memory slope against the baseline pairs is a number
    assert re.search(r"^pairs served: 3$", out, re.MULTILINE), out
    assert re.search(r"^shadows per pair: 1$", out, re.MULTILINE), out  # each pair's shadow forecast recorded
