"""Is a forecast's edge real or noise? Two tests on out-of-sample errors, both pure functions.

* :func:`diebold_mariano` compares two forecasts of the same targets (the model vs persistence, or two
  model versions) on their absolute errors (or on per-target losses, which are their own absolute values),
  with the Harvey-Leybourne-Newbold (1997) small-sample correction and Student-t reference distribution.
  ``d_t = |e_model,t| - |e_other,t|``; a negative mean means the model's loss is lower. The long-run
  variance uses the autocovariances up to lag ``h - 1`` (an ``h``-step forecast's errors are MA(h-1) under
  the null), with the usual fallback to the lag-0 variance when that estimate is not positive.
* :func:`directional_test`: is the share of correctly predicted directions above 50 %? Exact one-sided
  binomial test.

For ``h = 1`` the corrected DM statistic equals the paired t statistic on the loss differentials, which is
what the unit tests check against ``scipy.stats.ttest_rel``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DMResult:
    """A Diebold-Mariano test of ``model`` against ``other`` (HLN-corrected, t with n-1 df)."""

    statistic: float
    """Negative when the model's loss is lower."""
    p_better: float
    """One-sided p-value of H1: the model's expected loss is lower than the other's."""
    p_worse: float
    """One-sided p-value of H1: the model's expected loss is higher."""
    p_two_sided: float


@dataclass(frozen=True)
class DirectionResult:
    """Correct directions out of ``n`` and the exact one-sided binomial p-value against a coin flip."""

    hits: int
    n: int
    p_value: float


def _long_run_variance(d: np.ndarray, lags: int) -> float:
    """The HAC variance of ``d``: autocovariances up to lag ``lags - 1``, or the lag-0 variance alone when
    that estimate is not positive (``acovf``: the biased sample autocovariances, divided by ``n``)."""
    from statsmodels.tsa.stattools import acovf

    gamma = acovf(d, nlag=lags - 1, fft=False)
    variance = float(gamma[0] + 2.0 * gamma[1:].sum())
    return variance if variance > 0 else float(gamma[0])


def diebold_mariano(
    errors_model: np.ndarray | list[float], errors_other: np.ndarray | list[float], *, horizon: int = 1
) -> DMResult:
    """Diebold-Mariano test on absolute errors with the Harvey-Leybourne-Newbold correction.

    ``errors_*`` are forecast errors (forecast - actual) of the two forecasts on the same targets, in the
    same order, or their per-target losses (the gate's pinball losses: non-negative, their own absolute
    values). Raises ValueError on mismatched lengths, fewer than 3 points or non-finite errors.
    When both losses are identical everywhere the test is uninformative: statistic 0, two-sided p-value 1.
    """
    from scipy.stats import t as student_t

    e1 = np.asarray(errors_model, dtype=np.float64).ravel()
    e2 = np.asarray(errors_other, dtype=np.float64).ravel()
    if e1.shape != e2.shape:
        raise ValueError(f"error series differ in length: {e1.size} vs {e2.size}")
    n = int(e1.size)
    if n < 3:
        raise ValueError(f"need at least 3 paired errors, got {n}")
    if not (np.isfinite(e1).all() and np.isfinite(e2).all()):
        raise ValueError("errors must be finite")
    h = int(horizon)
    if h < 1 or h >= n:
        raise ValueError(f"horizon must be in 1..{n - 1}, got {horizon}")
    d = np.abs(e1) - np.abs(e2)
    mean = float(d.mean())
    variance = _long_run_variance(d, h)
    if variance <= 0:  # d is constant: no evidence either way (or an exact tie)
        stat = 0.0 if mean == 0 else math.copysign(math.inf, mean)
    else:
        dm = mean / math.sqrt(variance / n)
        stat = dm * math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    p_worse = float(student_t.sf(stat, n - 1))  # 0 and 1 at an infinite statistic
    p_better = 1.0 - p_worse  # P(T <= stat): small when the model's loss is clearly lower
    return DMResult(
        statistic=float(stat),
        p_better=float(p_better),
        p_worse=float(p_worse),
        p_two_sided=float(min(1.0, 2.0 * min(p_better, p_worse))),
    )


