"""Hyper-parameter search with Ray Tune (``mur tune``, the ``mur_tuning`` DAG; docs/tuning.md).

:func:`tune_pair`: the pair's candles -> spans (:func:`mur.training.tuning.search_spans`) -> a Ray Tune search
(ASHA over walk-forward folds, one CPU per trial; the default configuration is its first trial) ->
the best configuration that completed every fold -> scored once, against the default, on the confirmation
span the search never saw -> MLflow (a parent run, one child per trial) -> a new version of the pair's
model configuration in PostgreSQL (:mod:`mur.db.model_configs`), active when it beat the default there.

Each fold is the backtest's (train on the ``tune_train_days`` before the origin, score the hours after
it) with the training driver's own stages (:func:`mur.training.driver.prepare`, the local fit,
:func:`mur.training.driver.calibrate`); a trial reports after every fold, so ASHA stops the weak ones after
the first. The search is resumable: its Ray Tune experiment lives under ``MUR_RUNTIME_DIR/tune/<search id>``
(the id hashes pair, spans, budget and space); the same command restores it, keeps the finished trials and
reruns the unfinished ones.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from mur.errors import DataValidationError, ServiceError
from mur.settings import Settings
from mur.timeutil import iso
from mur.training.tuning import (
    SEARCH_SPACE,
    SearchSpans,
    TrialResult,
    TuneBudget,
    TuningReport,
    apply_config,
    confirmation_comparison,
    default_config,
    fold_score,
    per_forecast_losses,
    same_config,
    search_spans,
)

if TYPE_CHECKING:
    from mur.db.model_configs import ModelConfigRecord

log = logging.getLogger(__name__)
Activate = Literal["auto", "always", "never"]
FOLD_KEYS = ("score", "winkler_ratio", "pinball_ratio", "coverage", "n")
"""What a trial reports of each fold (as ``fold_<key>``, besides the running means)."""


# --- one fold --------------------------------------------------------------------------------------------
def candles_between(candles: pd.DataFrame, start: datetime, end: datetime) -> pd.DataFrame:
    """The candles with open time in ``[start, end)``."""
    ts = pd.DatetimeIndex(candles["timestamp"])
    return candles[(ts >= pd.Timestamp(start)) & (ts < pd.Timestamp(end))].reset_index(drop=True)


def fit_calibrated(settings: Settings, history: pd.DataFrame) -> tuple[Any, int]:
    """Train on ``history`` as the driver does (local fit, split-conformal calibration): the
    :class:`~mur.model.export.CalibratedForecaster` the exported graph would hold, and the best epoch
    (-1: no epoch beat the data-fitted start on validation, which the fit then keeps)."""
    from mur.training.driver import calibrate, prepare
    from mur.training.loop import LocalFit
    from mur.training.params import model_config, train_config

    ds = prepare(settings, history)
    outcome = LocalFit()(
        ds.model_arrays("train"), ds.model_arrays("val"), model_config(settings), train_config(settings)
    )
    return calibrate(outcome.model, ds), outcome.best_epoch


def forecast_hours(
    settings: Settings, model: Any, candles: pd.DataFrame, start: datetime, first: datetime, stop: datetime
) -> tuple[Any, np.ndarray, np.ndarray]:
    """The model's price quantiles ``(n, H, L)`` for the forecasts whose first target hour is in
    ``[first, stop)``, with the dataset (candles from ``start``: the baselines' history) and its indices."""
    import torch

    max_h = max(settings.model.horizons)
    from mur.training.driver import prepare

    ds = prepare(settings, candles_between(candles, start, stop + timedelta(hours=max_h - 1)))
    t = pd.DatetimeIndex(ds.timestamps)
    idx = np.flatnonzero(
        (t >= pd.Timestamp(first).tz_localize(None)) & (t < pd.Timestamp(stop).tz_localize(None))
    )
    if idx.size == 0:
        raise DataValidationError(f"no forecasts to score in {iso(first)} .. {iso(stop)}")
    model.eval()
    with torch.no_grad():
        _, prices = model(torch.from_numpy(np.ascontiguousarray(ds.x[idx], dtype=np.float32)))
    return ds, idx, prices.numpy().astype(np.float64)


def score_fold(
    settings: Settings, candles: pd.DataFrame, origin: datetime, hours: int, train_days: int
) -> dict[str, float]:
    """Train on the ``train_days`` before ``origin``, score the ``hours`` after it (:func:`fold_score`)."""
    from mur.evaluation.metrics import evaluate_horizons

    start = origin - timedelta(days=train_days)
    model, _ = fit_calibrated(settings, candles_between(candles, start, origin))
    ds, idx, quantiles = forecast_hours(
        settings, model, candles, start, origin, origin + timedelta(hours=hours)
    )
    return fold_score(evaluate_horizons(quantiles, ds, idx, tuple(settings.model.quantile_levels)))


def trial(
    config: dict[str, Any], *, settings: Settings, candles: pd.DataFrame, spans: SearchSpans, train_days: int
) -> None:
    """The Ray Tune trainable: score ``config`` fold by fold, reporting the running means after each."""
    import torch
    from ray import tune

    torch.set_num_threads(1)  # one CPU per trial
    configured = apply_config(settings, config)
    scores: list[dict[str, float]] = []
    for k, origin in enumerate(spans.origins, start=1):
        scores.append(score_fold(configured, candles, origin, spans.fold_hours, train_days))
        means = {key: float(np.mean([s[key] for s in scores])) for key in scores[0]}
        tune.report({**means, "fold": k, **{f"fold_{key}": v for key, v in scores[-1].items()}})


# --- the search ------------------------------------------------------------------------------------------
def search_id(pair: str, spans: SearchSpans, budget: TuneBudget, default: Mapping[str, Any]) -> str:
    """Same pair, spans, budget, space and default -> same id (and Ray Tune experiment: resumable)."""
    from mur.contracts import digest

    searched = {"spans": spans.to_dict(), "budget": asdict(budget), "space": SEARCH_SPACE, "default": default}
    return f"{pair}-{digest({'pair': pair, **searched}, 12)}"


def private_ray_env(environ: MutableMapping[str, str]) -> None:
    """What a private local Ray needs so that only this process reaches it: Ray's single-node switch
    (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read when Ray is imported; ``devstack/config.py`` says why), so
    that its sockets listen on 127.0.0.1, and token auth with a token made for this process alone (without
    one, Ray generates a token and keeps it in ``~/.ray/auth_token``). What the environment already says wins
    (the local stack's processes and the tests set both)."""
    environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if environ.setdefault("RAY_AUTH_MODE", "token") == "token" and not environ.get("RAY_AUTH_TOKEN"):
        environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


def start_ray(address: str | None, cpus: int) -> None:
    """Join ``address`` (the stack's Ray, ``auto`` inside a Ray job), else start a private local Ray with
    ``cpus`` CPUs, no dashboard and ports of its own choosing (the GCS on a free port: it never takes the
    stack's) on the loopback interface. Its entry point (``mur tune``) sets :func:`private_ray_env` before
    Ray is imported, which Ray reads then."""
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(
            address="local",
            num_cpus=cpus,
            include_dashboard=False,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
        )


def run_search(
    settings: Settings,
    candles: pd.DataFrame,
    spans: SearchSpans,
    budget: TuneBudget,
    sid: str,
    *,
    fresh: bool = False,
    emit: Callable[[str], None] = log.info,
) -> list[TrialResult]:
    """Run (or resume) the Ray Tune experiment ``sid``; every trial's result. Searches live under
    ``MUR_RAY_STORAGE_PATH/tune`` (``s3://``: every node of a cluster reaches it), else
    ``MUR_RUNTIME_DIR/tune``."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from mur.training.ray_fit import location, remove_dir

    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # with verbose=0: no progress tables on stdout (Ray reads it here)
    root = settings.ray.ray_storage_path or str(settings.general.runtime_dir.resolve())
    storage, fs = location(settings, f"{root.rstrip('/')}/tune")
    path = f"{storage}/{sid}"
    trainable = tune.with_resources(
        tune.with_parameters(
            trial, settings=settings, candles=candles, spans=spans, train_days=budget.train_days
        ),
        {"cpu": 1},
    )
    if fresh:
        remove_dir(path, fs)
    if tune.Tuner.can_restore(path, storage_filesystem=fs):
        emit(f"[tune] resuming {path} (finished trials are kept)")
        tuner = tune.Tuner.restore(path, trainable, resume_errored=True, storage_filesystem=fs)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={  # SEARCH_SPACE as Ray Tune distributions
                name: tune.choice(args[0]) if kind == "choice" else tune.loguniform(*args)
                for name, (kind, *args) in SEARCH_SPACE.items()
            },
            tune_config=tune.TuneConfig(
                metric="score",
                mode="min",
                num_samples=budget.trials,
                scheduler=ASHAScheduler(
                    time_attr="training_iteration", max_t=budget.folds, grace_period=1, reduction_factor=2
                ),
                search_alg=BasicVariantGenerator(
                    points_to_evaluate=[default_config(settings)],
                    max_concurrent=budget.concurrency,
                    random_state=budget.seed,
                ),
            ),
            run_config=tune.RunConfig(name=sid, storage_path=storage, storage_filesystem=fs, verbose=0),
        )
    grid = tuner.fit()
    results: list[TrialResult] = []
    for r in (grid[i] for i in range(len(grid))):
        frame = r.metrics_dataframe
        rows = [] if frame is None or frame.empty else frame.to_dict("records")
        folds = [{k: float(row[f"fold_{k}"]) for k in FOLD_KEYS} for row in rows]
        status = "error" if r.error else ("completed" if len(folds) >= budget.folds else "stopped")
        trial_id = str((r.metrics or {}).get("trial_id") or r.path.rsplit("/", 1)[-1])
        config = {k: v for k, v in (r.config or {}).items() if k in SEARCH_SPACE}
        results.append(
            TrialResult(trial_id, config, folds, status, None if r.error is None else str(r.error))
        )
    return sorted(results, key=lambda t: (t.status != "completed", t.score))


# --- confirmation, then the whole search ----------------------------------------------------------------
def confirm(
    settings: Settings,
    candles: pd.DataFrame,
    spans: SearchSpans,
    chosen: Mapping[str, Any],
    default: Mapping[str, Any],
) -> dict[str, Any]:
    """Train the chosen and the default configuration once each, as scheduled training would (the
    settings' ``train_days`` and ``epochs``) on the candles before the confirmation span; score both on
    the same forecasts there (:func:`mur.training.tuning.confirmation_comparison`, plus each one's fold
    score vs the naive baseline)."""
    from mur.evaluation.metrics import evaluate_horizons

    start = (
        spans.confirm_start - timedelta(days=settings.training.train_days)
        if settings.training.train_days
        else pd.Timestamp(candles["timestamp"].iloc[0]).to_pydatetime()
    )
    history = candles_between(candles, start, spans.confirm_start)
    levels = tuple(settings.model.quantile_levels)
    losses: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    scores: dict[str, dict[str, float]] = {}
    times: dict[str, np.ndarray] = {}
    best_epoch: dict[str, int] = {}
    for name, config in (("default", default), ("chosen", chosen)):
        if name == "chosen" and same_config(chosen, default):  # the search kept the default: no gain
            losses[name], scores[name] = losses["default"], scores["default"]
            continue
        configured = apply_config(settings, config)
        model, best_epoch[name] = fit_calibrated(configured, history)
        ds, idx, quantiles = forecast_hours(configured, model, candles, start, spans.confirm_start, spans.end)
        losses[name] = per_forecast_losses(quantiles, ds.horizon_targets[idx], levels)
        scores[name] = fold_score(evaluate_horizons(quantiles, ds, idx, levels))
        times[name] = ds.timestamps[idx]
    if len(times) == 2 and not np.array_equal(times["default"], times["chosen"]):
        raise DataValidationError("the two configurations were scored on different forecasts")
    comparison = confirmation_comparison(losses["chosen"], losses["default"], settings.model.horizons)
    first = next(iter(times.values()))
    return {
        **comparison,
        "same_as_default": same_config(chosen, default),
        "identical_forecasts": bool(
            all(np.array_equal(a, b) for a, b in zip(losses["chosen"], losses["default"], strict=True))
        ),
        "best_epoch": best_epoch,
        "span": {"start": iso(first[0]), "end": iso(spans.end)},
        "train_start": iso(start),
        "vs_naive": scores,
    }


def tune_pair(
    settings: Settings,
    pair: str,
    budget: TuneBudget,
    *,
    ray_address: str | None = None,
    fresh: bool = False,
    activate: Activate = "auto",
    mlflow: bool = True,
    store: bool = True,
    emit: Callable[[str], None] = log.info,
) -> TuningReport:
    """Search, confirm, log and store one pair's configuration (module docstring). The database and MLflow
    are checked before any training: a search whose result could not be kept does not start."""
    import time

    from mur.model.quantile_config import parse_horizons
    from mur.training.driver import load_candles

    pair = pair.lower()
    started = time.perf_counter()
    if store:  # the database must answer now (DatabaseError) rather than after the search
        from mur.db import Database
        from mur.db.model_configs import config_history

        with Database(settings, maxconn=1) as db:
            config_history(db, pair)
    if mlflow:
        from mur.registry.tuning_runs import check_tracking

        check_tracking(settings)
    candles, window, _ = load_candles(settings, pair, train_days=None)
    spans = search_spans(
        window.end,
        folds=budget.folds,
        fold_hours=budget.fold_hours,
        confirm_hours=budget.confirm_hours,
        max_horizon=max(parse_horizons(settings.model.horizons)),
    )
    first_candle = pd.Timestamp(candles["timestamp"].iloc[0]).to_pydatetime()
    if spans.origins[0] - timedelta(days=min(budget.train_days, 30)) < first_candle:
        raise DataValidationError(
            f"{pair}: candles from {iso(first_candle)} are too few for {budget.folds} folds of "
            f"{budget.fold_hours} h before a {budget.confirm_hours} h confirmation span"
        )
    default = default_config(settings)
    sid = search_id(pair, spans, budget, default)
    emit(
        f"[tune] {pair}: search {sid}: {budget.trials} trials x {budget.folds} folds of {budget.fold_hours} h "
        f"(origins {iso(spans.origins[0])} .. {iso(spans.origins[-1])}), {budget.concurrency} at once; "
        f"confirmation span {iso(spans.confirm_start)} .. {iso(spans.end)} is never searched"
    )
    start_ray(ray_address, budget.concurrency)
    trials = run_search(
        settings.replace(epochs=budget.epochs),
        candles,
        spans,
        budget,
        sid,
        fresh=fresh,
        emit=emit,
    )
    searched = time.perf_counter()
    completed = [t for t in trials if t.status == "completed" and math.isfinite(t.score)]
    if not completed:
        errors = [t.error for t in trials if t.error]
        raise ServiceError(
            f"{pair}: no trial completed every fold" + (f"; first error: {errors[0]}" if errors else "")
        )
    chosen = completed[0]
    emit(
        f"[tune] {pair}: best of {len(trials)} trials: {chosen.trial_id} score {chosen.score:.4f} {chosen.config}"
    )
    comparison = confirm(settings, candles, spans, chosen.config, default)
    comparison["chosen_trial"] = chosen.trial_id
    report = TuningReport(
        pair,
        sid,
        spans,
        budget,
        trials,
        chosen.config,
        default,
        comparison,
        seconds={
            "search": round(searched - started, 1),
            "confirmation": round(time.perf_counter() - searched, 1),
        },
    )
    if mlflow:
        from mur.registry.tuning_runs import log_search

        report.mlflow_run_id = log_search(settings, report)
    if store:
        report.stored = store_choice(settings, report, activate)
    return report


def store_choice(settings: Settings, report: TuningReport, activate: Activate) -> ModelConfigRecord:
    """Store the chosen configuration as the pair's next version (once per search id), active when
    ``activate`` is ``always``, or ``auto`` and it differs from the default and beat it on the confirmation
    span (overall Winkler gain > 0); every version it trains still goes through the promotion gate."""
    from mur.db import Database
    from mur.db.model_configs import config_history, save_config

    with Database(settings, maxconn=1) as db:
        for record in config_history(db, report.pair):
            if record.search_id == report.search_id:
                return record  # this search was stored before (a rerun restored the finished experiment)
        gain = float(report.comparison["winkler"]["gain"])
        on = activate == "always" or (
            activate == "auto" and gain > 0 and not same_config(report.chosen, report.default)
        )
        return save_config(
            db,
            report.pair,
            report.chosen,
            activate=on,
            search_id=report.search_id,
            mlflow_run_id=report.mlflow_run_id,
            evidence=report.evidence(),
        )
