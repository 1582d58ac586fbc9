"""Acting on the ranges: a volatility-targeting sizing rule read from a horizon's quantiles, and its costs.

* **Forecast volatility** of horizon ``h`` (per sqrt(hour), so horizons compare):
  ``log(hi / lo) / ((z_hi - z_lo) sqrt(h))``, the central interval's width in log price over the matching
  span of the *normal* distribution (``z = Phi^-1(level)`` of the outer two levels). Annualised: times
  ``sqrt(HOURS_PER_YEAR)``.
* **Exposure** (a fraction of equity in the pair) ``= min(cap, target_vol / forecast_vol)``, decided every
  ``h`` hours from the forecast made then and held in between; long only (the ranges say how much risk, not
  which way). A flat range (zero width) gives the cap, a missing one (NaN) no exposure.
* **Costs**: ``fee_bps + slippage_bps`` basis points of equity on every change ``|delta exposure|``
  (entering from cash included). Hour ``t`` returns ``exposure_t * r_t - cost_t``.

Moreira & Muir, "Volatility-Managed Portfolios" (J. Finance 2017) for the rule; turnover is its known
weakness, hence the costs on every change. Pure functions: the backtest, the API and the dashboard share them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

HOURS_PER_YEAR = 24 * 365
"""Crypto trades every hour of the year: the annualisation of hourly returns."""


@dataclass(frozen=True)
class SizingRule:
    """The rule's parameters; their defaults and bounds: the ``strategy`` settings group
    (``MUR_STRATEGY_*``, :meth:`from_settings`)."""

    target_vol: float
    """Annualised volatility aimed at."""
    cap: float
    """Largest exposure (1: no leverage)."""
    horizon: int
    """Hours between decisions, and the horizon whose range is read."""
    fee_bps: float
    slippage_bps: float
    """Fee and slippage in basis points of the notional traded."""

    @property
    def cost_rate(self) -> float:
        """Cost per unit of turnover (fraction of equity per unit of exposure changed)."""
        return (self.fee_bps + self.slippage_bps) / 1e4

    @classmethod
    def from_settings(cls, settings: Any) -> SizingRule:
        """The rule of ``settings.strategy`` (:class:`mur.settings.Settings`): ``strategy_<field>`` each."""
        return cls(**{k: getattr(settings.strategy, f"strategy_{k}") for k in cls.__dataclass_fields__})


@dataclass
class StrategyResult:
    """Hour by hour: the asset's return, the exposure held, its change, the costs and the strategy."""

    asset: pd.Series
    exposure: pd.Series
    turnover: pd.Series
    """``|exposure_t - exposure_(t-1)|`` (the first from cash)."""
    costs: pd.Series
    """Costs as a fraction of the equity before hour ``t``."""
    returns: pd.Series
    equity: pd.Series
    """Growth of 1 unit of starting equity, after hour ``t``."""
    fees: float
    """Costs paid in units of starting equity."""


def forecast_volatility(quantiles: np.ndarray, levels: Sequence[float], horizon: int) -> np.ndarray:
    """Hourly volatility ``(n,)`` (per sqrt(hour)) from one horizon's price (or any positive) quantiles
    ``(n, L)`` at ``levels``: the outer two levels' log width over the normal span, over ``sqrt(horizon)``."""
    from scipy.stats import norm

    q = np.asarray(quantiles, dtype=np.float64)
    span = float(norm.ppf(levels[-1]) - norm.ppf(levels[0]))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(np.log(q[:, -1] / q[:, 0]) / (span * np.sqrt(horizon)))


def exposures(hourly_vol: np.ndarray, rule: SizingRule) -> np.ndarray:
    """Exposure ``(n,)`` for consecutive hours: decided at hours ``0, h, 2h, ...`` from that hour's forecast
    volatility (:func:`forecast_volatility`), held until the next decision; an hour's value never depends on
    a later forecast."""
    vol = np.asarray(hourly_vol, dtype=np.float64) * np.sqrt(HOURS_PER_YEAR)
    with np.errstate(divide="ignore", invalid="ignore"):
        size = np.where(vol > 0, rule.target_vol / vol, np.inf)
    size = np.where(np.isnan(vol), 0.0, np.minimum(rule.cap, size))
    return np.asarray(size[np.arange(len(size)) // rule.horizon * rule.horizon])


def simulate(returns: pd.Series | np.ndarray, exposure: np.ndarray, rule: SizingRule) -> StrategyResult:
    """Hold ``exposure[t]`` over the simple return ``returns[t]`` of each hour, paying :attr:`cost_rate` on
    every change of exposure."""
    asset = returns if isinstance(returns, pd.Series) else pd.Series(np.asarray(returns, dtype=np.float64))
    e = pd.Series(np.asarray(exposure, dtype=np.float64), index=asset.index)
    turnover = e.diff().fillna(e).abs()
    costs = turnover * rule.cost_rate
    strat = e * asset - costs
    equity = (1.0 + strat).cumprod()
    before = equity.shift(1, fill_value=1.0)
    return StrategyResult(asset, e, turnover, costs, strat, equity, float((costs * before).sum()))


def performance(result: StrategyResult) -> dict[str, float]:
    """Total return, annualised volatility, Sharpe and Sortino (annualised, zero risk-free rate), max drawdown
    (a negative fraction), turnover (sum of ``|delta exposure|``), fees paid and mean exposure."""
    import empyrical as ep

    r = result.returns.to_numpy()
    ann = {"annualization": HOURS_PER_YEAR}
    return {
        "hours": len(r),
        "total_return": float(result.equity.iloc[-1] - 1.0) if len(r) else 0.0,
        "ann_vol": float(ep.annual_volatility(r, **ann)),
        "sharpe": float(ep.sharpe_ratio(r, **ann)),
        "sortino": float(ep.sortino_ratio(r, **ann)),
        "max_drawdown": float(ep.max_drawdown(r)),
        "turnover": float(result.turnover.sum()),
        "fees": result.fees,
        "mean_exposure": float(result.exposure.mean()),
    }