def directional_test(
    predicted_moves: np.ndarray | list[float], actual_moves: np.ndarray | list[float]
) -> DirectionResult:
    """Exact one-sided binomial test that directions are right more often than a coin flip.

    ``*_moves`` are signed changes (forecast - last close, actual - last close). Hours where either move
    is exactly zero carry no direction and are left out (persistence predicts no move at all).
    """
    p = np.sign(np.asarray(predicted_moves, dtype=np.float64).ravel())
    a = np.sign(np.asarray(actual_moves, dtype=np.float64).ravel())
    if p.shape != a.shape:
        raise ValueError(f"move series differ in length: {p.size} vs {a.size}")
    keep = (p != 0) & (a != 0)
    n = int(keep.sum())
    hits = int((p[keep] == a[keep]).sum())
    return DirectionResult(hits=hits, n=n, p_value=binomial_p_value(hits, n))


def binomial_p_value(hits: int, n: int) -> float:
    """Exact one-sided ``P(X >= hits)`` for ``X ~ Binomial(n, 1/2)`` (1.0 when ``n == 0``)."""
    from scipy.stats import binomtest

    return float(binomtest(hits, n, 0.5, alternative="greater").pvalue) if n > 0 else 1.0


def skill_standard_error(
    errors_model: np.ndarray, errors_persistence: np.ndarray, *, horizon: int = 1
) -> float:
    """Standard error of ``skill = 1 - MAE_model / MAE_persistence``, treating ``MAE_persistence`` as fixed.

    ``skill = -mean(d) / MAE_p`` with ``d = |e_model| - |e_persistence|``, so its standard error is the
    (HAC, lag ``horizon - 1``) standard error of ``mean(d)`` divided by ``MAE_p``.
    """
    e1 = np.abs(np.asarray(errors_model, dtype=np.float64).ravel())
    e2 = np.abs(np.asarray(errors_persistence, dtype=np.float64).ravel())
    n = e1.size
    mae_p = float(e2.mean()) if n else 0.0
    if n < 3 or mae_p <= 0:
        return math.inf
    variance = _long_run_variance(e1 - e2, max(1, min(horizon, n - 1)))
    return float(math.sqrt(max(variance, 0.0) / n) / mae_p)


def point_evidence(pred: np.ndarray, actual: np.ndarray, last_close: np.ndarray, *, horizon: int = 1) -> dict:
    """The out-of-sample significance block of a metrics document for a point forecast vs persistence.

    ``{"dm_statistic", "dm_p_better", "dm_p_worse", "skill_se", "direction_hits", "direction_n",
    "direction_p_value"}`` (DM on absolute errors, HLN-corrected; exact binomial test on directions).
    """
    pred, actual, last_close = (np.asarray(a, dtype=np.float64).ravel() for a in (pred, actual, last_close))
    e_model, e_pers = pred - actual, last_close - actual
    dm = diebold_mariano(e_model, e_pers, horizon=horizon)
    direction = directional_test(pred - last_close, actual - last_close)
    return {
        "dm_statistic": dm.statistic,
        "dm_p_better": dm.p_better,
        "dm_p_worse": dm.p_worse,
        "skill_se": skill_standard_error(e_model, e_pers, horizon=horizon),
        "direction_hits": direction.hits,
        "direction_n": direction.n,
        "direction_p_value": direction.p_value,
    }


def verdict(
    p_better: float,
    p_worse: float,
    s: float,
    alpha: float = 0.05,
    baseline: str = "persistence",
    subject: str = "model",
    score: str = "skill",
) -> str:
    """One honest sentence about a pooled skill ``s`` vs ``baseline`` and its DM p-values."""
    if p_better < alpha:
        return f"{subject} beats {baseline} ({score} {s:+.4f}, DM p={p_better:.3g})"
    if p_worse < alpha:
        return f"{subject} is significantly WORSE than {baseline} ({score} {s:+.4f}, DM p={p_worse:.3g})"
    return (
        f"{subject} does NOT beat {baseline}: no significant difference ({score} {s:+.4f}, "
        f"DM p(better)={p_better:.3g}, p(worse)={p_worse:.3g})"
    )
