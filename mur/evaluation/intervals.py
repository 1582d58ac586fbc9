"""Interval forecasts: scores, conformal calibration and the two naive interval baselines.

Scores (lower is better, all on the same targets):

* **pinball loss** of quantile ``q`` at level ``tau`` for outcome ``y``: ``max(tau (y - q), (tau - 1)(y - q))``,
  averaged over levels and hours;
* **Winkler (interval) score** of ``[lo, hi]`` at nominal coverage ``1 - alpha``:
  ``(hi - lo) + 2/alpha (lo - y)`` if ``y < lo``, ``+ 2/alpha (y - hi)`` if ``y > hi``: width plus a penalty
  for every miss, so a narrow interval only wins when it is also right;
* **coverage** (share of outcomes inside) and **mean width** relative to the last close.

Baselines, both fitted on the training span only:

* **(a) naive**: fixed empirical quantiles of past ``h``-hour log returns;
* **(b) EWMA volatility**: ``sigma^2_t`` = EWMA (half-life 12 h) of ``(r^2 + Parkinson range variance) / 2``,
  times an hour-of-day factor (mean variance by UTC hour / overall mean), summed over the ``h`` hours ahead;
  quantiles of the returns standardized by it.

``interval skill = 1 - Winkler_model / Winkler_(a)`` (> 0: narrower or better-placed ranges than the naive
one). :func:`block_conformal_scale` is the split-conformal calibration folded into the exported model: it
chooses its calibration span per horizon (enough independent outcomes) and counts its finite-sample rank in
independent outcomes (:func:`block_conformal_quantile`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

EWMA_HALF_LIFE_H = 12.0
MIN_INDEPENDENT_OUTCOMES = 240
"""Non-overlapping outcomes a horizon's conformal scale is taken on, at least: with ``n`` of them the
coverage of the calibrated range has a sampling error of about ``sqrt(0.09 / n)`` (0.019 for 240, 0.027 for
120; 0.037 for the ~65 days of a year's validation span at 24 h)."""
CALIBRATION_RECIPE = f"block-conformal-{MIN_INDEPENDENT_OUTCOMES}-subsampled"
"""Names the offline calibration folded into the graph: the online scale corrects *this* recipe's ranges
(:func:`mur.evaluation.online_conformal.generation_for`); change it when the recipe changes."""


def pinball_per_target(quantiles: np.ndarray, y: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Pinball loss of each outcome, averaged over ``levels (L,)``: ``quantiles (n, L)``, ``y (n,)`` → ``(n,)``."""
    diff = np.asarray(y, dtype=np.float64).reshape(-1, 1) - np.asarray(quantiles, dtype=np.float64)
    tau = np.asarray(levels, dtype=np.float64).reshape(1, -1)
    return np.asarray(np.maximum(tau * diff, (tau - 1.0) * diff).mean(axis=1))


def winkler_scores(lo: np.ndarray, hi: np.ndarray, y: np.ndarray, alpha: float | np.ndarray) -> np.ndarray:
    """Per-outcome Winkler scores of intervals ``[lo, hi]`` with nominal coverage ``1 - alpha`` (one, or one
    per outcome)."""
    lo, hi, y = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (lo, hi, y))
    return (hi - lo) + (2.0 / alpha) * np.maximum(lo - y, 0.0) + (2.0 / alpha) * np.maximum(y - hi, 0.0)


def interval_metrics(
    quantiles: np.ndarray, y: np.ndarray, last_close: np.ndarray, levels: Sequence[float]
) -> dict[str, float]:
    """Coverage, mean relative width, Winkler score and pinball loss of price quantiles ``(n, L)``; the
    interval is the outer two levels."""
    q = np.asarray(quantiles, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    lo, hi = q[:, 0], q[:, -1]
    alpha = 1.0 - (levels[-1] - levels[0])
    return {
        "coverage": float(np.mean((y >= lo) & (y <= hi))),
        "width": float(np.mean((hi - lo) / np.asarray(last_close, dtype=np.float64).reshape(-1))),
        "winkler": float(np.mean(winkler_scores(lo, hi, y, alpha))),
        "pinball": float(pinball_per_target(q, y, levels).mean()),
    }


def reliability(quantiles: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Observed frequency of outcomes ``y (n,)`` at or below each of the quantiles ``(n, L)``: ``(L,)``, the
    levels themselves for a calibrated forecast (a reliability diagram plots one against the other)."""
    y = np.asarray(y, dtype=np.float64).reshape(-1, 1)
    return np.mean(y <= np.asarray(quantiles, dtype=np.float64), axis=0)


def conformal_scores(q: np.ndarray, y: np.ndarray, median_index: int) -> np.ndarray:
    """Nonconformity scores ``(n, H)`` of calibration quantiles ``q (n, H, L)`` and outcomes ``y (n, H)`` (any
    monotone transform of price, e.g. log returns): how many of the model's own half-widths ``y`` lies from the
    median, ``max((med - y) / (med - lo), (y - med) / (hi - med))``. With ``k`` a high enough quantile of
    them, ``[med - k (med - lo), med + k (hi - med)]`` covers a new outcome with probability at least the
    coverage asked when calibration and new scores are exchangeable (see docs/forecasts.md for what that
    means for time series)."""
    q = np.asarray(q, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    med, lo, hi = q[..., median_index], q[..., 0], q[..., -1]
    tiny = 1e-12
    return np.maximum((med - y) / np.maximum(med - lo, tiny), (y - med) / np.maximum(hi - med, tiny))


def block_conformal_quantile(scores: np.ndarray, hours: int, coverage: float) -> float:
    """Split-conformal threshold of the scores ``(n,)`` of consecutive hourly windows whose outcomes lie
    ``hours`` ahead, counted in *independent* outcomes.

    Windows ``hours`` apart have non-overlapping outcomes. For each of the ``hours`` offsets, the scores of
    the windows ``n-1-o, n-1-o-hours, ...`` (``m`` of them, about ``n / hours``) are the split-conformal
    sample of that offset: its ``ceil((m + 1) coverage)``-th smallest score covers a new outcome with
    probability at least ``coverage`` when those ``m`` outcomes and the new one are exchangeable. The
    threshold is the mean over the offsets (every window is used once; the finite-sample correction
    ``+1`` is that of ``m`` outcomes, not of ``n`` dependent ones). ``hours = 1``: plain split conformal, the
    ``ceil((n + 1) coverage)``-th smallest score."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    step = max(1, int(hours))
    ks = []
    for offset in range(min(step, len(s))):
        sample = np.sort(s[len(s) - 1 - offset :: -step])
        m = len(sample)
        ks.append(sample[min(m, math.ceil((m + 1) * coverage)) - 1])
    return float(np.clip(np.mean(ks), 1e-3, 1e3)) if ks else 1.0


def calibration_rows(
    n_val: int, n_before: int, hours: int, min_outcomes: int = MIN_INDEPENDENT_OUTCOMES
) -> int:
    """How many hourly windows, ending with the validation span, calibrate horizon ``hours``: the validation
    span (``n_val`` windows), extended back over the ``n_before`` windows before it until it holds
    ``min_outcomes`` non-overlapping ``hours``-hour outcomes (``min_outcomes * hours`` windows)."""
    return int(min(n_val + n_before, max(n_val, min_outcomes * int(hours))))


def block_conformal_scale(
    q: np.ndarray,
    y: np.ndarray,
    n_val: int,
    horizons: Sequence[int],
    median_index: int,
    coverage: float,
    min_outcomes: int = MIN_INDEPENDENT_OUTCOMES,
) -> np.ndarray:
    """Split-conformal scale per horizon on a span that holds enough *independent* outcomes, its rank
    counted in independent outcomes (:func:`block_conformal_quantile`).

    ``q (n, H, L)`` and ``y (n, H)``: the calibration candidates in time order, the last ``n_val`` of them the
    validation windows (the rest: the training span before them). Outcomes of overlapping ``h``-hour windows
    are dependent: a validation span of ~1,500 hours holds ~1,500 one-hour outcomes but only ~65 independent
    24 h ones, too few for a 90 % quantile (and one crash in them sets it). Each horizon ``h`` is calibrated on
    the last :func:`calibration_rows` windows: the validation span when it holds ``min_outcomes`` (1 h and 4 h
    with a year of training), else extended back into the training span (24 h: the last 240 days). Those
    older windows were seen by the fit (the volatility structure's least squares over ~7,000 hours and the
    recurrent core's epochs), so their scores may be slightly optimistic; the test span is never used."""
    scores = conformal_scores(q, y, median_index)
    n = scores.shape[0]
    k = np.empty(scores.shape[1])
    for j, hours in enumerate(horizons):
        rows = calibration_rows(n_val, n - n_val, hours, min_outcomes)
        k[j] = block_conformal_quantile(scores[n - rows :, j], hours, coverage)
    return k


def naive_quantiles(
    closes: np.ndarray, train_end: int, horizons: Sequence[int], levels: Sequence[float]
) -> np.ndarray:
    """Baseline (a): empirical quantiles ``(H, L)`` of the ``h``-hour log returns whose two closes both lie
    in the training span ``[0, train_end)``."""
    c = np.log(np.asarray(closes, dtype=np.float64)[:train_end])
    out = np.empty((len(horizons), len(levels)))
    for j, h in enumerate(horizons):
        out[j] = np.quantile(c[h:] - c[:-h], levels)
    return out


@dataclass
class EwmaBaseline:
    """Baseline (b): EWMA volatility x hour-of-day factor, quantiles of standardized returns."""

    horizons: tuple[int, ...]
    levels: tuple[float, ...]
    half_life: float = EWMA_HALF_LIFE_H
    variance: np.ndarray | None = None  # (n_rows,) EWMA variance through each row
    hour: np.ndarray | None = None
    factor_ahead: np.ndarray | None = None  # (H, 24) mean hour factor over the h hours after each hour
    z: np.ndarray | None = None  # (H, L)

    def fit(
        self, close: np.ndarray, high: np.ndarray, low: np.ndarray, hour: np.ndarray, train_end: int
    ) -> EwmaBaseline:
        """Variance for every row (causal), factors and standardized quantiles from rows ``< train_end``."""
        import pandas as pd
        from scipy.signal import lfilter

        close, high, low = (np.asarray(a, dtype=np.float64) for a in (close, high, low))
        hour = np.asarray(hour).astype(int) % 24
        r = np.diff(np.log(close), prepend=np.log(close[0]))
        v = 0.5 * r**2 + 0.5 * np.log(high / low) ** 2 / (4.0 * math.log(2.0))
        lam = 0.5 ** (1.0 / self.half_life)
        # e[t] = lam e[t-1] + (1 - lam) v[t] (causal), from e[0]: the mean of the first day's rows
        e0 = v[: max(1, min(train_end, 24))].mean()
        e = np.concatenate([[e0], lfilter([1.0 - lam], [1.0, -lam], v[1:], zi=[lam * e0])[0]])
        per_hour = pd.Series(v[:train_end]).groupby(hour[:train_end]).mean().reindex(range(24)).to_numpy()
        per_hour = np.where(np.isfinite(per_hour), per_hour, np.nanmean(per_hour))
        f = per_hour / per_hour.mean()
        self.factor_ahead = np.stack(
            [np.array([f[(k + np.arange(1, h + 1)) % 24].mean() for k in range(24)]) for h in self.horizons]
        )
        self.variance, self.hour = e, hour
        logc = np.log(close)
        z = np.empty((len(self.horizons), len(self.levels)))
        for j, h in enumerate(self.horizons):
            rows = np.arange(0, train_end - h)
            std = (logc[rows + h] - logc[rows]) / self.sigma(rows, j)
            z[j] = np.quantile(std, self.levels)
        self.z = z
        return self

    def sigma(self, rows: np.ndarray, j: int) -> np.ndarray:
        """Standard deviation of the log return to horizon ``j`` after each row."""
        assert self.variance is not None and self.hour is not None and self.factor_ahead is not None
        h = self.horizons[j]
        return np.sqrt(self.variance[rows] * h * self.factor_ahead[j, self.hour[rows]])

    def log_return_quantiles(self, rows: np.ndarray) -> np.ndarray:
        """``(n, H, L)`` log-return quantiles after each of ``rows`` (the window's last candle)."""
        assert self.z is not None
        return np.stack(
            [self.sigma(rows, j)[:, None] * self.z[j][None, :] for j in range(len(self.horizons))], axis=1
        )
