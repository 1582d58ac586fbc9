"""Does acting on the ranges pay? The sizing rule (:mod:`mur.evaluation.sizing`) walked forward on the
backtest's out-of-sample forecasts, after fees: paper, not advice.

Row ``i`` of the pooled :class:`~mur.evaluation.backtest.FoldForecasts` is the forecast made from the candles
before hour ``t_i`` by the fold's model (trained before its origin); it sizes the exposure held over hour
``t_i`` (return ``close(t_i) / close(t_i - 1) - 1``), decided every ``rule.horizon`` hours. The same rule is
sized by the model's range, by the EWMA x hour-of-day baseline's and by GARCH(1,1)-t's (both fitted before
each fold's origin), next to buy & hold. The Sharpe difference of the model-sized rule vs each other one
comes with a stationary-bootstrap confidence interval (``arch``; paired hours, the expected block length
Politis-White's estimate, at least the rule's horizon): the model-sized rule "beats" another only when that
interval lies above 0.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mur.errors import DataValidationError
from mur.evaluation.sizing import (
    HOURS_PER_YEAR,
    SizingRule,
    StrategyResult,
    exposures,
    forecast_volatility,
    performance,
    simulate,
)

if TYPE_CHECKING:
    from mur.evaluation.backtest import FoldForecasts, TrainFn

SIZED_BY = {"model": "model-sized", "ewma": "EWMA-sized", "garch": "GARCH-sized"}
STRATEGIES = {**SIZED_BY, "buy_hold": "buy & hold"}
COLUMNS = (
    ("total_return", "total ret.", "+.1%"),
    ("ann_vol", "ann. vol", ".1%"),
    ("sharpe", "Sharpe", "+.2f"),
    ("sortino", "Sortino", "+.2f"),
    ("max_drawdown", "max DD", ".1%"),
    ("turnover", "turnover", ".1f"),
    ("fees", "fees", ".2%"),
    ("mean_exposure", "mean exp.", ".2f"),
)
LABEL = "paper, not advice"


def strategies(f: FoldForecasts, rule: SizingRule) -> dict[str, StrategyResult]:
    """Each sizing of the rule, and buy & hold (charged its one entry), hour by hour."""
    if rule.horizon not in f.horizons or 1 not in f.horizons:
        raise DataValidationError(
            f"the rule reads the {rule.horizon} h range and hourly returns: the model forecasts "
            f"{', '.join(map(str, f.horizons))} h (set MUR_STRATEGY_HORIZON to one of them)"
        )
    j = f.horizons.index(rule.horizon)
    r = pd.Series(
        f.targets[:, f.horizons.index(1)] / f.last_close - 1.0, index=pd.DatetimeIndex(f.timestamps)
    )
    out = {
        name: simulate(
            r, exposures(forecast_volatility(f.quantiles[name][:, j], f.levels, rule.horizon), rule), rule
        )
        for name in SIZED_BY
        if name in f.quantiles
    }
    return out | {"buy_hold": simulate(r, np.ones(len(r)), rule)}


def sharpe_difference(
    a: np.ndarray, b: np.ndarray, horizon: int, reps: int = 1000, seed: int = 0
) -> dict[str, float]:
    """Annualised Sharpe of ``a`` minus that of ``b`` (paired hourly returns) with a 95 % stationary-bootstrap
    interval."""
    import empyrical as ep
    from arch.bootstrap import StationaryBootstrap, optimal_block_length

    def diff(x: np.ndarray, y: np.ndarray) -> float:
        return float(
            ep.sharpe_ratio(x, annualization=HOURS_PER_YEAR)
            - ep.sharpe_ratio(y, annualization=HOURS_PER_YEAR)
        )

    d = a - b
    with np.errstate(invalid="ignore", divide="ignore"):  # identical sizings: d = 0, no estimate
        estimate = float(np.nan_to_num(optimal_block_length(np.column_stack([d, d**2]))["stationary"].max()))
    block = max(horizon, math.ceil(estimate))
    bs = StationaryBootstrap(block, a, b, seed=seed)
    lo, hi = bs.conf_int(lambda x, y: np.array([diff(x, y)]), reps=reps, method="percentile")[:, 0]
    return {"difference": diff(a, b), "ci_low": float(lo), "ci_high": float(hi), "block_hours": block}


def verdict(vs: dict[str, dict[str, float]]) -> str:
    """One honest line: does the model-sized rule beat each baseline-sized one (and buy & hold) after fees?"""
    parts = [
        f"the model-sized rule {'beats' if d['ci_low'] > 0 else 'does NOT beat'} "
        f"{f'the {SIZED_BY[k]} rule' if k in SIZED_BY else STRATEGIES[k]} after fees (Sharpe "
        f"{d['difference']:+.2f}, 95 % CI [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}])"
        for k, d in vs.items()
    ]
    return f"{LABEL}: " + "; ".join(parts)


def strategy_report(
    f: FoldForecasts, rule: SizingRule, reps: int = 1000
) -> tuple[dict[str, Any], dict[str, StrategyResult]]:
    """The table's figures per strategy, the Sharpe differences vs each baseline-sized rule and the verdict
    (JSON-safe), and the hour-by-hour results (for :func:`chart`)."""
    results = strategies(f, rule)
    model = results["model"].returns.to_numpy()
    vs: dict[str, dict[str, float]] = {
        k: sharpe_difference(model, results[k].returns.to_numpy(), rule.horizon, reps)
        for k in ("ewma", "garch", "buy_hold")
        if k in results
    }
    t = pd.DatetimeIndex(f.timestamps)
    return {
        "label": LABEL,
        "rule": {k: getattr(rule, k) for k in rule.__dataclass_fields__},
        "start": t[0].isoformat() + "Z",
        "end": (t[-1] + pd.Timedelta(hours=1)).isoformat() + "Z",
        "strategies": {k: performance(r) for k, r in results.items()},
        "sharpe_vs": vs,
        "beats": {k: bool(d["ci_low"] > 0) for k, d in vs.items()},
        "verdict": verdict(vs),
    }, results


def describe(rule: SizingRule) -> str:
    """The rule's parameters in words."""
    return (
        f"exposure = min({rule.cap:g}, {rule.target_vol:.0%} / the {rule.horizon} h range's volatility), decided "
        f"every {rule.horizon} h, long only, {rule.fee_bps:g} bps fee + {rule.slippage_bps:g} bps slippage on "
        "every change"
    )


