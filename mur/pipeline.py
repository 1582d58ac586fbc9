"""The training pipeline for one pair, shared by ``mur train`` (local) and the Ray job.

Stages (each a function, each testable alone): candles for a data window → dataset → fit → ONNX export
→ evaluation on the test span against persistence and linear baselines → ``metrics.json``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from mur.errors import DataValidationError
from mur.features import Dataset, build_dataset
from mur.models import ModelConfig
from mur.settings import Settings
from mur.training import TrainConfig

log = logging.getLogger(__name__)
MIN_CANDLES = 200


@dataclass(frozen=True)
class DataWindow:
    """Half-open window ``[start, end)`` on candle open times."""

    start: datetime
    end: datetime

    def to_dict(self) -> dict[str, str]:
        return {"start": iso(self.start), "end": iso(self.end)}


def iso(ts: datetime | pd.Timestamp) -> str:
    """ISO-8601 UTC with a trailing Z."""
    t = pd.Timestamp(ts)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | datetime | None) -> datetime | None:
    """Parse an ISO-8601 time (naive = UTC); None stays None. Bad input → DataValidationError."""
    if value is None or isinstance(value, datetime):
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise DataValidationError(
            f"cannot parse time '{value}': use ISO-8601 like 2025-06-01T00:00:00Z"
        ) from exc
    if ts is pd.NaT:
        raise DataValidationError(f"cannot parse time '{value}'")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.to_pydatetime()


def model_config(settings: Settings, **overrides: object) -> ModelConfig:
    """Model hyper-parameters from settings (CLI/job overrides win when not None)."""
    base = {
        "arch": settings.arch,
        "hidden_size": settings.hidden_size,
        "num_layers": settings.num_layers,
        "dropout": settings.dropout,
    }
    base.update({k: v for k, v in overrides.items() if v is not None and k in base})
    return ModelConfig(**base)


def train_config(settings: Settings, **overrides: object) -> TrainConfig:
    """Optimization hyper-parameters from settings (overrides win when not None)."""
    base = {
        "epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate,
        "patience": settings.patience,
        "seed": settings.seed,
    }
    base.update({k: v for k, v in overrides.items() if v is not None and k in base})
    return TrainConfig(**base)


def load_candles(
    settings: Settings,
    pair: str,
    end: datetime | None = None,
    data_csv: Path | None = None,
    train_days: int | None = -1,
    min_rows: int = MIN_CANDLES,
) -> tuple[pd.DataFrame, DataWindow, list[pd.Timestamp]]:
    """Candles strictly before ``end`` (default: the data's end) within ``train_days``, on a regular grid.

    Returns the candles, the data window actually used and the hours filled by the gap policy.
    """
    from mur.market_data import get_market_data, load_candles_csv, regularize_hourly, validate_candles

    days = settings.train_days if train_days == -1 else train_days
    if data_csv is not None:
        candles = load_candles_csv(Path(data_csv))
        if end is not None:
            candles = candles[candles["timestamp"] < pd.Timestamp(end)]
        if days:
            last = candles["timestamp"].iloc[-1] if len(candles) else pd.Timestamp(end or datetime.now(UTC))
            candles = candles[candles["timestamp"] >= last - pd.Timedelta(days=days)]
    else:
        source = get_market_data(settings)
        if end is None:
            if settings.market_data == "bundled":
                end = pd.Timestamp(source.data_range(pair)[1]).to_pydatetime() + timedelta(hours=1)
            else:
                end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
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


def prepare(settings: Settings, candles: pd.DataFrame, normalization: str | None = None) -> Dataset:
    """Features, split, normalization fitted on train, windows."""
    return build_dataset(candles, settings.seq_len, normalization or settings.normalization)  # type: ignore[arg-type]


def evaluate_onnx(onnx_path_or_bytes: Path | bytes, ds: Dataset) -> dict[str, object]:
    """Evaluate an exported model on the dataset's test windows next to both baselines."""
    from mur.evaluate import LinearBaseline, evaluate_all
    from mur.export import load_session, run_session

    x_test, y_test = ds.x[ds.split.test], ds.y[ds.split.test]
    pred = run_session(load_session(onnx_path_or_bytes), x_test)
    linear = LinearBaseline(ds.spec.seq_len).fit(ds.x[ds.split.train], ds.y[ds.split.train])
    return evaluate_all(pred, x_test, y_test, linear.predict(x_test))


def metrics_document(
    pair: str,
    mcfg: ModelConfig,
    ds: Dataset,
    window: DataWindow,
    evaluation: dict[str, object],
    **extra: object,
) -> dict[str, object]:
    """The ``metrics.json`` document (shape documented in README)."""
    test_ts = ds.timestamps[ds.split.test]
    doc: dict[str, object] = {
        "pair": pair,
        "arch": mcfg.arch,
        "normalization": ds.spec.normalization,
        "data_window": window.to_dict(),
        "test_window": {
            "start": iso(test_ts[0]),
            "end": iso(test_ts[-1]),
        },
        **evaluation,
    }
    doc.update(extra)
    return doc


def train_local(
    settings: Settings,
    pair: str,
    out_dir: Path,
    *,
    end: datetime | None = None,
    data_csv: Path | None = None,
    normalization: str | None = None,
    progress: bool = True,
    **overrides: object,
) -> dict[str, object]:
    """Train one pair in this process, export ``model.onnx`` and write ``metrics.json``; return the metrics."""
    from mur.export import export_onnx
    from mur.models import build_model
    from mur.training import fit_local, seed_everything

    candles, window, filled = load_candles(settings, pair, end=end, data_csv=data_csv)
    ds = prepare(settings, candles, normalization)
    mcfg, tcfg = model_config(settings, **overrides), train_config(settings, **overrides)
    seed_everything(tcfg.seed)
    model = build_model(mcfg, seed=tcfg.seed)
    history = fit_local(model, ds.model_arrays("train"), ds.model_arrays("val"), tcfg, progress=progress)
    out_dir = Path(out_dir)
    onnx_path = export_onnx(model, ds.spec, out_dir / "model.onnx", ds.x[ds.split.test][:64])
    evaluation = evaluate_onnx(onnx_path, ds)
    doc = metrics_document(
        pair,
        mcfg,
        ds,
        window,
        evaluation,
        best_epoch=history.best_epoch,
        epochs_run=len(history.val_loss),
        filled_hours=[iso(t) for t in filled],
    )
    (out_dir / "metrics.json").write_text(json.dumps(doc, indent=2))
    (out_dir / "feature_spec.json").write_text(json.dumps(ds.spec.to_dict(), indent=2))
    return doc


def train_local_and_register(
    settings: Settings, pair: str, *, end: datetime | None = None, **overrides: object
) -> dict[str, object]:
    """Train in-process (no Ray), then log/register/gate exactly like the Ray job does.

    Used by ``mur train PAIR --register`` and by tests that need a registered model quickly.
    """
    import tempfile

    from mur.export import export_onnx
    from mur.models import build_model
    from mur.ray_train import idempotency_key, training_params
    from mur.registry import log_and_register
    from mur.training import fit_local, seed_everything

    pair = pair.lower()
    candles, window, _ = load_candles(settings, pair, end=end)
    ds = prepare(settings, candles)
    mcfg, tcfg = model_config(settings, **overrides), train_config(settings, **overrides)
    seed_everything(tcfg.seed)
    model = build_model(mcfg, seed=tcfg.seed)
    history = fit_local(model, ds.model_arrays("train"), ds.model_arrays("val"), tcfg, progress=False)
    params = {**training_params(settings, mcfg, tcfg), "trainer": "local"}
    rows = [
        {"epoch": i, "train_loss": t, "val_loss": v}
        for i, (t, v) in enumerate(zip(history.train_loss, history.val_loss, strict=True))
    ]
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(model, ds.spec, Path(tmp) / "model.onnx", ds.x[ds.split.test][:64])
        doc = metrics_document(
            pair, mcfg, ds, window, evaluate_onnx(onnx_path, ds), best_epoch=history.best_epoch
        )
        reg = log_and_register(
            settings,
            pair=pair,
            onnx_path=onnx_path,
            feature_spec=ds.spec.to_dict(),
            metrics_doc=doc,
            params=params,
            history=rows,
            x_test=ds.x[ds.split.test],
            y_test=ds.y[ds.split.test],
            idempotency_key=idempotency_key(pair, window.to_dict()["end"], params),
        )
    return {
        **reg.to_dict(),
        "data_window": window.to_dict(),
        "metrics": doc,
        "model_name": f"{settings.registry_prefix}{pair}",
    }
