"""The one training driver: candles for a data window → dataset → fit → ONNX export → evaluation on the
test span against persistence and linear baselines → metrics document → MLflow registry and promotion gate.

The fit step is passed in: :class:`mur.training.loop.LocalFit` (``mur train``, in this process) or
:class:`mur.training.ray_fit.RayFit` (the Ray job, ``ray_jobs/train_pair.py``). Everything else is the same
code whichever fit ran. Each stage is a function, testable alone.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mur.contracts import MetricsDocument, TrainingResult
from mur.model.features import Dataset, build_dataset
from mur.registry.names import WEIGHTS_ARTIFACT
from mur.settings import Settings
from mur.timeutil import iso
from mur.training import warm_start
from mur.training.params import idempotency_key, model_config, train_config, training_params
from mur.training.tuned import tuned_settings

if TYPE_CHECKING:
    from mur.model.network import ModelConfig
    from mur.training.loop import Fit, FitItem, FitOutcome, TrainConfig

log = logging.getLogger(__name__)
MIN_CANDLES = 200


@dataclass(frozen=True)
class DataWindow:
    """Half-open window ``[start, end)`` on candle open times."""

    start: datetime
    end: datetime

    def to_dict(self) -> dict[str, str]:
        return {"start": iso(self.start), "end": iso(self.end)}


def load_candles(
    settings: Settings,
    pair: str,
    end: datetime | None = None,
    data_csv: Path | pd.DataFrame | None = None,
    train_days: int | None = -1,
    min_rows: int = MIN_CANDLES,
) -> tuple[pd.DataFrame, DataWindow, list[pd.Timestamp]]:
    """Candles strictly before ``end`` (default and bound: market now, :mod:`mur.clock`; the data's end once
    a replay passed it) within ``train_days``, on a regular grid; from ``data_csv`` (a file, or a backtest
    fold's frame) when given. Returns the candles, the data window used and the hours the gap policy filled.
    """
    from mur.data import get_market_data, load_candles_csv, regularize_hourly, validate_candles

    days = settings.training.train_days if train_days == -1 else train_days
    if data_csv is not None:
        candles = data_csv if isinstance(data_csv, pd.DataFrame) else load_candles_csv(Path(data_csv))
        if end is not None:
            candles = candles[candles["timestamp"] < pd.Timestamp(end)]
        if days:
            last = candles["timestamp"].iloc[-1] if len(candles) else pd.Timestamp(end or datetime.now(UTC))
            candles = candles[candles["timestamp"] >= last - pd.Timedelta(days=days)]
    else:
        from mur.clock import market_clock

        source = get_market_data(settings)
        market_hour = market_clock(settings).hour()  # candles from this hour on have not closed yet
        if end is None:
            if settings.data.market_data == "bundled":
                end = pd.Timestamp(source.data_range(pair)[1]).to_pydatetime() + timedelta(hours=1)
            else:
                end = market_hour
        elif end > market_hour:
            log.info(
                "%s: window end %s is after market now: training up to %s", pair, iso(end), iso(market_hour)
            )
            end = market_hour
        start = end - timedelta(days=days) if days else None
        candles = source.klines(pair, start=start, end=end)
    candles = candles.reset_index(drop=True)
    validate_candles(candles, min_rows=min_rows)
    candles, filled = regularize_hourly(candles)
    if filled:
        log.warning(
            "%s: forward-filled %d missing hour(s): %s", pair, len(filled), ", ".join(map(iso, filled[:5]))
        )
    first = pd.Timestamp(candles["timestamp"].iloc[0]).to_pydatetime()
    last = pd.Timestamp(candles["timestamp"].iloc[-1]).to_pydatetime() + timedelta(hours=1)
    return candles, DataWindow(first, end or last), filled


def prepare(settings: Settings, candles: pd.DataFrame, **overrides: Any) -> Dataset:
    """Features (the model's columns), windows of the model's input length, targets at every horizon,
    purged chronological split, normalization fitted on train (``overrides``: :func:`model_config`'s)."""
    mcfg = model_config(settings, **overrides)
    return build_dataset(
        candles,
        mcfg.input_len,
        mcfg.normalization,  # type: ignore[arg-type]
        feature_names=mcfg.feature_names,
        horizons=mcfg.horizons,
    )


def calibrate(model: Any, ds: Dataset) -> Any:
    """The trained model with its split-conformal calibration folded in
    (:class:`mur.model.export.CalibratedForecaster`): per horizon on the validation span (data the weights
    never trained on), extended back into the training span where that span holds too few independent
    outcomes of the horizon (:func:`mur.evaluation.intervals.block_conformal_scale`; 24 h: 240 days)."""
    import numpy as np

    from mur.evaluation.intervals import block_conformal_scale, calibration_rows
    from mur.model.export import CalibratedForecaster
    from mur.model.quantile_config import interval_level
    from mur.training.loop import predict

    cfg = model.cfg
    x_val, y_val = ds.model_arrays("val")
    x_train, y_train = ds.model_arrays("train")
    extra = max(calibration_rows(len(y_val), len(y_train), h) for h in ds.horizons) - len(y_val)
    x_cal = np.concatenate([x_train[len(y_train) - extra :], x_val])
    y_cal = np.concatenate([y_train[len(y_train) - extra :], y_val])
    scale = block_conformal_scale(
        predict(model, x_cal),
        y_cal,
        len(y_val),
        ds.horizons,
        cfg.median_index,
        interval_level(cfg.quantile_levels),
    )
    return CalibratedForecaster(model, [float(k) for k in scale])


def evaluate_onnx(
    onnx_path_or_bytes: Path | bytes, ds: Dataset, rnn_len: int | None = None
) -> dict[str, object]:
    """Evaluate an exported model on the dataset's test windows: the 1 h point forecast next to
    persistence and a linear model (on the last ``rnn_len`` hours), and every horizon's median and
    interval next to persistence and the two interval baselines."""
    from mur.evaluation.metrics import LinearBaseline, evaluate_all, evaluate_horizons
    from mur.model.export import load_session, model_metadata, run_forecast

    session = load_session(onnx_path_or_bytes)
    test = ds.split.test
    x_test, y_test = ds.x[test], ds.y[test]
    point, quantiles = run_forecast(session, x_test)
    recent = rnn_len or min(24, ds.spec.seq_len)
    linear = LinearBaseline(recent).fit(ds.x[ds.split.train][:, -recent:], ds.y[ds.split.train])
    result = evaluate_all(point, x_test, y_test, linear.predict(x_test[:, -recent:]))
    if quantiles is not None:
        levels = tuple(model_metadata(session)["quantile_levels"])
        horizons = evaluate_horizons(quantiles, ds, test, levels)
        result.update(
            quantile_levels=list(levels),
            horizons=horizons,
            interval_skill=horizons[0]["interval_skill"],
            coverage=horizons[0]["interval"]["coverage"],
        )
    return result


def metrics_document(
    pair: str,
    mcfg: ModelConfig,
    ds: Dataset,
    window: DataWindow,
    evaluation: dict[str, object],
    **details: object,
) -> MetricsDocument:
    """The ``metrics.json`` document (shape documented in README): evaluation plus training details."""
    test_ts = ds.timestamps[ds.split.test]
    return MetricsDocument.model_validate(
        {
            "pair": pair,
            "arch": mcfg.arch,
            "normalization": ds.spec.normalization,
            "data_window": window.to_dict(),
            "test_window": {"start": iso(test_ts[0]), "end": iso(test_ts[-1])},
            **evaluation,
            **details,
        }
    )


@dataclass
class PreparedTraining:
    """One pair ready to fit: its dataset, configs, idempotency key and training plan (full or warm)."""

    pair: str
    ds: Dataset
    window: DataWindow
    filled: list[pd.Timestamp]
    mcfg: ModelConfig
    tcfg: TrainConfig
    params: dict[str, Any]
    key: str
    arch: str
    plan: warm_start.TrainingPlan
    run_name: str

    def fit_item(self) -> FitItem:
        """What a fit step trains for this pair (alone, or in a batch: ``Fit.fit_many``)."""
        from mur.training.loop import FitItem

        weights = None if self.plan.start is None else self.plan.start.weights
        train, val = self.ds.model_arrays("train"), self.ds.model_arrays("val")
        return FitItem(self.pair, train, val, self.mcfg, self.tcfg, weights)


def prepare_training(
    settings: Settings,
    pair: str,
    *,
    fit: Fit,
    end: datetime | None = None,
    data_csv: Path | pd.DataFrame | None = None,
    register: bool = True,
    reuse_existing: bool = False,
    emit: Callable[[str], None] | None = None,
    kind: str = "manual",
    tuned: bool | None = None,
    **overrides: Any,
) -> PreparedTraining | TrainingResult:
    """Candles, dataset, key and plan of one pair; the version already registered for the key when
    ``reuse_existing`` finds one (see :func:`train_and_register`)."""
    say = emit or log.info
    pair = pair.lower()
    tuned_params: dict[str, Any] = {}
    # the pair's tuned configuration (mur/training/tuned.py) when asked, or unasked (tuned None) when the
    # training registers and MUR_USE_TUNED_CONFIGS is on
    if (register and settings.tuning.use_tuned_configs) if tuned is None else tuned:
        settings, tuned_params = tuned_settings(settings, pair, emit=say)
    candles, window, filled = load_candles(settings, pair, end=end, data_csv=data_csv)
    mcfg, tcfg = model_config(settings, **overrides), train_config(settings, **overrides)
    ds = prepare(settings, candles, **overrides)
    params = {**training_params(settings, mcfg, tcfg), **fit.key_params(), **tuned_params}
    window_end = iso(window.end)
    key = idempotency_key(pair, window_end, params)
    say(f"[mur] {pair}: {len(candles)} candles {window.to_dict()} (filled hours: {len(filled)}); key {key}")
    if register and reuse_existing and (existing := registered_for(settings, pair, key)) is not None:
        say(f"[mur] {pair}: version {existing.version} already trained for this window; reusing it")
        return existing

    # full or warm (mur/training/warm_start.py): not part of the key, a re-run reuses the window's version
    arch = warm_start.arch_key(mcfg, settings.model.seq_len, settings.model.normalization)
    test_start = pd.Timestamp(ds.timestamps[ds.split.test][0]).tz_localize("UTC").to_pydatetime()
    if register:
        plan = warm_start.plan(
            settings, pair, kind=kind, key=arch, test_start=test_start, window_end=window.end
        )
    else:
        plan = warm_start.TrainingPlan(warm_start.FULL, "not registered")
    if plan.start is not None:
        tcfg = replace(tcfg, epochs=min(tcfg.epochs, settings.training.warm_start_epochs))
    say(f"[mur] {pair}: {plan.mode} training, {plan.reason}; up to {tcfg.epochs} epochs")
    # unique per fit: a rerun of the same window must not resume an earlier job's checkpoints
    run_name = f"{pair}-{window_end.replace(':', '')}-{key[:8]}-{uuid.uuid4().hex[:6]}"
    return PreparedTraining(pair, ds, window, filled, mcfg, tcfg, params, key, arch, plan, run_name)


def finish_training(
    settings: Settings,
    prep: PreparedTraining,
    outcome: FitOutcome,
    *,
    fit: Fit,
    out_dir: Path | None = None,
    register: bool = True,
    emit: Callable[[str], None] | None = None,
    kind: str = "manual",
) -> TrainingResult:
    """Export the fitted model with its calibration, evaluate it on the test span, then write ``out_dir``
    and/or log, register and gate it (see :func:`train_and_register`)."""
    from mur.model.export import export_onnx

    say = emit or log.info
    pair, ds = prep.pair, prep.ds
    x_test = ds.x[ds.split.test]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(out_dir) if out_dir is not None else Path(tmp)
        onnx_path = export_onnx(calibrate(outcome.model, ds), folder / "model.onnx", x_test[:64])
        weights = folder / WEIGHTS_ARTIFACT
        warm_start.save_weights(weights, warm_start.recurrent_weights(outcome.model))
        doc = metrics_document(
            pair,
            prep.mcfg,
            ds,
            prep.window,
            evaluate_onnx(onnx_path, ds, prep.mcfg.rnn_len),
            best_epoch=outcome.best_epoch,
            **outcome.details,
        )
        say(
            f"[mur] {pair}: test MAE model {doc.model.mae:.6g} | persistence {doc.persistence.mae:.6g} "
            f"| linear {doc.linear.mae:.6g} | skill {doc.skill:+.4f}"
        )
        for h in doc.horizons or []:
            say(
                f"[mur] {pair}: {h.hours:>2} h  point skill {h.skill:+.4f} | {h.interval_level:.0%} interval "
                f"coverage {h.interval.coverage:.3f}, interval skill {h.interval_skill:+.4f} vs naive, "
                f"{h.interval_skill_vs_ewma:+.4f} vs EWMA"
            )
        if out_dir is not None:
            doc = doc.model_copy(update={"filled_hours": [iso(t) for t in prep.filled]})
            (folder / "metrics.json").write_text(doc.to_json())
            (folder / "feature_spec.json").write_text(json.dumps(ds.spec.to_dict(), indent=2))
        if not register:
            return TrainingResult(
                pair=pair, data_window=doc.data_window, mae=doc.model.mae, skill=doc.skill, metrics=doc
            )
        from mur.registry.versions import log_and_register

        result = log_and_register(
            settings,
            pair=pair,
            onnx_path=onnx_path,
            feature_spec=ds.spec.to_dict(),
            metrics_doc=doc,
            params={**prep.params, **fit.run_params()},
            history=outcome.history,
            ds=ds,
            idempotency_key=prep.key,
            kind=kind,
            weights=weights,
            training_tags={"arch_key": prep.arch, **prep.plan.tags(iso(prep.window.end))},
        )
    say(f"[mur] gate: {result.model_name} v{result.version} → {result.alias} ({result.reason})")
    return result


def train_and_register(
    settings: Settings,
    pair: str,
    *,
    fit: Fit,
    out_dir: Path | None = None,
    register: bool = True,
    emit: Callable[[str], None] | None = None,
    kind: str = "manual",
    **options: Any,
) -> TrainingResult:
    """Train ``pair`` on candles before ``end`` with ``fit``, export, evaluate, then log/register/gate.

    ``options`` are :func:`prepare_training`'s (``end``, ``data_csv``, ``reuse_existing``, ``tuned``) and
    hyper-parameters (``epochs``, ``arch``, ...; None = settings). ``out_dir`` also keeps ``model.onnx``,
    ``metrics.json`` and ``feature_spec.json`` there; ``register=False`` skips MLflow (``mur train --out``).
    With ``reuse_existing``, a version already registered for the same idempotency key (pair + window end +
    hyper-parameters + ``fit.key_params()``) is returned without training. Progress lines go to ``emit``
    (the Ray job prints them; default: this module's logger).
    ``kind`` (``scheduled``, ``backfill``, ``manual``) is recorded on the version for the admin page. A
    scheduled run may start from the champion's weights (:mod:`mur.training.warm_start`). ``tuned``:
    :mod:`mur.training.tuned`. Several pairs in one fit: :func:`train_many`.
    """
    prep = prepare_training(settings, pair, fit=fit, register=register, emit=emit, kind=kind, **options)
    if isinstance(prep, TrainingResult):
        return prep
    [outcome] = fit.fit_many([prep.fit_item()], run_name=prep.run_name)
    if isinstance(outcome, Exception):
        raise outcome
    return finish_training(
        settings, prep, outcome, fit=fit, out_dir=out_dir, register=register, emit=emit, kind=kind
    )


def _failure(pair: str, exc: BaseException, say: Callable[[str], None]) -> TrainingResult:
    from mur.errors import MurError

    message = str(exc) if isinstance(exc, MurError) else f"{type(exc).__name__}: {exc}"
    say(f"[mur] {pair}: FAILED: {message}")
    if not isinstance(exc, MurError):  # a bug or an infrastructure error: the job log keeps the traceback
        say("".join(traceback.format_exception(exc)).rstrip())
    return TrainingResult.failure(pair, message)


def train_many(
    settings: Settings,
    pairs: Sequence[str],
    *,
    fit: Fit,
    end: datetime | None = None,
    reuse_existing: bool = False,
    register: bool = True,
    emit: Callable[[str], None] | None = None,
    kind: str = "manual",
    **overrides: Any,
) -> dict[str, TrainingResult]:
    """Train ``pairs`` (registered, gated) with one fit for all of them (``fit.fit_many``: one Ray Train run
    for the batch); one result per pair, in order, failures included. Arguments as
    :func:`train_and_register` (``register=False``: nothing logged, a benchmark).

    The hourly cycle over hundreds of pairs is dominated by start-up, not by training: a Ray job starts a
    Python process and imports torch, Ray and MLflow (~10 s), and each Ray Train run starts its worker group
    (~20 s on this machine) for a warm start that trains ~4 s; a batch pays both once. A pair that fails at
    any stage comes back as a failure result (``TrainingResult.error``) and the others go on: one bad pair
    never blocks its batch (``ray_jobs/train_pair.py --pairs a,b,c``; :mod:`mur.orchestration.batches`)."""
    say = emit or log.info
    started = time.perf_counter()
    results: dict[str, TrainingResult] = {}
    prepared: list[PreparedTraining] = []
    for pair in dict.fromkeys(p.lower() for p in pairs):
        try:
            prep = prepare_training(
                settings,
                pair,
                fit=fit,
                end=end,
                register=register,
                reuse_existing=reuse_existing,
                emit=say,
                kind=kind,
                **overrides,
            )
        except Exception as exc:
            results[pair] = _failure(pair, exc, say)
            continue
        if isinstance(prep, TrainingResult):
            results[pair] = prep
        else:
            prepared.append(prep)
    if prepared:
        say(f"[mur] batch: fitting {len(prepared)} pair(s) in one run: {', '.join(p.pair for p in prepared)}")
        fitted = time.perf_counter()
        outcomes = fit.fit_many([p.fit_item() for p in prepared], run_name=f"batch-{uuid.uuid4().hex[:10]}")
        say(f"[mur] batch: fit of {len(prepared)} pair(s) took {time.perf_counter() - fitted:.1f} s")
        for prep, outcome in zip(prepared, outcomes, strict=True):
            if isinstance(outcome, Exception):
                results[prep.pair] = _failure(prep.pair, outcome, say)
                continue
            try:
                results[prep.pair] = finish_training(
                    settings, prep, outcome, fit=fit, register=register, emit=say, kind=kind
                )
            except Exception as exc:
                results[prep.pair] = _failure(prep.pair, exc, say)
    failed = sorted(p for p, r in results.items() if not r.ok)
    say(
        f"[mur] batch: {len(results) - len(failed)}/{len(results)} pair(s) done in "
        f"{time.perf_counter() - started:.1f} s" + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return {p.lower(): results[p.lower()] for p in dict.fromkeys(p.lower() for p in pairs)}


def registered_for(settings: Settings, pair: str, key: str) -> TrainingResult | None:
    """The version already registered for ``key``, marked ``reused``; None when there is none."""
    from mur.registry.client import configure
    from mur.registry.versions import find_version, version_result

    prefix = settings.registry.registry_prefix
    existing = find_version(configure(settings), pair, key, prefix)
    if existing is None:
        return None
    return version_result(existing, prefix).model_copy(update={"reused": True})