def table(report: dict[str, Any]) -> str:
    """The strategies' figures as a plain-text table (the CLI and the benchmark print it)."""
    head = f"{'strategy':<12}" + "".join(f"{title:>11}" for _, title, _ in COLUMNS)
    rows = [
        f"{STRATEGIES[k]:<12}" + "".join(f"{format(p[key], spec):>11}" for key, _, spec in COLUMNS)
        for k, p in report["strategies"].items()
    ]
    return "\n".join([head, "-" * len(head), *rows])


def chart(results: dict[str, StrategyResult], path: Path, title: str) -> None:
    """Equity (log scale), drawdown and exposure of each strategy over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (eq, dd, ex) = plt.subplots(3, 1, figsize=(11, 9), sharex=True, height_ratios=(3, 2, 1.5))
    for k, r in results.items():
        eq.plot(r.equity.index, r.equity, label=STRATEGIES[k], lw=1)
        dd.plot(r.equity.index, r.equity / r.equity.cummax() - 1.0, lw=1)
        ex.plot(r.exposure.index, r.exposure, lw=0.8)
    eq.set(ylabel="equity (start 1)", title=f"{title} ({LABEL})")
    dd.set(ylabel="drawdown")
    ex.set(ylabel="exposure")
    eq.legend(loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def local_trainer(settings: Any, pair: str, epochs: int | None = None, **overrides: Any) -> TrainFn:
    """A fold's training for :func:`~mur.evaluation.backtest.run_backtest`: the driver's stages (fit,
    calibrate, export, evaluate) on the fold's candles, locally, nothing registered."""
    import tempfile

    from mur.training.driver import train_and_register
    from mur.training.loop import LocalFit

    fold_settings = settings.replace(train_days=None)  # a fold trains on all of its slice

    def train(history: pd.DataFrame) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            train_and_register(
                fold_settings,
                pair,
                fit=LocalFit(),
                data_csv=history,
                out_dir=Path(tmp),
                register=False,
                epochs=epochs,
                emit=lambda _m: None,
                **overrides,
            )
            return (Path(tmp) / "model.onnx").read_bytes()

    return train
