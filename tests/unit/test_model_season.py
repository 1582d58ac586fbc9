"""The hour-of-week variance factor of the quantile model's volatility structure (a geometric mean, shrunk)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mur.model.network import HOURS_PER_WEEK, ModelConfig, build_model, hour_of_week_factor


def test_factor_against_hand_values() -> None:
    """Two hours of week seen twice each, prior 2: exp of the shrunk mean log deviation, normalized to mean 1."""
    park = torch.tensor([1.0, 1.0, 4.0, 4.0], dtype=torch.float64)
    how = torch.tensor([0, 0, 1, 1])
    factor = hour_of_week_factor(park, how, prior=2.0)
    floor = 1e-3 * 2.5  # 1e-3 x the mean variance
    d = math.log(4.0 + floor) - math.log(1.0 + floor)  # hour 1's log variance above hour 0's
    # deviations from the overall mean log: -d/2 (hour 0) and +d/2 (hour 1), two hours each, over 2 + 2
    raw = [math.exp(-d / 4), math.exp(d / 4)] + [1.0] * (HOURS_PER_WEEK - 2)
    norm = sum(raw) / HOURS_PER_WEEK
    assert factor.shape == (HOURS_PER_WEEK,)
    assert factor[0].item() == pytest.approx(raw[0] / norm, rel=1e-12)
    assert factor[1].item() == pytest.approx(raw[1] / norm, rel=1e-12)
    assert factor[2].item() == pytest.approx(1.0 / norm, rel=1e-12)
    assert factor.mean().item() == pytest.approx(1.0, rel=1e-12)


def test_one_extreme_hour_barely_moves_the_factor() -> None:
    """100 weeks of equal variances and one crash hour 10,000 x wider: the typical hour stays ~1 (a mean
    of variances would make that hour of week ~100 x wider for the whole next year)."""
    how = torch.arange(100 * HOURS_PER_WEEK) % HOURS_PER_WEEK
    park = torch.ones(len(how), dtype=torch.float64)
    park[5] = 1e4
    factor = hour_of_week_factor(park, how)
    assert 1.0 < factor[5].item() < 1.15
    others = torch.cat([factor[:5], factor[6:]])
    assert torch.allclose(others, others[0].expand_as(others))
    assert others[0].item() == pytest.approx(1.0, abs=1e-3)


def test_init_from_data_uses_the_factor_and_a_finite_structure() -> None:
    """The fitted model's seasonal buffer is the log of the factor of its training windows' last hours, and
    a flat candle (high = low) keeps the fitted structure finite."""
    cfg = ModelConfig(input_len=48, rnn_len=8, hidden_size=4, num_layers=1)
    rng = np.random.default_rng(0)
    n, t_len = 400, cfg.input_len
    hours = np.arange(n + t_len)
    close = 100.0 * np.exp(np.cumsum(0.01 * rng.standard_normal(n + t_len)))
    cols = {
        "day_of_week": (hours // 24) % 7,
        "day_of_month": np.ones_like(hours),
        "iso_week": np.ones_like(hours),
        "month": np.ones_like(hours),
        "open": np.r_[100.0, close[:-1]],
        "high": close * np.exp(0.01 * np.abs(rng.standard_normal(n + t_len))),
        "low": close * np.exp(-0.01 * np.abs(rng.standard_normal(n + t_len))),
        "close": close,
        "close_minus_open": close - np.r_[100.0, close[:-1]],
        "hour": hours % 24,
        "volume": 1000.0 + rng.random(n + t_len),
    }
    series = np.stack([cols[name] for name in cfg.feature_names], axis=1).astype(np.float32)
    series[t_len + 10, 5] = series[t_len + 10, 6] = series[t_len + 10, 7]  # a flat candle
    x = np.stack([series[i : i + t_len] for i in range(n)])
    y = 100.0 * np.log(series[t_len : t_len + n, 7] / series[t_len - 1 : t_len - 1 + n, 7])
    y = np.repeat(y[:, None], len(cfg.horizons), axis=1)
    model = build_model(cfg, seed=0).init_from_data(x, y)
    last = torch.from_numpy(x[:, -1, :])
    park = torch.log(last[:, 5] / last[:, 6]).double() ** 2 / (4.0 * math.log(2.0))
    how = model.hour_of_week(torch.from_numpy(x))[:, -1]
    expected = torch.log(hour_of_week_factor(park, how)).float()
    assert torch.allclose(model.log_season, expected, atol=1e-6)
    assert torch.isfinite(model.vol_coef).all() and torch.isfinite(model.vol_bias).all()
    q = model(torch.from_numpy(x[:32]))
    assert torch.isfinite(q).all()
    assert (q[..., 1:] >= q[..., :-1]).all()


def test_read_only_training_windows_raise_no_warning() -> None:
    """Ray hands a worker its training windows read-only (the object store): every training's log showed
    PyTorch's "The given NumPy array is not writable" warning (once a process: hence its own process)."""
    import subprocess
    import sys

    code = (
        "import numpy as np; from mur.model.network import ModelConfig, build_model\n"
        "cfg = ModelConfig(input_len=48, rnn_len=8, hidden_size=4, num_layers=1)\n"
        "x = np.random.default_rng(0).uniform(1, 2, (50, 48, len(cfg.feature_names))).astype(np.float32)\n"
        "x[..., 5] += 1; x.setflags(write=False)\n"  # high above low
        "y = np.zeros((50, len(cfg.horizons))); y.setflags(write=False)\n"
        "model = build_model(cfg, seed=0).init_from_data(x, y)\n"
        "from mur.training.loop import make_loader, predict; predict(model, x); next(iter(make_loader(x, y, 8, True)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", code], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
