"""Metrics and naive baselines, always on exactly the same targets as the model.

Crypto prices are close to a random walk, so every report puts the model next to *persistence*
(next close = last close) and a linear regression on the same windows; ``skill`` is
``1 − MAE_model / MAE_persistence`` (> 0 beats persistence, < 0 does not).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mur.evaluation.intervals import EwmaBaseline, interval_metrics, naive_quantiles, winkler_scores
from mur.evaluation.significance import diebold_mariano, point_evidence, skill_standard_error
from mur.model.features import (
    CLOSE_IDX,
    Dataset,
    FeatureSpec,
    denormalize_outputs,
    normalize_inputs,
    normalize_targets,
)


def regression_metrics(pred: np.ndarray, actual: np.ndarray, last_close: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, MAPE (%) and directional accuracy (sign of predicted vs actual change from last close).

    A forecast of "no change" never counts as a correct direction (so persistence scores ~0 there).
    """
    pred, actual, last_close = (
        np.asarray(a, dtype=np.float64).reshape(-1) for a in (pred, actual, last_close)
    )
    err = pred - actual
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mape": float(np.mean(np.abs(err) / np.abs(actual)) * 100.0),
        "directional_accuracy": float(np.mean(np.sign(pred - last_close) == np.sign(actual - last_close))),
    }


def persistence_forecast(x: np.ndarray) -> np.ndarray:
    """Next close = last close of each raw window."""
    return x[:, -1, CLOSE_IDX].astype(np.float64)


class LinearBaseline:
    """Ridge-stabilized least squares on the flattened price columns of each window (relative to the last
    close), fitted on the training windows only: an autoregressive linear model on the same windows.

    Calendar columns are left out on purpose: a linear term in "month" extrapolates wildly on months the
    training span never saw.
    """

    def __init__(self, seq_len: int, ridge: float = 1e-3) -> None:
        self.spec = FeatureSpec(seq_len=seq_len, normalization="relative")
        self.ridge = ridge
        self.coef: np.ndarray | None = None

    def _design(self, x: np.ndarray) -> np.ndarray:
        z = normalize_inputs(x, self.spec)[..., 4:].reshape(len(x), -1).astype(np.float64)
        return np.hstack([z, np.ones((len(z), 1))])

    def fit(self, x: np.ndarray, y: np.ndarray) -> LinearBaseline:
        a = self._design(x)
        t = normalize_targets(y, x, self.spec).astype(np.float64)
        reg = self.ridge * len(a) * np.eye(a.shape[1])
        reg[-1, -1] = 0.0  # do not shrink the intercept
        self.coef = np.linalg.lstsq(a.T @ a + reg, a.T @ t, rcond=None)[0]
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        assert self.coef is not None, "fit first"
        return denormalize_outputs(self._design(x) @ self.coef, x, self.spec)


def skill(model_mae: float, persistence_mae: float) -> float:
    """1 − MAE_model / MAE_persistence."""
    return float(1.0 - model_mae / persistence_mae) if persistence_mae > 0 else 0.0


def evaluate_all(
    model_pred: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, linear_pred: np.ndarray
) -> dict[str, object]:
    """Model, persistence and linear metrics on the same test targets, plus skill and a verdict."""
    last = persistence_forecast(x_test)
    model = regression_metrics(model_pred, y_test, last)
    pers = regression_metrics(last, y_test, last)
    lin = regression_metrics(linear_pred, y_test, last)
    s = skill(model["mae"], pers["mae"])
    evidence = point_evidence(model_pred, y_test, last)
    if not math.isfinite(evidence["skill_se"]):
        evidence["skill_se"] = None
    return {
        "model": model,
        "persistence": pers,
        "linear": lin,
        "skill": s,
        "beats_persistence": bool(s > 0),
        "n_test": int(len(y_test)),
        "significance": evidence,
    }


def evaluate_horizons(
    quantiles: np.ndarray, ds: Dataset, idx: np.ndarray, levels: tuple[float, ...]
) -> list[dict]:
    """Per horizon, on the same targets: the median vs persistence and the interval vs baselines (a) naive
    and (b) EWMA (:func:`horizon_scores`).

    ``quantiles`` are the model's price quantiles ``(n, H, L)`` for the windows ``idx`` of ``ds``. Both
    baselines are fitted on the candles before the first of these targets.
    """
    idx = np.asarray(idx)
    return horizon_scores(
        quantiles,
        ds.horizon_targets[idx],
        persistence_forecast(ds.x[idx]),
        horizon_baselines(ds, idx, levels),
        ds.horizons,
        levels,
    )


