"""The GARCH(1,1)-t baseline: parameters recovered on simulated GARCH data, the multi-step variance by hand,
quantiles ordered by level and horizon, and no look-ahead (data after an origin never moves its forecast)."""

from __future__ import annotations

import numpy as np
import pytest

from mur.evaluation.garch import GarchBaseline, GarchParams

TRUE = GarchParams(omega=2e-6, alpha=0.08, beta=0.9, nu=6.0)
LEVELS = (0.05, 0.25, 0.5, 0.75, 0.95)


def simulate(n: int, seed: int = 0) -> np.ndarray:
    """Closes whose hourly log returns follow :data:`TRUE`."""
    rng = np.random.default_rng(seed)
    eps = rng.standard_t(TRUE.nu, n) * np.sqrt((TRUE.nu - 2) / TRUE.nu)
    r, v = np.empty(n), TRUE.long_run_variance
    for t in range(n):
        r[t] = np.sqrt(v) * eps[t]
        v = TRUE.omega + TRUE.alpha * r[t] ** 2 + TRUE.beta * v
    return 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(r)]))


@pytest.fixture(scope="module")
def fitted() -> tuple[np.ndarray, GarchBaseline]:
    close = simulate(8000)
    return close, GarchBaseline(horizons=(1, 4, 24), levels=LEVELS).fit(close, train_end=6000)


def test_fit_recovers_the_simulated_parameters(fitted: tuple[np.ndarray, GarchBaseline]) -> None:
    p = fitted[1].params
    assert p is not None
    assert p.alpha == pytest.approx(TRUE.alpha, abs=0.04) and p.beta == pytest.approx(TRUE.beta, abs=0.05)
    assert p.nu == pytest.approx(TRUE.nu, abs=2.5)
    assert p.long_run_variance == pytest.approx(TRUE.long_run_variance, rel=0.5)


def test_multi_step_variance_by_hand() -> None:
    p, v = TRUE.persistence, np.array([1e-5, 4e-5])
    np.testing.assert_allclose(TRUE.horizon_variance(v, 1), v)
    # step 2: omega + p v; step 3: omega (1 + p) + p^2 v
    np.testing.assert_allclose(TRUE.horizon_variance(v, 2), TRUE.omega + (1 + p) * v)
    np.testing.assert_allclose(TRUE.horizon_variance(v, 3), TRUE.omega * (2 + p) + (1 + p + p * p) * v)
    # the recursion by hand: v_t = omega + alpha r_t^2 + beta v_(t-1)
    r = np.array([0.01, -0.02])
    v1 = TRUE.omega + TRUE.alpha * 1e-4 + TRUE.beta * 3e-5
    expected = [v1, TRUE.omega + TRUE.alpha * 4e-4 + TRUE.beta * v1]
    np.testing.assert_allclose(TRUE.variance_path(r, start=3e-5), expected)


def test_quantiles_increase_with_level_and_horizon(fitted: tuple[np.ndarray, GarchBaseline]) -> None:
    q = fitted[1].log_return_quantiles(np.arange(6000, 8000, 97))
    assert q.shape == (21, 3, len(LEVELS))
    assert np.all(np.diff(q, axis=2) > 0)
    assert np.all(np.diff(q[:, :, -1], axis=1) > 0)  # wider further ahead
    np.testing.assert_allclose(q[:, :, 2], 0.0, atol=1e-12)  # zero mean: the median is no change


def test_no_look_ahead(fitted: tuple[np.ndarray, GarchBaseline]) -> None:
    close, base = fitted
    origins = np.array([5999, 6500, 7200])
    before = base.log_return_quantiles(origins)
    for k, origin in enumerate(origins):
        changed = close.copy()
        changed[origin + 1 :] *= np.exp(np.random.default_rng(k).normal(0, 0.05, len(close) - origin - 1))
        after = GarchBaseline(horizons=(1, 4, 24), levels=LEVELS).fit(changed, train_end=6000)
        np.testing.assert_array_equal(after.log_return_quantiles(origins[: k + 1]), before[: k + 1])
