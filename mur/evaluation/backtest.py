"""Rolling-origin (walk-forward) evaluation: retrain at K successive origins, score the hours after each.

Fold ``k`` (``k = 1..K``) has origin ``o_k = end - (K - k + 1) * fold_hours``. The model is trained on
candles strictly before ``o_k`` — a **sliding** window of ``train_days`` (what the hourly DAG does) or an
**expanding** window from the first candle — and scored on the ``fold_hours`` hours ``[o_k, o_k +
fold_hours)`` it never saw, next to persistence on exactly the same targets. Folds are pooled by
concatenating their out-of-sample errors; the pooled Diebold-Mariano test (HLN-corrected) and the
directional binomial test run on the pooled errors.

Training is passed in (``train``: candles -> ONNX bytes), so the same code backtests the local trainer,
a Ray Train fit or a baseline. Pure apart from that callable and the optional file/MLflow outputs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from mur.errors import DataValidationError
from mur.evaluation.metrics import persistence_forecast, regression_metrics, skill
from mur.evaluation.significance import binomial_p_value, diebold_mariano, point_evidence
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


@dataclass
class BacktestReport:
    pair: str
    window: str
    folds: list[FoldResult]
    pooled: dict[str, Any]
    settings: dict[str, Any]

    def to_dict(self, *, with_errors: bool = True) -> dict[str, Any]:
        folds = []
        for f in self.folds:
            d = asdict(f)
            if not with_errors:
                for k in ("timestamps", "abs_err_model", "abs_err_persistence"):
                    d.pop(k)
            folds.append(d)
        return {
            "pair": self.pair,
            "window": self.window,
            "settings": self.settings,
            "folds": folds,
            "pooled": self.pooled,
        }


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
    from mur.model.features import FEATURE_NAMES, make_features, make_windows

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
        )
        progress(f"fold {k}/{folds}: skill {fold.skill:+.4f} on {fold.n} h after {fold.origin}")
        results.append(fold)
    return BacktestReport(
        pair=pair,
        window=window,
        folds=results,
        pooled=pool(results),
        settings={
            "folds": folds,
            "fold_hours": fold_hours,
            "seq_len": seq_len,
            "train_days": train_days,
            "end": iso(end),
        },
    )


def pool(folds: list[FoldResult]) -> dict[str, Any]:
    """Pooled out-of-sample metrics over all folds (errors concatenated; DM and binomial on the pool)."""
    em = np.concatenate([np.asarray(f.abs_err_model) for f in folds])
    ep = np.concatenate([np.asarray(f.abs_err_persistence) for f in folds])
    dm = diebold_mariano(em, ep, loss="absolute")  # on absolute errors: |e| is the loss itself
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
    }


def verdict(p_better: float, p_worse: float, s: float, alpha: float = 0.05) -> str:
    """One honest sentence about the pooled result."""
    if p_better < alpha:
        return f"model beats persistence (skill {s:+.4f}, DM p={p_better:.3g})"
    if p_worse < alpha:
        return f"model is significantly WORSE than persistence (skill {s:+.4f}, DM p={p_worse:.3g})"
    return (
        f"no significant difference from persistence (skill {s:+.4f}, DM p(better)={p_better:.3g}, "
        f"p(worse)={p_worse:.3g})"
    )


def write_outputs(report: BacktestReport, out_dir: Path) -> tuple[Path, Path]:
    """``backtest.json`` and ``backtest.png`` (rolling absolute error of model vs persistence)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "backtest.json"
    json_path.write_text(json.dumps(report.to_dict(), indent=2))
    png_path = out_dir / "backtest.png"
    chart(report, png_path)
    return json_path, png_path


def chart(report: BacktestReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=100)
    for f in report.folds:
        t = pd.to_datetime(f.timestamps)
        em = pd.Series(f.abs_err_model, index=t).rolling(24, min_periods=1).mean()
        ep = pd.Series(f.abs_err_persistence, index=t).rolling(24, min_periods=1).mean()
        ax.plot(em.index, em.values, color="tab:blue", lw=1.2, label="model" if f.fold == 1 else None)
        ax.plot(
            ep.index,
            ep.values,
            color="tab:gray",
            lw=1.2,
            ls="--",
            label="persistence" if f.fold == 1 else None,
        )
        ax.axvline(pd.Timestamp(f.origin), color="tab:red", lw=0.8, alpha=0.6)
    pooled = report.pooled
    ax.set_title(
        f"{report.pair}: walk-forward absolute error (24 h rolling mean), {len(report.folds)} folds, "
        f"pooled skill {pooled['skill']:+.4f}, DM p(better)={pooled['dm_p_better']:.3g}"
    )
    ax.set_ylabel("absolute error (quote currency)")
    ax.legend(loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def log_to_mlflow(
    report: BacktestReport, files: tuple[Path, Path], *, tracking_uri: str, experiment: str
) -> str | None:
    """Log the pooled metrics and both files as one MLflow run when the tracking server answers."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=3) as resp:
            if resp.status != 200:
                return None
    except OSError:
        log.info("MLflow at %s does not answer: backtest not logged", tracking_uri)
        return None
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=f"backtest-{report.pair}") as run:
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
        for p in files:
            mlflow.log_artifact(str(p))
        return str(run.info.run_id)
