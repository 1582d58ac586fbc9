"""The sizing rule walked forward on hand-made backtest forecasts: the table, the verdict, no look-ahead."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mur.errors import DataValidationError
from mur.evaluation.backtest import FoldForecasts, concat_forecasts
from mur.evaluation.sizing import HOURS_PER_YEAR, SizingRule
from mur.evaluation.strategy import sharpe_difference, strategies, strategy_report, table, verdict

LEVELS = (0.05, 0.5, 0.95)
HALF_SPAN = 1.6448536269514722  # z of 0.95
RULE = SizingRule(target_vol=0.4, cap=1.0, horizon=24, fee_bps=10.0, slippage_bps=5.0)
RETURNS = np.tile([0.01, -0.005], 24)  # hour by hour, two days


def ranges(close: np.ndarray, annual_vol: np.ndarray) -> np.ndarray:
    """Price quantiles ``(n, 2, 3)`` at 1 h and 24 h whose 24 h width says ``annual_vol``."""
    half = HALF_SPAN * np.asarray(annual_vol) / math.sqrt(HOURS_PER_YEAR) * math.sqrt(24)
    q = close[:, None] * np.exp(np.stack([-half, 0 * half, half], axis=1))
    return np.stack([q, q], axis=1)


def fold(returns: np.ndarray, start: int, first_close: float, vols: dict[str, np.ndarray]) -> FoldForecasts:
    closes = first_close * np.cumprod(np.concatenate([[1.0], 1.0 + returns]))
    last, now = closes[:-1], closes[1:]
    return FoldForecasts(
        timestamps=np.arange(start, start + len(returns)).astype("datetime64[h]"),
        last_close=last,
        targets=np.stack([now, now * 1.01], axis=1),
        quantiles={k: ranges(last, v) for k, v in vols.items()},
        horizons=(1, 24),
        levels=LEVELS,
    )


def two_days() -> FoldForecasts:
    """Two one-day folds: the model says 80 % then 40 % a year (a 10 % spike between decisions is never
    read), EWMA 40 % (the cap), GARCH 160 %."""
    model = np.r_[np.full(24, 0.8), np.full(24, 0.4)]
    model[5] = 0.1
    vols = {"model": model, "ewma": np.full(48, 0.4), "garch": np.full(48, 1.6)}
    day1 = fold(RETURNS[:24], 0, 100.0, {k: v[:24] for k, v in vols.items()})
    day2 = fold(RETURNS[24:], 24, float(day1.targets[-1, 0]), {k: v[24:] for k, v in vols.items()})
    return concat_forecasts([day1, day2])


def test_each_sizing_by_hand() -> None:
    res = strategies(two_days(), RULE)
    assert list(res) == ["model", "ewma", "garch", "buy_hold"]
    assert res["model"].exposure.tolist() == pytest.approx([0.5] * 24 + [1.0] * 24)
    assert res["garch"].exposure.tolist() == pytest.approx([0.25] * 48)
    assert res["model"].asset.tolist() == pytest.approx(RETURNS)
    want = 0.5 * RETURNS[:24]
    want[0] -= 0.5 * 0.0015
    equity_day1 = float(np.prod(1 + want))
    assert res["model"].equity.iloc[23] == pytest.approx(equity_day1)
    assert res["model"].fees == pytest.approx(0.5 * 0.0015 + 0.5 * 0.0015 * equity_day1)
    # EWMA's range always asks for the cap: exactly buy & hold, charged its one entry
    assert res["ewma"].returns.tolist() == pytest.approx(res["buy_hold"].returns.tolist())
    assert res["buy_hold"].equity.iloc[-1] == pytest.approx(
        (1 + RETURNS[0] - 0.0015) * np.prod(1 + RETURNS[1:])
    )


def test_report_table_and_verdict() -> None:
    doc, _ = strategy_report(two_days(), RULE, reps=50)
    model = doc["strategies"]["model"]
    assert (model["turnover"], model["mean_exposure"], model["hours"]) == pytest.approx((1.0, 0.75, 48))
    assert doc["strategies"]["buy_hold"]["fees"] == pytest.approx(0.0015)
    assert (doc["start"], doc["end"]) == ("1970-01-01T00:00:00Z", "1970-01-03T00:00:00Z")
    assert doc["rule"]["horizon"] == 24 and set(doc["sharpe_vs"]) == {"ewma", "garch", "buy_hold"}
    assert doc["verdict"].startswith("paper, not advice: the model-sized rule")
    lines = table(doc).splitlines()
    assert lines[0].split()[:4] == ["strategy", "total", "ret.", "ann."]
    assert [line.split()[0] for line in lines[2:]] == ["model-sized", "EWMA-sized", "GARCH-sized", "buy"]
    assert "+0.75" not in lines[2] and lines[2].split()[-1] == "0.75"  # mean exposure, unsigned


def test_the_rule_must_read_a_forecast_horizon() -> None:
    with pytest.raises(DataValidationError, match="MUR_STRATEGY_HORIZON"):
        strategies(two_days(), SizingRule(0.4, 1.0, 4, 10.0, 5.0))


def test_verdict_wording() -> None:
    line = verdict(
        {
            "ewma": {"difference": 0.12, "ci_low": -0.3, "ci_high": 0.5},
            "garch": {"difference": 0.4, "ci_low": 0.05, "ci_high": 0.8},
            "buy_hold": {"difference": -0.4, "ci_low": -0.9, "ci_high": -0.1},
        }
    )
    assert line == (
        "paper, not advice: the model-sized rule does NOT beat the EWMA-sized rule after fees (Sharpe +0.12, "
        "95 % CI [-0.30, +0.50]); the model-sized rule beats the GARCH-sized rule after fees (Sharpe +0.40, "
        "95 % CI [+0.05, +0.80]); the model-sized rule does NOT beat buy & hold after fees (Sharpe -0.40, 95 % CI "
        "[-0.90, -0.10])"
    )


def test_sharpe_difference_and_its_interval() -> None:
    b = np.random.default_rng(1).normal(0.0, 0.01, 2000)
    same = sharpe_difference(b, b, horizon=24, reps=50)
    assert same["difference"] == same["ci_low"] == same["ci_high"] == 0.0
    assert same["block_hours"] >= 24
    better = sharpe_difference(b + 0.002, b, horizon=1, reps=200)
    want = (np.mean(b + 0.002) - np.mean(b)) / np.std(b, ddof=1) * math.sqrt(HOURS_PER_YEAR)
    assert better["difference"] == pytest.approx(want)
    assert 0 < better["ci_low"] < better["difference"] < better["ci_high"]


@settings(max_examples=30, deadline=None)
@given(cut=st.integers(1, 47), seed=st.integers(0, 2**16))
def test_no_decision_reads_a_later_forecast_or_candle(cut: int, seed: int) -> None:
    """Changing every forecast and outcome from row ``cut`` on changes no strategy's hours before it."""
    rng = np.random.default_rng(seed)
    f, g = two_days(), two_days()
    g.targets[cut:] *= rng.uniform(0.5, 1.5, (48 - cut, 1))
    g.last_close[cut:] *= rng.uniform(0.5, 1.5, 48 - cut)
    for q in g.quantiles.values():
        q[cut:] *= rng.uniform(0.9, 1.1, q[cut:].shape)
    a, b = strategies(f, RULE), strategies(g, RULE)
    for k in a:
        assert a[k].exposure[:cut].tolist() == b[k].exposure[:cut].tolist()
        assert a[k].equity[:cut].tolist() == b[k].equity[:cut].tolist()
