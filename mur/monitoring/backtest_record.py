"""The backtest track record (sql/0013_backtest_forecasts.sql, docs/monitoring.md "Backtest track record"):
when the gate promotes a version, its forecasts of its own test span (out-of-sample: the weights never saw
it, the calibration was fitted on the validation span) are computed through its ONNX graph and stored apart
from the served track record, so that a new stack shows evidence from its first minute. Always labelled
"backtest"; never read by the live scores, the online calibration, monitoring or alerts."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mur.errors import ModelError
from mur.pairs import normalize_pair
from mur.timeutil import HOUR, parse_time

if TYPE_CHECKING:
    from mur.model.features import Dataset
    from mur.settings import Settings

log = logging.getLogger(__name__)

LABEL = "Backtest (out-of-sample, before serving)"


def backtest_rows(
    model: Path | bytes, ds: Dataset, *, pair: str, version: int, idx: np.ndarray | None = None
) -> list[dict[str, Any]]:
    """One row per test window (``idx``, default the dataset's test span) and horizon
    (:func:`mur.db.forecasts.record_backtest`'s keys): the median and range the graph gives, made when the
    window's last candle closed, with the close that happened."""
    from mur.evaluation.metrics import persistence_forecast
    from mur.model.export import load_session, model_metadata, run_forecast
    from mur.model.inference import horizon_rows, model_seq_len

    session = load_session(model)
    meta, names, length = model_metadata(session), list(ds.feature_names), model_seq_len(session)
    if not set(meta["features"]) <= set(names) or length > ds.spec.seq_len:
        return []
    idx = ds.split.test if idx is None else idx
    quantiles = run_forecast(session, ds.x[idx][:, -length:, [names.index(f) for f in meta["features"]]])[1]
    if quantiles is None:  # a point-only graph: no range to show
        return []
    last, targets = persistence_forecast(ds.x[idx]), ds.horizon_targets[idx]
    common = {"pair": normalize_pair(pair), "version": int(version)}
    rows = []
    for i, first_target in enumerate(ds.timestamps[idx]):
        made_at = pd.Timestamp(first_target).tz_localize("UTC")  # the last candle's close
        try:
            bands = horizon_rows(quantiles[i], meta["horizons"], meta["quantile_levels"], made_at - HOUR)
        except ModelError:  # an unusable range for this window: left out, as Serve would not answer it
            continue
        for band in (b for b in bands if b["hours"] in ds.horizons):
            actual = float(targets[i, ds.horizons.index(band["hours"])])
            if np.isfinite(actual):
                rows.append(
                    common
                    | {k: band[k] for k in ("hours", "median", "lower", "upper", "level")}
                    | {"target": parse_time(band["target_time"]), "made_at": made_at.to_pydatetime()}
                    | {"last_close": float(last[i]), "actual": actual}
                )
    return rows


def record_backtest(settings: Settings, *, pair: str, version: int, model: Path | bytes, ds: Dataset) -> int:
    """Store a newly promoted version's backtest track record (once: a reload adds nothing); how many rows
    were new. Never raises: a promotion whose backtest could not be stored still stands (logged)."""
    from mur.db import Database
    from mur.db.forecasts import record_backtest as store

    try:
        rows = backtest_rows(model, ds, pair=pair, version=version)
        with Database(settings, maxconn=1, pool_timeout_s=10.0) as db:
            added = store(db, rows)
        log.info("%s v%s: %d backtest forecasts of its test span stored", pair, version, added)
        return added
    except Exception as exc:  # the backtest is evidence for the dashboard, never a condition of promotion
        log.warning("%s v%s: backtest track record not stored: %s", pair, version, exc)
        return 0
