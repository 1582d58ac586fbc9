"""The online quantile tracker (mur/evaluation/online_conformal.py) against hand-computed sequences, a series
whose volatility doubles half-way, the delayed-feedback case, and the replay benchmark's smoke mode."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mur.evaluation.online_conformal import (
    OnlineParams,
    OnlineState,
    Outcome,
    replay,
    running_coverage,
    scale_band,
    score,
    step,
)

ROOT = Path(__file__).resolve().parents[2]
P = OnlineParams(level=0.9, eta=0.1, horizon_power=0.5)
E = math.e


def test_score_is_distance_in_graph_half_widths() -> None:
    # log distances: lower 1 below, upper 1 above the median
    assert score(100.0, 100 / E, 100 * E, 100 * E**2) == pytest.approx(2.0)
    assert score(100.0, 100 / E, 100 * E, 100 / E**0.5) == pytest.approx(0.5)
    # a range served with scale 2: its half-width is two of the graph's
    assert score(100.0, 100 / E**2, 100 * E**2, 100 * E**3, applied_scale=2.0) == pytest.approx(3.0)
    lo, hi = scale_band(100.0, 100 / E, 100 * E, 1.5)
    assert (math.log(lo / 100), math.log(hi / 100)) == pytest.approx((-1.5, 1.5))


def test_step_by_hand() -> None:
    """eta 0.1, alpha 0.1: a hit moves log s by -0.01, a miss by +0.09."""
    hit, miss = Outcome(100.0, 90.0, 110.0, 100.0), Outcome(100.0, 90.0, 110.0, 120.0)
    s1 = step(OnlineState(), hit, 1, P)
    assert s1.log_scale == pytest.approx(-0.01)
    s2 = step(s1, miss, 1, P)
    assert s2.log_scale == pytest.approx(0.08)
    s3 = step(s2, hit, 1, P)
    assert s3.log_scale == pytest.approx(0.07)
    assert s3.integral == pytest.approx(0.7)
    assert (s3.resolved, s3.covered, s3.covered_base) == (3, 2, 2)
    assert s3.coverage == pytest.approx(2 / 3)
    # 24 h: the step is eta / sqrt(24)
    assert step(OnlineState(), miss, 24, P).log_scale == pytest.approx(0.09 / math.sqrt(24))
    # coverage without the scale: the graph's range, from a range served wider
    wide = Outcome(100.0, *scale_band(100.0, 90.0, 110.0, 2.0), 115.0, applied_scale=2.0)
    s = step(OnlineState(), wide, 1, P)
    assert (s.covered, s.covered_base) == (1, 0)
    assert s.winkler_base_sum > s.winkler_sum  # the graph's range missed: penalized


def test_scale_is_clipped() -> None:
    params = OnlineParams(eta=10.0, max_scale=4.0, min_scale=0.25)
    miss = Outcome(100.0, 90.0, 110.0, 200.0)
    assert step(OnlineState(), miss, 1, params).scale == pytest.approx(4.0)
    hit = Outcome(100.0, 90.0, 110.0, 100.0)
    state = OnlineState()
    for _ in range(10):
        state = step(state, hit, 1, params)
    assert state.scale == pytest.approx(0.25)


def test_delayed_feedback_by_hand() -> None:
    """Graph range +-1 in log price; outcomes' scores 2, 0, 0, 2, 0. With a delay of two steps the forecast
    served at t uses the outcomes of forecasts up to t - 2, and every error is that of the range as served."""
    n = 5
    med = np.full(n, 100.0)
    lo, hi = med / E, med * E
    y = 100.0 * np.exp(np.array([2.0, 0.0, 0.0, 2.0, 0.0]))
    r = replay(med, lo, hi, y, 1, P, delay=2)
    # t=0, 1: nothing known yet; t=2: forecast 0 missed (+0.09); t=3: forecast 1 hit (-0.01); t=4: hit
    assert np.log(r.scales) == pytest.approx([0.0, 0.0, 0.09, 0.08, 0.07])
    # forecast 3 (score 2) was served with e^0.08: a miss
    assert r.covered.tolist() == [False, True, True, False, True]
    # the two outcomes still in flight at the end are counted: +0.09 (miss), -0.01
    assert r.final.log_scale == pytest.approx(0.15)
    assert (r.final.resolved, r.final.covered, r.final.covered_base) == (5, 3, 3)
    # without delay the first miss is known one step earlier
    r1 = replay(med, lo, hi, y, 1, P, delay=1)
    assert np.log(r1.scales) == pytest.approx([0.0, 0.09, 0.08, 0.07, 0.16])
    # the default delay is the horizon
    assert np.array_equal(replay(med, lo, hi, y, 2, OnlineParams(eta=0.1, horizon_power=0)).scales, r.scales)
    with pytest.raises(ValueError):
        replay(med, lo, hi, y, 1, P, delay=0)


def _vol_doubling(hours: int, n: int = 6000, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Hourly log returns N(0, 1 %), doubling to 2 % half-way; the graph's range is the 90 % range of the
    first half's h-hour returns (overlapping h-hour outcomes: dependent, as in the real series)."""
    rng = np.random.default_rng(seed)
    sigma = np.where(np.arange(n + hours) < n // 2, 0.01, 0.02)
    r = rng.standard_normal(n + hours) * sigma
    logp = np.concatenate([[0.0], np.cumsum(r)])
    med = 100.0 * np.exp(logp[:n])
    y = 100.0 * np.exp(logp[hours : n + hours])
    half = 1.6449 * 0.01 * math.sqrt(hours)
    return med, med * math.exp(-half), med * math.exp(half), y


@pytest.mark.parametrize("hours", [1, 4, 24])
def test_coverage_converges_when_volatility_doubles(hours: int) -> None:
    med, lo, hi, y = _vol_doubling(hours)
    params = OnlineParams(level=0.9, eta=0.05)
    r = replay(med, lo, hi, y, hours, params)
    n = len(med)
    second = slice(n // 2, n)
    # the graph's range is right before the shift and far too narrow after it (~59 % for a doubled sigma)
    assert r.covered_base[: n // 2].mean() == pytest.approx(0.9, abs=0.04)
    assert r.covered_base[second].mean() < 0.65
    # online: right overall and after the shift, once it has adapted (the last 2,000 hours)
    assert r.covered.mean() == pytest.approx(0.9, abs=0.03)
    assert r.covered[-2000:].mean() == pytest.approx(0.9, abs=0.03)
    assert r.scales[-1000:].mean() == pytest.approx(2.0, rel=0.2)
    assert r.scales[n // 2 - 200 : n // 2].mean() == pytest.approx(1.0, rel=0.2)
    # the long-run bound: |miss rate - alpha| <= (l_max - l_min) / (eta_h T)
    logs = np.log(r.scales)
    bound = (logs.max() - logs.min() + 2 * params.eta_for(hours) * (1 + hours)) / (params.eta_for(hours) * n)
    assert abs((1 - r.covered.mean()) - params.alpha) <= bound


def test_running_coverage() -> None:
    c = np.array([1, 0, 1, 1, 0, 1], dtype=bool)
    assert running_coverage(c, 2) == pytest.approx([1.0, 0.5, 0.5, 1.0, 0.5, 0.5])
    assert running_coverage(c[:1], 5) == pytest.approx([1.0])


def test_params_are_checked() -> None:
    with pytest.raises(ValueError):
        OnlineParams(level=1.2)
    with pytest.raises(ValueError):
        OnlineParams(eta=0)
    with pytest.raises(ValueError):
        OnlineParams(min_scale=2.0)


def test_replay_benchmark_smoke(tmp_path: Path) -> None:
    """benchmarks/online_calibration.py --smoke: one pair, a tiny model, 400 replayed hours; every horizon
    prints finite static and online figures, and --out writes the JSON and the chart."""
    out_file = tmp_path / "online.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "online_calibration.py"),
            "--smoke",
            "--out",
            str(out_file),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for hours in (1, 4, 24):
        row = re.search(rf"^btc_usdt\s+{hours}\s+(.+)$", proc.stdout, re.MULTILINE)
        assert row, proc.stdout
        cells = [float(c) for c in row.group(1).split()[:6]]
        assert all(math.isfinite(c) for c in cells) and 0 <= cells[1] <= 1 and 0 <= cells[2] <= 1
    assert re.search(r"^worst online coverage: [0-9.]+$", proc.stdout, re.MULTILINE)
    assert out_file.exists() and (
        out_file.with_suffix(".png").exists() or out_file.with_suffix(".html").exists()
    )
