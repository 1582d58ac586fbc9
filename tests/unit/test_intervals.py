"""Interval scores, split-conformal calibration and the two naive interval baselines, against values
computed by hand; the quantile model's loss and its calibrated coverage on synthetic heteroskedastic data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from mur.evaluation.intervals import (
    MIN_INDEPENDENT_OUTCOMES,
    EwmaBaseline,
    block_conformal_quantile,
    block_conformal_scale,
    calibration_rows,
    conformal_scores,
    interval_metrics,
    naive_quantiles,
    pinball_per_target,
    winkler_scores,
)
from mur.model.network import pinball_loss
from mur.model.quantile_config import check_quantile_config, interval_level

LEVELS = (0.05, 0.5, 0.95)


def test_pinball_by_hand() -> None:
    # y = 10; quantiles 8 (tau .05), 10 (.5), 13 (.95):
    #   .05: y above by 2 -> .05 * 2 = 0.1; .5: 0; .95: y below by 3 -> (0.95 - 1) * -3 = 0.15
    assert pinball_per_target(np.array([[8.0, 10.0, 13.0]]), np.array([10.0]), LEVELS) == pytest.approx(
        [(0.1 + 0 + 0.15) / 3]
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
    k = block_conformal_scale(q[cal], y[cal, None], n // 2, (1,), 1, 0.9)  # 1 h: every outcome independent
    lo, hi = k[0] * q[test, 0, 0], k[0] * q[test, 0, 2]
    covered = np.mean((y[test] >= lo) & (y[test] <= hi))
    assert raw < 0.8 and k[0] > 1.5
    assert covered == pytest.approx(0.9, abs=0.015)


def test_block_conformal_quantile_by_hand() -> None:
    """The finite-sample rank counts independent (non-overlapping) outcomes, one sample per offset."""
    # 1 h: every window is its own sample; the ceil((5 + 1) * 0.5) = 3rd smallest of 1..5
    assert block_conformal_quantile(np.array([5.0, 1.0, 4.0, 2.0, 3.0]), 1, 0.5) == 3.0
    # 2 h, scores 1..20: offsets 0 (windows 19, 17, ..., 1: scores 20, 18, ..., 2) and 1 (19, 17, ..., 1), m = 10
    # each; rank ceil(11 * 0.8) = 9: 18 and 17, mean 17.5; the rank of 20 dependent scores would give 17
    s = np.arange(1.0, 21.0)
    assert block_conformal_quantile(s, 2, 0.8) == 17.5
    assert block_conformal_quantile(s, 1, 0.8) == 17.0
    # 3 h, scores 7..1 (7 windows, the oldest first): offsets take windows (6, 3, 0), (5, 2), (4, 1), i.e.
    # scores {1, 4, 7}, {2, 5}, {3, 6}; coverage 0.5: ranks 2, 2, 2 -> 4, 5, 6, mean 5
    assert block_conformal_quantile(np.arange(7.0, 0.0, -1.0), 3, 0.5) == 5.0
    # fewer windows than hours: one sample per window there is; none at all: scale 1
    assert block_conformal_quantile(np.array([2.0]), 24, 0.9) == 2.0
    assert block_conformal_quantile(np.array([]), 24, 0.9) == 1.0


def test_conformal_scores_by_hand() -> None:
    # median 10, lower 8 (2 below), upper 14 (4 above): y = 7 is 1.5 lower half-widths out, y = 16 is 1.5 upper
    # ones, y = 11 is 0.25 inside
    q = np.array([[[8.0, 10.0, 14.0]]] * 3)
    assert conformal_scores(q, np.array([[7.0], [16.0], [11.0]]), 1)[:, 0] == pytest.approx([1.5, 1.5, 0.25])


def test_calibration_span_per_horizon_by_hand() -> None:
    """Validation span at 1 h and 4 h, 240 days at 24 h (into the training span), never more than there is."""
    assert MIN_INDEPENDENT_OUTCOMES == 240
    assert calibration_rows(1500, 6000, 1) == 1500
    assert calibration_rows(1500, 6000, 4) == 1500
    assert calibration_rows(1500, 6000, 24) == 5760
    assert calibration_rows(1500, 3000, 24) == 4500
    rng = np.random.default_rng(3)
    n, n_val = 7000, 1500
    q = np.stack([-np.ones((n, 3)), np.zeros((n, 3)), np.ones((n, 3))], axis=-1)
    y = rng.standard_normal((n, 3))
    k = block_conformal_scale(q, y, n_val, (1, 4, 24), 1, 0.9)
    s = np.abs(y)
    assert k[0] == pytest.approx(np.sort(s[-n_val:, 0])[math.ceil((n_val + 1) * 0.9) - 1])  # plain conformal
    assert k[1] == pytest.approx(block_conformal_quantile(s[-n_val:, 1], 4, 0.9))
    assert k[2] == pytest.approx(block_conformal_quantile(s[-5760:, 2], 24, 0.9))
    assert k == pytest.approx(1.645, rel=0.1)  # |N(0, 1)|'s 90 % quantile


def test_block_conformal_covers_overlapping_outcomes() -> None:
    """24 h outcomes as sums of 24 hourly shocks (overlapping windows: strongly dependent), a model whose
    range is right in shape but 40 % too narrow: calibrated on 240 x 24 windows, two later spans of the same
    length are covered at about 0.90."""
    rng = np.random.default_rng(11)
    hours, n_cal = 24, 240 * 24
    y = np.convolve(rng.standard_normal(3 * n_cal + hours - 1), np.ones(hours), "valid")  # N(0, 24) each
    half = 0.6 * 1.645 * math.sqrt(hours)
    q = np.broadcast_to(np.array([-half, 0.0, half]), (len(y), 1, 3))
    k = block_conformal_scale(q[:n_cal], y[:n_cal, None], 1000, (hours,), 1, 0.9)[0]
    assert k == pytest.approx(1 / 0.6, rel=0.1)
    covered = np.mean(np.abs(y[n_cal:]) <= k * half)
    assert covered == pytest.approx(0.9, abs=0.03)


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