def horizon_baselines(ds: Dataset, idx: np.ndarray, levels: tuple[float, ...]) -> dict[str, np.ndarray]:
    """Price quantiles ``(n, H, L)`` of baselines (a) ``naive``, (b) ``ewma`` and (c) ``garch`` (GARCH(1,1)-t,
    :class:`mur.evaluation.garch.GarchBaseline`) for the windows ``idx`` of ``ds``, fitted on every candle up
    to the first forecast's origin."""
    from mur.evaluation.garch import GarchBaseline

    assert ds.features is not None and ds.row_hour is not None
    rows = ds.last_row(np.asarray(idx))
    train_end, names = int(rows[0]) + 1, list(ds.feature_names)
    close = ds.features[:, CLOSE_IDX]
    high, low = ds.features[:, names.index("high")], ds.features[:, names.index("low")]
    horizons, levels = tuple(ds.horizons), tuple(levels)
    last = close[rows][:, None, None]
    naive = naive_quantiles(close, train_end, horizons, levels)
    ewma = EwmaBaseline(horizons, levels).fit(close, high, low, ds.row_hour, train_end)
    garch = GarchBaseline(horizons, levels).fit(close, train_end)
    return {
        "naive": last * np.exp(naive[None, :, :]),
        "ewma": last * np.exp(ewma.log_return_quantiles(rows)),
        "garch": last * np.exp(garch.log_return_quantiles(rows)),
    }


def horizon_scores(
    quantiles: np.ndarray,
    targets: np.ndarray,
    last: np.ndarray,
    base: dict[str, np.ndarray],
    horizons: tuple[int, ...],
    levels: tuple[float, ...],
    *,
    tests: bool = True,
) -> list[dict]:
    """Per horizon: the median vs persistence (point metrics, skill, DM and binomial tests) and the interval
    vs each baseline of ``base`` (``naive``, ``ewma``, ``garch``): coverage, width, Winkler and pinball of the
    model's ``interval`` and of each baseline on the same outcomes, the interval skills (``interval_skill``: vs
    ``naive``; ``interval_skill_vs_<name>``: vs the others) with their standard errors and DM tests on the
    per-target Winkler scores; without ``tests``, the interval scores and skills alone. ``quantiles`` and
    ``base[...]``: ``(n, H, L)``; ``targets``: ``(n, H)``; ``last``: the last closes ``(n,)``."""
    mid = levels.index(0.5)
    alpha = 1.0 - (levels[-1] - levels[0])
    sfx = {k: "" if k == "naive" else f"_vs_{k}" for k in base}  # each baseline's key suffix
    out = []
    for j, hours in enumerate(horizons):
        y, q = targets[:, j], np.asarray(quantiles)[:, j, :]
        predictors = {"interval": q} | {k: b[:, j, :] for k, b in base.items()}
        ranges: dict[str, Any] = {k: interval_metrics(p, y, last, levels) for k, p in predictors.items()}
        skills = {k: skill(ranges["interval"]["winkler"], ranges[k]["winkler"]) for k in base}
        ranges |= {f"interval_skill{sfx[k]}": v for k, v in skills.items()}
        if not tests:
            out.append({"hours": int(hours), "n": int(len(y)), **ranges})
            continue
        median = q[:, mid]
        model, pers = regression_metrics(median, y, last), regression_metrics(last, y, last)
        evidence = point_evidence(median, y, last, horizon=hours)
        w_model = winkler_scores(q[:, 0], q[:, -1], y, alpha)
        w_base = {k: winkler_scores(b[:, j, 0], b[:, j, -1], y, alpha) for k, b in base.items()}
        dm = {k: diebold_mariano(w_model, w, horizon=hours) for k, w in w_base.items()}
        se = {k: skill_standard_error(w_model, w, horizon=hours) for k, w in w_base.items()}
        out.append(
            {
                "hours": int(hours),
                "n": int(len(y)),
                "model": model,
                "persistence": pers,
                "skill": skill(model["mae"], pers["mae"]),
                "dm_p_worse": evidence["dm_p_worse"],
                "dm_p_better": evidence["dm_p_better"],
                "direction_p_value": evidence["direction_p_value"],
                "interval_level": round(1.0 - alpha, 10),
                **ranges,
                **{
                    f"interval{key}": value
                    for k in w_base
                    for key, value in (
                        (f"_skill_se{sfx[k]}", se[k] if math.isfinite(se[k]) else None),
                        (f"_dm_p_worse{sfx[k]}", dm[k].p_worse),
                        (f"_dm_p_better{sfx[k]}", dm[k].p_better),
                    )
                },
            }
        )
    return out
