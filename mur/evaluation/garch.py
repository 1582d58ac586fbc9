"""Baseline (c): GARCH(1,1) with Student-t innovations (the ``arch`` library), what a quant would pick.

Fitted by maximum likelihood on the training span's hourly log returns only (zero mean, returns x100 for
the optimiser as arch's docs advise; the parameters are stored in log-return units), then run forward with
those fixed parameters through every later hour: ``v_t = omega + alpha r_t^2 + beta v_(t-1)`` is the
variance of the return of the hour after row ``t``, from the returns up to row ``t`` only. The variance of
the ``h``-hour log return after row ``t`` is the sum of the ``h`` per-step forecasts,
``sum_(k=1..h) [omega (1 + p + ... + p^(k-2)) + p^(k-1) v_t]`` with ``p = alpha + beta``; its quantiles are
those of a unit-variance Student-t with the fitted ``nu``, scaled to that variance (the sum of ``h``
t-distributed steps is not exactly t: the fatter tails of one step are kept at every horizon).

:class:`GarchBaseline` has :class:`mur.evaluation.intervals.EwmaBaseline`'s shape: ``fit`` on rows
``< train_end``, then ``sigma(rows, j)`` and ``log_return_quantiles(rows) -> (n, H, L)`` after any rows.
:class:`GarchParams` alone runs the recursion on any window of returns (e.g. a model's input window: a
window of a week forgets its starting variance as ``p^168``, ~0.2 for a typical ``p`` of 0.99).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter
from scipy.stats import t as student_t

SCALE = 100.0
"""Returns are multiplied by this for arch's optimiser (hourly log returns are ~0.005)."""


@dataclass(frozen=True)
class GarchParams:
    """Fitted GARCH(1,1)-t parameters in log-return units (``omega``: variance per hour)."""

    omega: float
    alpha: float
    beta: float
    nu: float

    @property
    def persistence(self) -> float:
        return self.alpha + self.beta

    @property
    def long_run_variance(self) -> float:
        """``omega / (1 - alpha - beta)``: the variance the forecasts revert to (the last-resort start)."""
        return self.omega / max(1.0 - self.persistence, 1e-6)

    def variance_path(self, returns: np.ndarray, start: float | None = None) -> np.ndarray:
        """``v (n,)``: ``v[t]`` the variance of the return after ``returns[t]``, from ``returns[: t + 1]``;
        ``start``: the variance before ``returns[0]`` (default: the long-run variance)."""
        r = np.asarray(returns, dtype=np.float64)
        v0 = self.long_run_variance if start is None else start
        v, _ = lfilter([1.0], [1.0, -self.beta], self.omega + self.alpha * r**2, zi=[self.beta * v0])
        return np.asarray(v)

    def horizon_variance(self, v_next: np.ndarray, hours: int) -> np.ndarray:
        """Variance of the ``hours``-hour log return from the next hour's variance ``v_next``."""
        p = self.persistence
        powers = p ** np.arange(hours)  # p^(k-1), k = 1..h
        carried = np.concatenate([[0.0], np.cumsum(powers)[:-1]])  # 1 + p + ... + p^(k-2)
        return self.omega * carried.sum() + powers.sum() * np.asarray(v_next, dtype=np.float64)

    def z(self, levels: Sequence[float]) -> np.ndarray:
        """Quantiles of the unit-variance Student-t at ``levels``."""
        return np.asarray(student_t.ppf(levels, self.nu) * np.sqrt((self.nu - 2.0) / self.nu))


def fit_garch(returns: np.ndarray) -> GarchParams:
    """Maximum-likelihood GARCH(1,1)-t (zero mean) on hourly log ``returns`` (x :data:`SCALE` for the fit)."""
    from arch import arch_model

    r = SCALE * np.asarray(returns, dtype=np.float64)
    model = arch_model(r, mean="Zero", vol="GARCH", p=1, q=1, dist="t", rescale=False)
    with warnings.catch_warnings():  # arch warns on a slow convergence; the estimates are still used
        warnings.simplefilter("ignore")
        fitted = model.fit(disp="off", show_warning=False)
    p = fitted.params
    return GarchParams(
        omega=float(p["omega"]) / SCALE**2,
        alpha=float(p["alpha[1]"]),
        beta=float(p["beta[1]"]),
        nu=float(p["nu"]),
    )


@dataclass
class GarchBaseline:
    """Baseline (c): GARCH(1,1)-t fitted on the training span, run forward with fixed parameters."""

    horizons: tuple[int, ...]
    levels: tuple[float, ...]
    params: GarchParams | None = None
    variance: np.ndarray | None = None  # (n_rows,) variance of the hour after each row

    def fit(self, close: np.ndarray, train_end: int) -> GarchBaseline:
        """Parameters from the returns of rows ``1 .. train_end - 1`` (both closes in ``[0, train_end)``),
        the variance of every row by the recursion, started at the training returns' variance."""
        logc = np.log(np.asarray(close, dtype=np.float64))
        r = np.diff(logc, prepend=logc[0])
        train = r[1:train_end]
        self.params = fit_garch(train)
        self.variance = self.params.variance_path(r, start=float(np.mean(train**2)))
        return self

    def sigma(self, rows: np.ndarray, j: int) -> np.ndarray:
        """Standard deviation of the log return to horizon ``j`` after each row."""
        assert self.params is not None and self.variance is not None, "fit first"
        return np.sqrt(self.params.horizon_variance(self.variance[np.asarray(rows)], self.horizons[j]))

    def log_return_quantiles(self, rows: np.ndarray) -> np.ndarray:
        """``(n, H, L)`` log-return quantiles after each of ``rows`` (the window's last candle)."""
        assert self.params is not None, "fit first"
        z = self.params.z(self.levels)
        return np.stack(
            [self.sigma(rows, j)[:, None] * z[None, :] for j in range(len(self.horizons))], axis=1
        )
