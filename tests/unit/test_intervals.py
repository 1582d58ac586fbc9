"""Interval scores, split-conformal calibration and the two naive interval baselines, against values
computed by hand; the quantile model's loss and its calibrated coverage on synthetic heteroskedastic data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from mur.evaluation.intervals import (
    EwmaBaseline,
    conformal_scale,
    interval_metrics,
    naive_quantiles,
    pinball,
    winkler_scores,
)
from mur.model.network import pinball_loss
from mur.model.quantile_config import check_quantile_config, interval_level

LEVELS = (0.05, 0.5, 0.95)


def test_pinball_by_hand() -> None:
    # y = 10; quantiles 8 (tau .05), 10 (.5), 13 (.95):
    #   .05: y above by 2 -> .05 * 2 = 0.1; .5: 0; .95: y below by 3 -> (0.95 - 1) * -3 = 0.15
    assert pinball(np.array([[8.0, 10.0, 13.0]]), np.array([10.0]), LEVELS) == pytest.approx(
        (0.1 + 0 + 0.15) / 3
    )
    # the torch loss used in training agrees (one horizon, weight 1)
    q = torch.tensor([[[8.0, 10.0, 13.0]]])
    loss = pinball_loss(q, torch.tensor([[10.0]]), torch.tensor(LEVELS), torch.tensor([1.0]))
    assert float(loss) == pytest.approx((0.1 + 0 + 0.15) / 3)


def test_winkler_by_hand() -> None:
    lo, hi = np.array([9.0, 9.0, 9.0]), np.array([11.0, 11.0, 11.0])
    y = np.array([10.0, 8.0, 12.5])
    # alpha 0.1 -> penalty 2 / 0.1 = 20 per unit outside: 2, 2 + 20 * 1, 2 + 20 * 1.5
    np.testing.assert_allclose(winkler_scores(lo, hi, y, 0.1), [2.0, 22.0, 32.0])
    m = interval_metrics(np.array([[9.0, 10.0, 11.0]] * 3), y, np.array([10.0] * 3), LEVELS)
    assert m["coverage"] == pytest.approx(1 / 3) and m["width"] == pytest.approx(0.2)
    assert m["winkler"] == pytest.approx(56 / 3)


def test_naive_quantiles_by_hand() -> None:
    # 1 h log returns of 100, 200, 100, 400: ln 2, -ln 2, ln 4 -> sorted -0.693, 0.693, 1.386
    q = naive_quantiles(np.array([100.0, 200.0, 100.0, 400.0]), 4, [1], LEVELS)
    ln2 = math.log(2)
    expected = [-ln2 + 0.1 * (2 * ln2), ln2, ln2 + 0.9 * ln2]  # linear interpolation at 0.1 and 1.9
    np.testing.assert_allclose(q[0], expected)
    # the training span ends the data: a return whose close lies after train_end is never used
    q2 = naive_quantiles(np.array([100.0, 200.0, 100.0, 400.0]), 3, [1], LEVELS)
    np.testing.assert_allclose(q2[0][1], 0.0)  # median of ln 2, -ln 2


def test_ewma_baseline_by_hand() -> None:
    close = np.array([100.0, 110.0, 99.0, 108.9, 100.0])
    high, low = close * 1.01, close * 0.99
    hour = np.array([0, 1, 0, 1, 0])
    b = EwmaBaseline(horizons=(1,), levels=LEVELS, half_life=1.0).fit(close, high, low, hour, train_end=5)
    r = np.diff(np.log(close), prepend=np.log(close[0]))
    park = math.log(1.01 / 0.99) ** 2 / (4 * math.log(2))
    v = 0.5 * r**2 + 0.5 * park
    e = [v[:5].mean()]
    for t in range(1, 5):
        e.append(0.5 * e[-1] + 0.5 * v[t])
    np.testing.assert_allclose(b.variance, e)
    # hour factor: mean variance by hour over the mean (hours never seen count as average):
    # p0 = mean v at hour 0, p1 at hour 1, m = (p0 + p1) / 2 -> f(0) = p0 / m, f(1) = p1 / m, others 1
    p0, p1 = v[[0, 2, 4]].mean(), v[[1, 3]].mean()
    m = (p0 + p1) / 2
    assert b.factor_ahead is not None
    assert b.factor_ahead[0, 0] == pytest.approx(p1 / m) and b.factor_ahead[0, 1] == pytest.approx(1.0)
    # after row 0 (hour 0) comes hour 1: sigma = sqrt(e_0 * 1 h * f(1))
    assert b.sigma(np.array([0]), 0)[0] == pytest.approx(math.sqrt(e[0] * p1 / m))
    q = b.log_return_quantiles(np.array([0, 1]))
    assert q.shape == (2, 1, 3) and np.all(np.diff(q, axis=-1) >= 0)


def test_conformal_scale_reaches_nominal_coverage_on_heteroskedastic_data() -> None:
    rng = np.random.default_rng(7)
    n = 6000
    sigma = np.exp(np.cumsum(rng.normal(0, 0.05, n)))  # wandering volatility
    y = sigma * rng.standard_t(4, n)  # fat tails
    # an overconfident model: the right shape of spread, half the width it should have
    z = 1.645 / 2
    q = np.stack([-z * sigma, 0 * sigma, z * sigma], axis=-1)[:, None, :]  # (n, 1, 3)
    cal, test = slice(0, n // 2), slice(n // 2, n)
    raw = np.mean((y[test] >= q[test, 0, 0]) & (y[test] <= q[test, 0, 2]))
    k = conformal_scale(q[cal], y[cal, None], 1, 0.9)
    lo, hi = k[0] * q[test, 0, 0], k[0] * q[test, 0, 2]
    covered = np.mean((y[test] >= lo) & (y[test] <= hi))
    assert raw < 0.8 and k[0] > 1.5
    assert covered == pytest.approx(0.9, abs=0.015)


def test_quantile_config_rules() -> None:
    check_quantile_config([1, 4, 24], [0.05, 0.5, 0.95])
    assert interval_level([0.05, 0.25, 0.5, 0.75, 0.95]) == pytest.approx(0.9)
    for horizons, levels in (
        ([4, 24], LEVELS),  # the point forecast is the 1 h median
        ([1, 1], LEVELS),
        ([1, 4], (0.1, 0.9)),
        ([1, 4], (0.1, 0.4, 0.9)),
        ([1, 4], (0.9, 0.5, 0.1)),
    ):
        with pytest.raises(ValueError):
            check_quantile_config(horizons, levels)


def synthetic_candles(n: int, seed: int = 3) -> pd.DataFrame:
    """Hourly candles whose volatility clusters (GARCH(1,1)) and has an intraday rhythm."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC")
    hour_factor = 1.0 + 0.6 * np.sin(2 * np.pi * ts.hour.to_numpy() / 24.0)
    var, r = 1e-5, np.empty(n)
    for t in range(n):
        var = 2e-7 + 0.1 * (r[t - 1] ** 2 if t else 1e-5) + 0.88 * var
        r[t] = math.sqrt(var * hour_factor[t]) * rng.standard_normal()
    close = 100.0 * np.exp(np.cumsum(r))
    open_ = np.r_[100.0, close[:-1]]
    spread = np.abs(r) + np.sqrt(var) * 0.5
    high = np.maximum(open_, close) * np.exp(spread * 0.5)
    low = np.minimum(open_, close) * np.exp(-spread * 0.5)
    return pd.DataFrame(
        {
            "timestamp": ts,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": 1000.0 + 0 * close,
        }
    )


def test_trained_calibrated_model_covers_nominally_on_synthetic_data(tmp_path) -> None:
    """The whole path (fit with pinball loss, conformal calibration on validation, ONNX export) gives
    intervals near their nominal 90 % coverage on later data, narrower than the naive baseline's score."""
    from mur.model.export import export_onnx
    from mur.settings import Settings
    from mur.training.driver import calibrate, evaluate_onnx, prepare
    from mur.training.loop import LocalFit
    from mur.training.params import model_config, train_config

    settings = Settings(context_len=72, num_layers=1, hidden_size=8, epochs=2)
    ds = prepare(settings, synthetic_candles(4000))
    mcfg, tcfg = model_config(settings), train_config(settings)
    outcome = LocalFit()(ds.model_arrays("train"), ds.model_arrays("val"), mcfg, tcfg)
    path = export_onnx(calibrate(outcome.model, ds), tmp_path / "m.onnx", ds.x[ds.split.test][:16])
    result = evaluate_onnx(path, ds, mcfg.rnn_len)
    h1 = result["horizons"][0]
    assert 0.86 <= h1["interval"]["coverage"] <= 0.94, h1
    assert h1["interval_skill"] > 0.05, h1  # the clustered, rhythmic volatility is found
