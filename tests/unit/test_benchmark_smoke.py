"""Every benchmark that needs no service runs in its smoke mode (``--smoke``: tiny sizes, seconds) and prints
finite figures: a benchmark that no longer runs, or measures nothing (``nan``), fails the fast tier.

The ones that need the stack (Serve: ``benchmarks/serve.py``, ``benchmarks/pairs.py``) are smoke-tested in
``tests/integration/test_benchmark_smoke_services.py``; ``benchmarks/train.py`` has its own test.
"""

from __future__ import annotations

import importlib.util
import math
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"([-+]?(?:\d+\.?\d*|nan|inf))"


def run_smoke(script: str, *args: str, timeout_s: float = 240) -> str:
    """Run ``benchmarks/<script> --smoke`` in a fresh interpreter; its stdout (the test fails on exit != 0)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--smoke", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert proc.returncode == 0, f"{script} --smoke exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def figure(out: str, pattern: str) -> float:
    """The number captured by ``pattern`` in ``out`` (which must be there, and finite)."""
    found = re.search(pattern, out, re.MULTILINE)
    assert found, f"no line matching {pattern!r} in:\n{out}"
    value = float(found.group(1))
    assert math.isfinite(value), f"{pattern!r}: {value} in:\n{out}"
    return value


def load_benchmark(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_dag_parse_smoke() -> None:
    out = run_smoke("dag_parse.py")
    assert figure(out, rf"^parse dags/\s+: min {NUMBER} s") > 0
    assert figure(out, rf"^airflow import\s+: median {NUMBER} s") > 0
    assert re.search(r"^DAGs\s+: mur_", out, re.MULTILINE), out
    assert re.search(r"^result\s+: OK", out, re.MULTILINE), out


def test_features_smoke() -> None:
    out = run_smoke("features.py")
    assert figure(out, rf"^vectorized \(relative\): {NUMBER} s") > 0
    assert figure(out, rf"^reference \(iterrows \+ DataFrame per window\): {NUMBER} s") > 0
    assert figure(out, rf"^ratio: {NUMBER}") > 0


def test_quality_smoke(tmp_path: Path) -> None:
    out = run_smoke("quality.py", "--out", str(tmp_path / "quality.json"))
    for hours in (1, 4, 24):  # point skill, dir. acc., coverage, interval skill vs (a) and (b), ...
        row = re.search(rf"^btc_usdt\s+{hours}\s+(.+)$", out, re.MULTILINE)
        assert row, out
        cells = [float(c) for c in row.group(1).split()]
        assert len(cells) == 7 and all(math.isfinite(c) for c in cells), row.group(0)
    for hours in (1, 4, 24):  # each of the 2 walk-forward spans' coverage, then both spans' together
        spans = re.search(
            rf"^btc_usdt\s+{hours} h: {NUMBER} {NUMBER} \(together {NUMBER}\)$", out, re.MULTILINE
        )
        assert spans, out
        first, second, together = (float(c) for c in spans.groups())
        assert min(first, second) - 1e-3 <= together <= max(first, second) + 1e-3
    (_, latest_start, _), (_, _, earlier_end) = re.findall(
        r"^\[btc_usdt\] span (\d)/2: (\S+) \.\. (\S+)", out, re.MULTILINE
    )
    assert earlier_end < latest_start, "span 2 ends before span 1 begins"
    assert 0 <= figure(out, rf"^worst 1h coverage: {NUMBER}") <= 1
    figure(out, rf"^worst 1h interval skill vs naive: {NUMBER}")
    # the coverage farthest from 0.90 in either direction, with where it is and its signed distance
    worst = re.search(
        rf"^worst coverage over horizons: {NUMBER} \(btc_usdt (1|4|24) h, {NUMBER} from 0.90, "
        rf"sampling error {NUMBER}\)$",
        out,
        re.MULTILINE,
    )
    assert worst, out
    assert float(worst.group(3)) == pytest.approx(float(worst.group(1)) - 0.9, abs=1.5e-3)
    by_k = re.search(  # the worst coverage over the latest 1 and 2 spans: with both, the figure above
        rf"^worst coverage over the latest k spans: k=1 {NUMBER} \(btc_usdt (?:1|4|24) h\), "
        rf"k=2 {NUMBER} \(btc_usdt (?:1|4|24) h\)$",
        out,
        re.MULTILINE,
    )
    assert by_k, out
    assert float(by_k.group(2)) == pytest.approx(float(worst.group(1)), abs=1e-9)
    assert (tmp_path / "quality.json").exists()
    figure(
        out, rf"^worst interval skill vs \(c\) GARCH by horizon: 1 h {NUMBER}, 4 h [-+.\d]+, 24 h [-+.\d]+$"
    )


def test_decision_smoke() -> None:
    out = run_smoke("decision.py")
    assert out.startswith("rule (paper, not advice): exposure = min(1, 40% / the 24 h range's volatility)")
    for name in ("model-sized", "EWMA-sized", "GARCH-sized", "buy & hold"):  # total return .. mean exposure
        cells = re.search(rf"^{name}\s+(.+)$", out, re.MULTILINE)
        assert cells, out
        assert len(cells.group(1).split()) == 8 and "nan" not in cells.group(1), cells.group(0)
    diff = re.search(rf"^btc_usdt\s+{NUMBER} \[{NUMBER}, {NUMBER}\]", out, re.MULTILINE)
    assert diff, out  # the Sharpe difference vs the EWMA-sized rule inside its 95 % interval
    assert float(diff.group(2)) <= float(diff.group(1)) <= float(diff.group(3))
    assert re.search(
        r"^paper, not advice: the model-sized rule (beats|does NOT beat) the EWMA-sized", out, re.M
    )


def test_quality_coverage_error_by_hand() -> None:
    """benchmarks/quality.py::coverage_error: binomial on the independent outcomes, ``n / h`` of them."""
    quality = load_benchmark("quality")
    assert quality.coverage_error(0.9, 864, 24) == pytest.approx(math.sqrt(0.09 / 36))  # 0.05
    assert quality.coverage_error(0.9, 900, 1) == pytest.approx(0.01)
    assert quality.coverage_error(1.0, 100, 24) == 0.0


@pytest.fixture(scope="module")
def bench_serve() -> ModuleType:
    return load_benchmark("serve")


def test_serve_reference_feeds_the_model_its_own_columns(bench_serve: ModuleType, tmp_path: Path) -> None:
    """The reference server of ``benchmarks/serve.py`` builds a model's input from its metadata, as Serve
    does: a model with the extended columns (11) answers, instead of ``Got: 9 Expected: 11``."""
    from mur.model.features import EXTENDED_FEATURE_NAMES
    from mur.serving.market_cache import MarketCache
    from mur.serving.model import LoadedModel
    from mur.settings import Settings
    from mur.training.driver import train_and_register
    from mur.training.loop import LocalFit

    pair = "eth_usdt"
    settings = Settings(train_days=30, num_layers=1, market_data="bundled")
    train_and_register(
        settings, pair, fit=LocalFit(), out_dir=tmp_path, register=False, epochs=1, hidden_size=4
    )
    model = LoadedModel.from_bytes(pair, 3, (tmp_path / "model.onnx").read_bytes(), {})
    assert model.features == EXTENDED_FEATURE_NAMES  # more than the reference's nine
    snap = MarketCache(settings, [pair]).fetch(pair)

    body = bench_serve.reference_forecast(model, snap)

    assert body["pair"] == pair and body["model_version"] == 3
    assert math.isfinite(body["forecast"]) and body["forecast"] > 0
    assert body["last_close"] == snap.last_close
    assert len(body["horizons"]) == len(model.horizons)


def test_serve_benchmark_fails_on_errors_and_nan(bench_serve: ModuleType) -> None:
    """A level with failed requests or a ratio that is not a number is no measurement: :func:`check` names
    it (main() then exits 1 and writes nothing)."""
    ok = bench_serve.Result("serve", 1, 10, 0, 1.0, [5.0] * 10)
    failed = bench_serve.Result("reference", 1, 10, 10, 1.0, [1.0] * 10)
    row = {
        "concurrency": 1,
        "serve_rps": ok.rps,
        "reference_rps": failed.rps,
        "serve_p99_ms": 5.0,
        "reference_p99_ms": 1.0,
        "ratio": float("nan"),
    }
    problems = bench_serve.check([ok, failed], [row])
    assert any("reference at 1 concurrent: 10 of 10 request(s) failed" in p for p in problems), problems
    assert any("reference_rps" in p and "ratio" in p for p in problems), problems
    good = {**row, "reference_rps": 20.0, "ratio": 0.5}
    assert bench_serve.check([ok], [good]) == []
    assert bench_serve.target_ratio(1) == 0.6 and bench_serve.target_ratio(16) == 0.8
