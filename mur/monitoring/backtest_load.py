"""``mur up``'s backfill of the backtest track record (:mod:`mur.monitoring.backtest_record`): a champion
promoted before backtests were recorded, or whose load failed, gets its test span's forecasts now, rebuilt
from its registry tags (its ONNX graph, the candles of its data window, the windows of its test span)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mur.monitoring.backtest_record import backtest_rows

if TYPE_CHECKING:
    from mur.settings import Settings

log = logging.getLogger(__name__)


def rebuilt_rows(
    settings: Settings, pair: str, version: int, model: Path | bytes, tags: dict[str, str]
) -> list[dict[str, object]]:
    """The backtest rows of a registered version from its tags (``data_window_end``, ``test_window_start``,
    ``test_window_end``, ``normalization``): the windows of its own length and inputs whose first target lies
    in its test span, cut from the candles before its window end."""
    from mur.model.export import load_session, model_metadata
    from mur.model.features import build_dataset
    from mur.model.inference import model_seq_len
    from mur.timeutil import parse_time
    from mur.training.driver import load_candles

    session = load_session(model)
    meta = model_metadata(session)
    candles = load_candles(settings, pair, end=parse_time(tags["data_window_end"]))[0]
    ds = build_dataset(
        candles,
        model_seq_len(session),
        tags.get("normalization") or settings.model.normalization,  # type: ignore[arg-type]
        feature_names=tuple(meta["features"]),
        horizons=tuple(meta["horizons"]),
    )
    start, end = (np.datetime64(tags[k].rstrip("Z")) for k in ("test_window_start", "test_window_end"))
    idx = np.flatnonzero((ds.timestamps >= start) & (ds.timestamps <= end))
    return backtest_rows(model, ds, pair=pair, version=version, idx=idx)


def ensure_backtests(
    settings: Settings, pairs: Iterable[str], say: Callable[[str], None] = log.info
) -> dict[str, int]:
    """For each of ``pairs`` whose champion has no backtest rows yet: rebuild and store them. Returns
    ``{pair: rows added}``; never raises (a pair that fails is said and skipped: the stack runs without)."""
    from mur.db import Database
    from mur.db.forecasts import backtest_forecasts, record_backtest
    from mur.registry.checksums import TAG
    from mur.registry.client import configure
    from mur.registry.download import onnx_bytes
    from mur.registry.names import version_uri
    from mur.registry.versions import champion_version

    added: dict[str, int] = {}
    prefix = settings.registry.registry_prefix
    for pair in pairs:
        try:
            champion = champion_version(configure(settings, fail_fast_s=10.0), pair, prefix)
            if champion is None:
                continue
            version, tags = int(champion.version), dict(champion.tags or {})
            with Database(settings, maxconn=1, pool_timeout_s=10.0) as db:
                if backtest_forecasts(db, pair=pair, version=version, horizon_hours=1):
                    continue
                model = onnx_bytes(version_uri(pair, version, prefix), tags.get(TAG))
                added[pair] = record_backtest(db, rebuilt_rows(settings, pair, version, model, tags))
            say(
                f"{pair}: backtest track record of v{version} loaded ({added[pair]} forecasts of its test span)"
            )
        except Exception as exc:  # evidence for the dashboard, never a condition of the stack
            say(f"{pair}: no backtest track record loaded ({type(exc).__name__}: {exc})")
    return added
