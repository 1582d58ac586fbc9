"""Rolling-origin (walk-forward) evaluation: retrain at K successive origins, score the hours after each.

Fold ``k`` (``k = 1..K``) has origin ``o_k = end - (K - k + 1) * fold_hours``. The model is trained on
candles strictly before ``o_k`` — a **sliding** window of ``train_days`` (what the hourly DAG does) or an
**expanding** window from the first candle — and scored on the ``fold_hours`` hours ``[o_k, o_k +
fold_hours)`` it never saw, next to persistence on exactly the same targets. Folds are pooled by
concatenating their out-of-sample errors; the pooled Diebold-Mariano test (HLN-corrected) and the
directional binomial test run on the pooled errors.

Range first: per horizon, the model's quantiles and those of the naive, EWMA and GARCH(1,1)-t interval baselines
(fitted on the fold's candles before its origin) are scored on the same targets (coverage, width, Winkler, pinball,
reliability), per fold and pooled; the pooled interval skill vs each baseline comes with a DM test on the
per-target Winkler scores. A forecast is range-scored when all its horizons' targets are in the candles
(the last fold loses the final ``max(horizons) - 1`` hours when it ends at the data's end). Each fold's
forecast arrays (:class:`FoldForecasts`: quantiles, targets, last closes, times) stay on the report.

Training is passed in (``train``: candles -> ONNX bytes), so the same code backtests the local trainer,
a Ray Train fit or a baseline. Pure apart from that callable and the optional file/MLflow outputs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from mur.contracts import json_ready
from mur.errors import DataValidationError, ModelError
from mur.evaluation.intervals import reliability, winkler_scores
from mur.evaluation.metrics import (
    horizon_baselines,
    horizon_scores,
    persistence_forecast,
    regression_metrics,
    skill,
)
from mur.evaluation.significance import binomial_p_value, diebold_mariano, point_evidence, verdict
from mur.model.features import FEATURE_NAMES, build_dataset, make_features, make_windows
from mur.timeutil import iso

log = logging.getLogger(__name__)

Window = Literal["sliding", "expanding"]
TrainFn = Callable[[pd.DataFrame], bytes]
"""Train on the given candles (all strictly before the fold's origin) and return the ONNX model bytes."""


@dataclass
class FoldResult:
    fold: int
    origin: str
    train_start: str
    test_end: str
    n: int
    model: dict[str, float]
    persistence: dict[str, float]
    skill: float
    evidence: dict[str, float]
    timestamps: list[str] = field(repr=False, default_factory=list)
    abs_err_model: list[float] = field(repr=False, default_factory=list)
    abs_err_persistence: list[float] = field(repr=False, default_factory=list)
    horizons: list[dict[str, Any]] = field(repr=False, default_factory=list)
    """Range scores per horizon (:func:`range_scores`)."""


@dataclass
class FoldForecasts:
    """One fold's out-of-sample forecasts, what the range scores and the plot are computed from."""

    timestamps: np.ndarray
    """First target hour of each forecast (UTC, naive datetime64) ``(n,)``."""
    last_close: np.ndarray
    targets: np.ndarray
    """Closes at every horizon ``(n, H)``."""
    quantiles: dict[str, np.ndarray]
    """Price quantiles ``(n, H, L)`` of ``model``, ``naive``, ``ewma`` and ``garch``."""
    horizons: tuple[int, ...]
    levels: tuple[float, ...]


@dataclass
class BacktestReport:
    pair: str
    window: str
    settings: dict[str, Any]
    folds: list[FoldResult]
    pooled: dict[str, Any]
    forecasts: list[FoldForecasts] = field(repr=False, default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (``backtest.json``): everything but the forecast arrays."""
        data = asdict(replace(self, forecasts=[]))
        del data["forecasts"]
        return json_ready(data)  # an unknown standard error is inf: null in JSON


def fold_origins(end: datetime, folds: int, fold_hours: int) -> list[datetime]:
    """``[o_1, ..., o_K]`` with ``o_k = end - (K - k + 1) * fold_hours`` (oldest first)."""
    if folds < 1:
        raise DataValidationError(f"--folds must be at least 1, got {folds}")
    if fold_hours < 1:
        raise DataValidationError(f"fold length must be at least 1 hour, got {fold_hours}")
    return [end - timedelta(hours=(folds - k + 1) * fold_hours) for k in range(1, folds + 1)]


def test_windows(
    candles: pd.DataFrame,
    origin: datetime,
    hours: int,
    seq_len: int,
    features: tuple[str, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw model windows, targets and target times for the hours ``[origin, origin + hours)``.

    Each window holds the ``seq_len`` candles before its target hour (history before the origin is input,
    never target). ``candles`` must be on a regular hourly grid.
    """
    ts = pd.DatetimeIndex(candles["timestamp"])
    o = pd.Timestamp(origin)
    first = ts.searchsorted(o) - seq_len
    if first < 0:
        raise DataValidationError(f"need {seq_len} candles before {iso(origin)} to forecast it")
    stop = ts.searchsorted(o + pd.Timedelta(hours=hours))
    part = candles.iloc[first:stop]
    if len(part) <= seq_len:
        raise DataValidationError(f"no candles after the origin {iso(origin)}")
    x, y = make_windows(make_features(part, features or FEATURE_NAMES), seq_len)
    return x, y, pd.DatetimeIndex(part["timestamp"]).to_numpy()[seq_len:]


def fold_forecasts(
    session: Any, candles: pd.DataFrame, start: datetime, origin: datetime, hours: int
) -> FoldForecasts:
    """The model's and both baselines' quantiles for the forecasts whose first target hour is in ``[origin,
    origin + hours)`` (those with every horizon's target in ``candles``); the baselines see ``[start, origin)``."""
    from mur.model.export import model_metadata, run_forecast
    from mur.model.inference import model_seq_len

    meta = model_metadata(session)
    horizons, levels = tuple(meta["horizons"]), tuple(meta["quantile_levels"])
    if not horizons:
        raise ModelError("the backtest scores ranges: this model has no quantile outputs")
    o, stop = pd.Timestamp(origin), pd.Timestamp(origin) + pd.Timedelta(hours=hours)
    ts = pd.DatetimeIndex(candles["timestamp"])
    part = candles[(ts >= pd.Timestamp(start)) & (ts < stop + pd.Timedelta(hours=max(horizons) - 1))]
    ds = build_dataset(
        part.reset_index(drop=True),
        model_seq_len(session),
        "relative",  # the graph normalizes its raw windows itself
        feature_names=tuple(meta["features"]),
        horizons=horizons,
    )
    t = pd.DatetimeIndex(ds.timestamps)
    idx = np.flatnonzero((t >= o.tz_localize(None)) & (t < stop.tz_localize(None)))
    if idx.size == 0:
        raise DataValidationError(f"no forecast after {iso(origin)} has its {max(horizons)} h target")
    _, q = run_forecast(session, ds.x[idx])
    assert q is not None  # the metadata lists horizons
    return FoldForecasts(
        timestamps=ds.timestamps[idx],
        last_close=persistence_forecast(ds.x[idx]),
        targets=ds.horizon_targets[idx],
        quantiles={"model": q, **horizon_baselines(ds, idx, levels)},
        horizons=ds.horizons,
        levels=levels,
    )


def concat_forecasts(parts: list[FoldForecasts]) -> FoldForecasts:
    """All folds' forecasts as one set (time order)."""
    return FoldForecasts(
        timestamps=np.concatenate([p.timestamps for p in parts]),
        last_close=np.concatenate([p.last_close for p in parts]),
        targets=np.concatenate([p.targets for p in parts]),
        quantiles={k: np.concatenate([p.quantiles[k] for p in parts]) for k in parts[0].quantiles},
        horizons=parts[0].horizons,
        levels=parts[0].levels,
    )


def range_scores(f: FoldForecasts, *, tests: bool) -> list[dict[str, Any]]:
    """Per horizon: :func:`~mur.evaluation.metrics.horizon_scores` (the ranges' scores; with ``tests``, the
    median's point scores and the DM tests too) and ``reliability`` (frequency of outcomes at or below each
    level's quantile)."""
    model, base = f.quantiles["model"], {k: v for k, v in f.quantiles.items() if k != "model"}
    rows = horizon_scores(model, f.targets, f.last_close, base, f.horizons, f.levels, tests=tests)
    for j, row in enumerate(rows):
        row["reliability"] = {"levels": list(f.levels)} | {
            k: reliability(q[:, j], f.targets[:, j]).round(6).tolist() for k, q in f.quantiles.items()
        }
    return rows


def range_verdict(h: dict[str, Any], alpha: float = 0.05) -> str:
    """One honest line per horizon: coverage vs nominal, and whether the range beats each baseline."""
    vs = [
        verdict(
            h[f"interval_dm_p_better{s}"],
            h[f"interval_dm_p_worse{s}"],
            h[key],
            alpha,
            name,
            "the range",
            score,
        )
        for name, key, s, score in (
            ("the naive range (a)", "interval_skill", "", "interval skill"),
            ("the EWMA range (b)", "interval_skill_vs_ewma", "_vs_ewma", "interval skill vs (b)"),
            ("the GARCH(1,1)-t range (c)", "interval_skill_vs_garch", "_vs_garch", "interval skill vs (c)"),
        )
        if h.get(key) is not None  # (c) is missing from documents before it
    ]
    cov = f"coverage {h['interval']['coverage']:.3f} (nominal {h['interval_level']:.2f})"
    return f"{h['hours']} h: {cov}; " + "; ".join(vs)


def run_backtest(
    pair: str,
    candles: pd.DataFrame,
    train: TrainFn,
    *,
    folds: int = 4,
    fold_hours: int = 168,
    seq_len: int = 24,
    window: Window = "sliding",
    train_days: int | None = 365,
    min_train_hours: int = 500,
    end: datetime | None = None,
    progress: Callable[[str], None] = lambda _msg: None,
) -> BacktestReport:
    """Walk forward over ``candles`` (regular hourly grid, as loaded for training) and score each fold."""
    from mur.model.export import load_session, model_metadata, run_session
    from mur.model.inference import model_seq_len

    if window not in ("sliding", "expanding"):
        raise DataValidationError(f"window must be 'sliding' or 'expanding', got {window!r}")
    ts = pd.DatetimeIndex(candles["timestamp"])
    last_end = (ts[-1] + pd.Timedelta(hours=1)).to_pydatetime()
    end = min(pd.Timestamp(end).to_pydatetime(), last_end) if end is not None else last_end
    origins = fold_origins(end, folds, fold_hours)
    results: list[FoldResult] = []
    forecasts: list[FoldForecasts] = []
    for k, origin in enumerate(origins, start=1):
        start = ts[0].to_pydatetime()
        if window == "sliding" and train_days:
            start = max(start, origin - timedelta(days=train_days))
        history = candles[(ts >= pd.Timestamp(start)) & (ts < pd.Timestamp(origin))].reset_index(drop=True)
        if len(history) < min_train_hours:
            raise DataValidationError(
                f"fold {k}: only {len(history)} candles before {iso(origin)} (need {min_train_hours}); "
                "use fewer folds, shorter folds or more data"
            )
        progress(f"fold {k}/{folds}: training on {iso(start)} .. {iso(origin)} ({len(history)} h)")
        session = load_session(train(history))
        forecasts.append(fold_forecasts(session, candles, start, origin, fold_hours))
        x, y, target_ts = test_windows(
            candles, origin, fold_hours, model_seq_len(session), tuple(model_metadata(session)["features"])
        )
        pred = np.asarray(run_session(session, x), dtype=np.float64).reshape(-1)
        last = persistence_forecast(x)
        m, p = regression_metrics(pred, y, last), regression_metrics(last, y, last)
        fold = FoldResult(
            fold=k,
            origin=iso(origin),
            train_start=iso(start),
            test_end=iso(pd.Timestamp(target_ts[-1]) + pd.Timedelta(hours=1)),
            n=len(y),
            model=m,
            persistence=p,
            skill=skill(m["mae"], p["mae"]),
            evidence=point_evidence(pred, y, last),
            timestamps=[iso(t) for t in target_ts],
            abs_err_model=np.abs(pred - y).round(8).tolist(),
            abs_err_persistence=np.abs(last - y).round(8).tolist(),
            horizons=range_scores(forecasts[-1], tests=False),
        )
        progress(f"fold {k}/{folds}: skill {fold.skill:+.4f} on {fold.n} h after {fold.origin}")
        results.append(fold)
    return BacktestReport(
        pair=pair,
        window=window,
        folds=results,
        pooled=pool(results, forecasts),
        settings={
            "folds": folds,
            "fold_hours": fold_hours,
            "seq_len": seq_len,
            "train_days": train_days,
            "end": iso(end),
        },
        forecasts=forecasts,
    )


def pool(folds: list[FoldResult], forecasts: list[FoldForecasts]) -> dict[str, Any]:
    """Pooled out-of-sample metrics over all folds (errors and forecasts concatenated; tests on the pool)."""
    every = concat_forecasts(forecasts)
    if len(every.targets) <= max(every.horizons):
        raise DataValidationError(
            f"{len(every.targets)} forecasts in all are too few to test the {max(every.horizons)} h horizon: "
            "use more or longer folds"
        )
    horizons = range_scores(every, tests=True)
    em = np.concatenate([np.asarray(f.abs_err_model) for f in folds])
    ep = np.concatenate([np.asarray(f.abs_err_persistence) for f in folds])
    dm = diebold_mariano(em, ep)  # on absolute errors: |e| is the loss itself
    hits = sum(int(f.evidence["direction_hits"]) for f in folds)
    n_dir = sum(int(f.evidence["direction_n"]) for f in folds)
    mae_m, mae_p = float(em.mean()), float(ep.mean())
    return {
        "n": int(em.size),
        "mae_model": mae_m,
        "mae_persistence": mae_p,
        "skill": skill(mae_m, mae_p),
        "dm_statistic": dm.statistic,
        "dm_p_better": dm.p_better,
        "dm_p_worse": dm.p_worse,
        "directional_accuracy": (hits / n_dir) if n_dir else None,
        "direction_p_value": binomial_p_value(hits, n_dir) if n_dir else None,
        "beats_persistence": bool(dm.p_better < 0.05),
        "verdict": verdict(dm.p_better, dm.p_worse, skill(mae_m, mae_p)),
        "quantile_levels": list(every.levels),
        "horizons": horizons,
        "range_verdicts": [range_verdict(h) for h in horizons],
    }


def write_outputs(report: BacktestReport, out_dir: Path) -> tuple[Path, Path]:
    """``backtest.json`` and ``backtest.png`` (per horizon: reliability, rolling coverage and Winkler)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "backtest.json"
    json_path.write_text(json.dumps(report.to_dict(), indent=2))
    png_path = out_dir / "backtest.png"
    chart(report, png_path)
    return json_path, png_path


PREDICTOR_STYLES = (
    ("model", "tab:blue", "-"),
    ("naive", "tab:gray", "--"),
    ("ewma", "tab:orange", ":"),
    ("garch", "tab:green", "-."),
)
ROLLING = 24
"""Forecasts per rolling mean in the plot."""


def chart(report: BacktestReport, path: Path) -> None:
    """One column per horizon: the pooled reliability diagram (model and baselines vs the diagonal), then
    the rolling coverage (nominal level dashed) and rolling Winkler score over time, fold origins in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    every = concat_forecasts(report.forecasts)
    levels = np.asarray(every.levels)
    alpha = 1.0 - (levels[-1] - levels[0])
    t = pd.DatetimeIndex(every.timestamps)
    fig, axes = plt.subplots(3, len(every.horizons), figsize=(5.5 * len(every.horizons), 11), squeeze=False)
    for j, (hours, scores) in enumerate(zip(every.horizons, report.pooled["horizons"], strict=True)):
        rel, cov, win = axes[:, j]
        y = every.targets[:, j]
        rel.plot([0, 1], [0, 1], color="black", lw=0.8, label="ideal")
        for name, color, ls in PREDICTOR_STYLES:
            lo, hi = every.quantiles[name][:, j, 0], every.quantiles[name][:, j, -1]
            style = {"color": color, "ls": ls, "label": name}
            rel.plot(levels, scores["reliability"][name], marker="o", **style)
            for ax, v in ((cov, (y >= lo) & (y <= hi)), (win, winkler_scores(lo, hi, y, alpha))):
                ax.plot(t, pd.Series(v, index=t, dtype=float).rolling(ROLLING, min_periods=1).mean(), **style)
        cov.axhline(1.0 - alpha, color="black", lw=0.8, ls="--")
        for ax in (cov, win):
            for f in report.folds:
                ax.axvline(pd.Timestamp(f.origin).tz_localize(None), color="tab:red", lw=0.8, alpha=0.6)
            ax.tick_params(axis="x", labelrotation=30)
        rel.set(
            title=f"{hours} h: reliability (n={scores['n']})",
            xlabel="quantile level",
            ylabel="share of outcomes at or below",
        )
        cov.set(title=f"{hours} h: coverage, {ROLLING}-forecast rolling mean", ylim=(-0.02, 1.02))
        win.set(title=f"{hours} h: Winkler score, {ROLLING}-forecast rolling mean", ylabel="quote currency")
        rel.legend(loc="upper left")
    pooled = report.pooled
    fig.suptitle(
        f"{report.pair}: walk-forward ranges ({1 - alpha:.0%} intervals), {len(report.folds)} folds "
        f"(origins in red); 1 h point skill {pooled['skill']:+.4f}, DM p(better)={pooled['dm_p_better']:.3g}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def range_metrics(h: dict[str, Any], prefix: str) -> dict[str, float]:
    """One horizon's range scores as flat MLflow metrics named ``PREFIX_...``."""
    out = {
        f"{prefix}_{name}_{k}": float(v)
        for name in ("interval", "naive", "ewma", "garch")
        for k, v in (h.get(name) or {}).items()
    }
    return out | {
        f"{prefix}_{k}": float(v)
        for k, v in h.items()
        if k.startswith("interval_") and isinstance(v, int | float)
    }


def log_to_mlflow(
    report: BacktestReport, files: tuple[Path, ...], *, tracking_uri: str, experiment: str
) -> str | None:
    """Log the pooled metrics and the files as one MLflow run when the tracking server answers."""
    import httpx

    try:
        answered = httpx.get(f"{tracking_uri.rstrip('/')}/health", timeout=3).status_code == 200
    except (httpx.HTTPError, httpx.InvalidURL):
        answered = False
    if not answered:
        log.info("MLflow at %s does not answer: backtest not logged", tracking_uri)
        return None
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    home = mlflow.set_experiment(experiment)  # its id: see log_and_register
    with mlflow.start_run(experiment_id=home.experiment_id, run_name=f"backtest-{report.pair}") as run:
        mlflow.set_tags({"pair": report.pair, "kind": "backtest", "window": report.window})
        mlflow.log_params(report.settings)
        mlflow.log_metrics(
            {
                f"pooled_{k}": float(v)
                for k, v in report.pooled.items()
                if isinstance(v, int | float) and not isinstance(v, bool) and v is not None
            }
        )
        for f in report.folds:
            mlflow.log_metrics(
                {
                    "fold_skill": f.skill,
                    "fold_mae_model": f.model["mae"],
                    "fold_mae_persistence": f.persistence["mae"],
                },
                step=f.fold,
            )
            for h in f.horizons:
                mlflow.log_metrics(range_metrics(h, f"fold_h{h['hours']}"), step=f.fold)
        for h in report.pooled["horizons"]:
            mlflow.log_metrics(range_metrics(h, f"pooled_h{h['hours']}"))
        for p in files:
            mlflow.log_artifact(str(p))
        return str(run.info.run_id)
