"""Online calibration of the served ranges: a quantile tracker per pair and horizon (pure functions).

The ONNX graph's ranges are split-conformal on a validation span (:func:`mur.evaluation.intervals.
block_conformal_scale`): right on average over hours like the validation span, wrong when the volatility regime
moves after it. Online, every resolved forecast corrects a **scale** ``s`` applied at serving to every
quantile's distance from the median, in log price (the graph's calibration is the start, ``s = 1``)::

    q' = median * (q / median) ** s          (lower' = med - s (med - lo) in log price, likewise upper)

**The update** is the quantile tracker of Angelopoulos, Candes & Tibshirani (2023, "Conformal PID control
for time series prediction", the P term; with a constant step it is also adaptive conformal inference,
Gibbs & Candes 2021, run on the score's scale instead of on the level). With ``err = 1`` when the served
range missed the outcome and ``alpha = 1 - level`` (0.10 for 90 % ranges), on the log scale
``l = log s``::

    l <- l + eta_h * (err - alpha)

A miss widens the range by ``exp(eta_h (1 - alpha))``, a hit narrows it by ``exp(-eta_h alpha)``: the scale
rests where misses happen a fraction ``alpha`` of the time. ``err`` is computed on the range **as served**
(the scale it had when it was made), and :func:`score` says how many of the *graph's* half-widths the outcome
lay from the median, so that ``err = score > s`` and "coverage without the scale" (``score > 1``) come from
the same stored forecast.

**Delayed feedback.** A forecast for ``h`` hours ahead is resolved ``h`` hours after it was served. As in
both papers' multi-step setting, the tracker of horizon ``h`` takes a step *when an outcome arrives*: steps
are indexed by resolution time (the target candle's close), and the forecast served at hour ``t`` uses the
scale made of every outcome known before ``t`` (those of forecasts made up to ``t - h``). Nothing waits for
or guesses an outcome. In :func:`replay` the outcome of the forecast made ``h`` steps earlier arrives just
before the forecast of the current step is served.

**Guarantee** (holds for any sequence of outcomes, no exchangeability): the sum of the steps is
``eta_h * sum(err - alpha) = l_T - l_0``. If the scores are bounded by ``B`` (``log B`` on this scale), ``l``
stays within ``[log b - eta_h (1 + d), log B + eta_h (1 + d)]`` for a delay of ``d`` steps (above ``log B`` no
range misses, so ``l`` only falls; below the smallest score every range misses, so it only rises; the
served scale lags the state by at most ``d`` steps). Hence over ``T`` resolved forecasts
``|miss rate - alpha| <= (l_max - l_min) / (eta_h T)``: long-run coverage is right, at a rate set by the
step. The scale is clipped to ``[min_scale, max_scale]``; the bound holds as long as the clip is not hit.

**Step per horizon**: ``eta_h = eta / sqrt(h)``. Outcomes of overlapping ``h``-hour windows are strongly
dependent (one crash is ~``h`` consecutive misses at ``h`` hours), so a 24 h tracker with the 1 h step would
overshoot by ~``24 eta`` after every shock; ``1/h`` would make it too slow to converge (the bound above grows
as ``1/eta_h``). ``1/sqrt(h)`` is the middle ground (``1/h`` left 24 h coverage at 0.86-0.89 on the tuning span); chosen
on a span before the replay's (benchmarks/online_calibration.py, docs/forecasts.md).

Every function here is pure: the state lives in PostgreSQL (:mod:`mur.db.calibration`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pydantic.dataclasses
from pydantic import Field

from mur.evaluation.intervals import CALIBRATION_RECIPE

TINY = 1e-12


def generation_for(levels: Sequence[float], recipe: str | None = None) -> str:
    """The tracker's generation: which ranges its scale corrects, the quantile levels and the offline
    calibration recipe (:data:`mur.evaluation.intervals.CALIBRATION_RECIPE`). Every hourly retrain of the
    same recipe shares it (the state carries over from champion to champion); a new recipe or other levels
    start a fresh tracker at scale 1."""
    offline = CALIBRATION_RECIPE if recipe is None else recipe
    return f"levels={','.join(f'{float(q):g}' for q in levels)};offline={offline}"


@pydantic.dataclasses.dataclass(frozen=True)
class OnlineParams:
    """How the tracker moves: nominal coverage, step and bounds of the scale (``0 < min_scale <= 1 <=
    max_scale``)."""

    level: float = Field(default=0.90, gt=0.0, lt=1.0)
    """Nominal coverage of the served range (the outer two quantile levels)."""
    eta: float = Field(default=0.02, gt=0.0)
    """Step on the log scale at 1 h; a miss widens the range by ``exp(eta (1 - alpha))`` (~1.8 %), a hit
    narrows it by ``exp(-eta alpha)`` (0.2 %). Chosen on a replay before the benchmark's (docs/forecasts.md):
    larger steps track coverage no better and cost interval score."""
    horizon_power: float = 0.5
    """``eta_h = eta / h ** horizon_power``."""
    min_scale: float = Field(default=0.25, gt=0.0, le=1.0)
    max_scale: float = Field(default=4.0, ge=1.0)

    @property
    def alpha(self) -> float:
        return 1.0 - self.level

    def eta_for(self, hours: int) -> float:
        """The step of horizon ``hours``."""
        return self.eta / float(max(int(hours), 1)) ** self.horizon_power


@dataclass(frozen=True)
class OnlineState:
    """One tracker (pair, horizon): the log scale, the integral of ``err - alpha`` and running counts of the
    resolved forecasts it saw, with the scale (as served) and without it (the graph's range)."""

    log_scale: float = 0.0
    integral: float = 0.0
    """``sum(err - alpha)`` over the steps: the tracker's integrator (``log_scale`` moved ``eta_h`` times it,
    up to the clip)."""
    resolved: int = 0
    covered: int = 0
    """Outcomes inside the range as served (with the scale it had then)."""
    covered_base: int = 0
    """Outcomes inside the graph's range (scale 1)."""
    winkler_sum: float = 0.0
    """Sum of Winkler scores of the served ranges, in log-price percent (100 x log of prices)."""
    winkler_base_sum: float = 0.0

    @property
    def scale(self) -> float:
        return math.exp(self.log_scale)

    @property
    def coverage(self) -> float | None:
        return self.covered / self.resolved if self.resolved else None

    @property
    def coverage_base(self) -> float | None:
        return self.covered_base / self.resolved if self.resolved else None


@dataclass(frozen=True)
class Outcome:
    """A resolved forecast of one horizon: the served median and range, the scale it was served with (1 for
    the graph's range) and the actual close. Prices (positive)."""

    median: float
    lower: float
    upper: float
    actual: float
    applied_scale: float = 1.0


def score(median: float, lower: float, upper: float, actual: float, applied_scale: float = 1.0) -> float:
    """How many of the graph's half-widths (log price) ``actual`` lies from ``median``, for a range served
    with ``applied_scale``: ``max(log(med / y) / log(med / lo), log(y / med) / log(hi / med)) * applied``.

    The served range covers ``y`` iff ``score <= applied_scale``; the graph's range iff ``score <= 1``."""
    m, y = math.log(median), math.log(actual)
    down = max(m - math.log(lower), TINY)
    up = max(math.log(upper) - m, TINY)
    return max((m - y) / down, (y - m) / up) * applied_scale


def scale_band(median: float, lower: float, upper: float, scale: float) -> tuple[float, float]:
    """``[lower, upper]`` with its distances from ``median`` in log price multiplied by ``scale``."""
    return median * (lower / median) ** scale, median * (upper / median) ** scale


def winkler_log(lower: float, upper: float, actual: float, alpha: float) -> float:
    """Winkler score of ``[lower, upper]`` in log-price percent: width + ``2/alpha`` x the miss."""
    lo, hi, y = (100.0 * math.log(v) for v in (lower, upper, actual))
    return (hi - lo) + (2.0 / alpha) * (max(lo - y, 0.0) + max(y - hi, 0.0))


def step(state: OnlineState, outcome: Outcome, hours: int, params: OnlineParams) -> OnlineState:
    """The state after one resolved forecast of horizon ``hours`` (see the module's docstring)."""
    applied = outcome.applied_scale if outcome.applied_scale > 0 else 1.0
    s = score(outcome.median, outcome.lower, outcome.upper, outcome.actual, applied)
    miss = 1.0 if s > applied else 0.0
    base_lo, base_hi = scale_band(outcome.median, outcome.lower, outcome.upper, 1.0 / applied)
    lo_log, hi_log = math.log(params.min_scale), math.log(params.max_scale)
    log_scale = min(max(state.log_scale + params.eta_for(hours) * (miss - params.alpha), lo_log), hi_log)
    return replace(
        state,
        log_scale=log_scale,
        integral=state.integral + miss - params.alpha,
        resolved=state.resolved + 1,
        covered=state.covered + int(miss == 0.0),
        covered_base=state.covered_base + int(s <= 1.0),
        winkler_sum=state.winkler_sum
        + winkler_log(outcome.lower, outcome.upper, outcome.actual, params.alpha),
        winkler_base_sum=state.winkler_base_sum + winkler_log(base_lo, base_hi, outcome.actual, params.alpha),
    )


@dataclass(frozen=True)
class Replay:
    """What :func:`replay` served: the scale of every step and whether each range covered."""

    scales: np.ndarray
    """(T,) scale applied to the forecast served at each step."""
    covered: np.ndarray
    """(T,) bool: the served (scaled) range covered the outcome."""
    covered_base: np.ndarray
    """(T,) bool: the graph's range (scale 1) covered it."""
    final: OnlineState


def replay(
    median: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    actual: np.ndarray,
    hours: int,
    params: OnlineParams,
    *,
    delay: int | None = None,
) -> Replay:
    """Serve hourly forecasts of one horizon in order with the online scale, feeding each outcome back
    ``delay`` steps after its forecast (default ``hours``: a forecast made at hour ``t`` for the close ``h``
    hours later is resolved at ``t + h``, just before the forecast of that hour is served).

    ``median``/``lower``/``upper``: the graph's quantiles (prices, scale 1) of the forecasts made at each
    step; ``actual``: their outcomes."""
    median, lower, upper, actual = (
        np.asarray(a, dtype=np.float64).reshape(-1) for a in (median, lower, upper, actual)
    )
    n = len(median)
    d = hours if delay is None else int(delay)
    if d < 1:
        raise ValueError(f"the delay must be at least one step, got {d}")
    state = OnlineState()
    scales = np.empty(n)
    served_lo, served_hi = np.empty(n), np.empty(n)
    for t in range(n + d):  # after the last step (t >= n): the outcomes still in flight, no forecast left
        k = t - d  # the forecast whose outcome arrives now
        if k >= 0:
            state = step(
                state, Outcome(median[k], served_lo[k], served_hi[k], actual[k], scales[k]), hours, params
            )
        if t < n:
            scales[t] = state.scale
            served_lo[t], served_hi[t] = scale_band(median[t], lower[t], upper[t], scales[t])
    return Replay(
        scales=scales,
        covered=(actual >= served_lo) & (actual <= served_hi),
        covered_base=(actual >= lower) & (actual <= upper),
        final=state,
    )


def running_coverage(covered: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean of ``covered`` over ``window`` steps (shorter at the start)."""
    import pandas as pd

    series = pd.Series(np.asarray(covered, dtype=np.float64))
    return series.rolling(max(int(window), 1), min_periods=1).mean().to_numpy()
