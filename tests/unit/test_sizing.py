"""The sizing rule and its cost arithmetic against hand-computed cases; no decision reads a later hour."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mur.evaluation.sizing import (
    HOURS_PER_YEAR,
    SizingRule,
    exposures,
    forecast_volatility,
    performance,
    simulate,
)
from mur.settings import Settings

LEVELS = (0.05, 0.5, 0.95)
Z95 = 1.6448536269514722
ANNUAL = math.sqrt(HOURS_PER_YEAR)


def rule(**changes: object) -> SizingRule:
    base = {"target_vol": 0.4, "cap": 1.0, "horizon": 1, "fee_bps": 10.0, "slippage_bps": 5.0}
    return SizingRule(**(base | changes))  # type: ignore[arg-type]


def test_volatility_is_the_log_width_over_the_normal_span_per_sqrt_hour() -> None:
    sigma, h = 0.01, 4  # hourly
    half = Z95 * sigma * math.sqrt(h)
    q = np.array([[100 * math.exp(-half), 100.0, 100 * math.exp(half)], [50.0, 50.0, 50.0]])
    vol = forecast_volatility(q, LEVELS, h)
    assert vol == pytest.approx([sigma, 0.0])


def test_exposure_is_target_over_forecast_and_capped() -> None:
    hourly = np.array([0.8, 0.2, 0.0, np.nan]) / ANNUAL  # annualised 80 %, 20 %, a flat range, no range
    assert exposures(hourly, rule()) == pytest.approx([0.5, 1.0, 1.0, 0.0])
    assert exposures(hourly, rule(cap=2.0)) == pytest.approx([0.5, 2.0, 2.0, 0.0])


def test_decisions_every_h_hours_are_held_in_between() -> None:
    hourly = np.array([0.8, 0.2, 0.4, 1.6, 0.2]) / ANNUAL
    assert exposures(hourly, rule(horizon=3)) == pytest.approx([0.5, 0.5, 0.5, 0.25, 0.25])


def test_costs_are_charged_on_every_change_of_exposure() -> None:
    r = pd.Series([0.01, -0.02, 0.03], index=pd.date_range("2024-01-01", periods=3, freq="h"))
    res = simulate(r, np.array([0.5, 0.5, 1.0]), rule())  # 15 bps per unit turned over
    assert res.turnover.tolist() == pytest.approx([0.5, 0.0, 0.5])
    assert res.costs.tolist() == pytest.approx([0.00075, 0.0, 0.00075])
    want = [0.005 - 0.00075, -0.01, 0.03 - 0.00075]
    assert res.returns.tolist() == pytest.approx(want)
    e1, e2 = 1 + want[0], (1 + want[0]) * (1 + want[1])
    assert res.equity.tolist() == pytest.approx([e1, e2, e2 * (1 + want[2])])
    assert res.fees == pytest.approx(0.00075 + 0.00075 * e2)
    assert list(res.equity.index) == list(r.index)


def test_performance_figures() -> None:
    r = np.array([0.01, -0.02, 0.03, -0.01])
    res = simulate(r, np.ones(4), rule(fee_bps=0.0, slippage_bps=0.0))
    p = performance(res)
    assert p["total_return"] == pytest.approx(1.01 * 0.98 * 1.03 * 0.99 - 1)
    assert p["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * ANNUAL)
    assert p["ann_vol"] == pytest.approx(r.std(ddof=1) * ANNUAL)
    assert p["sortino"] == pytest.approx(r.mean() / math.sqrt((0.02**2 + 0.01**2) / 4) * ANNUAL)
    assert p["max_drawdown"] == pytest.approx(0.98 - 1)  # the peak 1.01 falls to 1.01 * 0.98
    assert (p["turnover"], p["fees"], p["mean_exposure"]) == (1.0, 0.0, 1.0)


def test_the_rule_comes_from_the_settings() -> None:
    s = Settings.defaults(strategy_target_vol=0.3, strategy_horizon=4)
    r = SizingRule.from_settings(s)
    assert (r.target_vol, r.horizon, r.cap, r.cost_rate) == (0.3, 4, 1.0, 0.0015)


@settings(max_examples=60, deadline=None)
@given(
    vol=st.lists(st.floats(1e-4, 0.05), min_size=2, max_size=60),
    horizon=st.integers(1, 24),
    cut=st.integers(0, 58),
    seed=st.integers(0, 2**16),
)
def test_no_decision_reads_a_later_hour(vol: list[float], horizon: int, cut: int, seed: int) -> None:
    """Changing the forecasts and returns after hour ``cut`` changes nothing up to it."""
    rng = np.random.default_rng(seed)
    cut = min(cut, len(vol) - 1)
    v, r = np.array(vol), rng.normal(0, 0.01, len(vol))
    v2, r2 = v.copy(), r.copy()
    v2[cut + 1 :] = rng.uniform(1e-4, 0.05, len(v) - cut - 1)
    r2[cut + 1 :] = rng.normal(0, 0.05, len(v) - cut - 1)
    a, b = (simulate(rr, exposures(vv, rule(horizon=horizon)), rule()) for vv, rr in ((v, r), (v2, r2)))
    assert a.exposure[: cut + 1].tolist() == b.exposure[: cut + 1].tolist()
    assert a.equity[: cut + 1].tolist() == b.equity[: cut + 1].tolist()
