"""The backtest track record (issue 40): a tiny trained model's forecasts of its test span, loaded once per
version through its ONNX graph into a table of their own, by the gate's promotion and by ``mur up`` for a
champion without them (rebuilt from its registry tags: the same rows); the live track record, the
monitoring report and the online calibration never see them (the API's ``source=backtest``:
tests/serve/test_backtest_api.py). PostgreSQL and an MLflow registry in a SQLite file."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mur.clock import MarketClock
from mur.data import BundledMarketData
from mur.data.source import ClockedMarketData
from mur.db import Database
from mur.db.calibration import update_from_resolved
from mur.db.forecasts import backtest_forecasts, scored_counts, scored_forecasts
from mur.model.export import export_onnx
from mur.monitoring.backtest_load import ensure_backtests, rebuilt_rows
from mur.monitoring.backtest_record import backtest_rows, record_backtest
from mur.monitoring.compute import build_report, thresholds_from
from mur.registry.names import CHAMPION
from mur.registry.versions import log_and_register
from mur.settings import Settings
from mur.timeutil import iso
from mur.training.driver import (
    DataWindow,
    calibrate,
    evaluate_onnx,
    load_candles,
    metrics_document,
    prepare,
)
from mur.training.loop import LocalFit
from mur.training.params import model_config, train_config

PAIR = "btc_usdt"
END = pd.Timestamp("2025-03-01", tz="UTC")
TINY_VALUES: dict[str, Any] = {"train_days": 60, "num_layers": 1, "hidden_size": 8, "epochs": 2}
TINY = Settings(**TINY_VALUES, market_data="bundled")


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, DataWindow]:
    candles, window, _ = load_candles(TINY, PAIR, end=END)
    ds = prepare(TINY, candles)
    model = LocalFit()(
        ds.model_arrays("train"), ds.model_arrays("val"), model_config(TINY), train_config(TINY)
    )
    path = export_onnx(
        calibrate(model.model, ds), tmp_path_factory.mktemp("bt") / "m.onnx", ds.x[ds.split.test][:16]
    )
    return path, ds, window


def test_loaded_once_per_version_and_never_live(
    champion: tuple[Path, Any, DataWindow], pg_database_factory: Callable[..., Settings]
) -> None:
    path, ds, _ = champion
    settings = pg_database_factory()
    rows = backtest_rows(path, ds, pair=PAIR, version=3)  # type: ignore[arg-type]
    n_test = len(ds.split.test)  # type: ignore[attr-defined]
    assert len(rows) == n_test * len(ds.horizons)  # type: ignore[attr-defined]
    for row in rows[:50]:  # the forecast for h hours after the last candle's close: candle (h - 1) h later
        assert row["target"] == row["made_at"] + timedelta(hours=row["hours"] - 1)
        assert row["lower"] <= row["median"] <= row["upper"] and 0 < row["level"] < 1
    first = rows[0]
    assert first["actual"] == pytest.approx(ds.y[ds.split.test][0])  # type: ignore[attr-defined]
    assert first["made_at"] == pd.Timestamp(ds.timestamps[ds.split.test][0]).tz_localize("UTC")  # type: ignore[attr-defined]

    assert record_backtest(settings, pair=PAIR, version=3, model=path, ds=ds) == len(rows)  # type: ignore[arg-type]
    assert record_backtest(settings, pair=PAIR, version=3, model=path, ds=ds) == 0  # type: ignore[arg-type]
    with Database(settings, maxconn=2) as db:
        stored = backtest_forecasts(db, pair=PAIR)
        assert len(stored) == len(rows) and {f.model_version for f in stored} == {"3"}
        assert stored[0].target_time > stored[-1].target_time  # newest first
        # a newer champion's backtest replaces the older one in the view (both stay stored)
        assert record_backtest(settings, pair=PAIR, version=4, model=path, ds=ds) == len(rows)  # type: ignore[arg-type]
        assert {f.model_version for f in backtest_forecasts(db, pair=PAIR, horizon_hours=1)} == {"4"}

        # the live track record, its counts, the monitoring report and the online calibration see nothing
        hour = pd.Timestamp(stored[0].target_time).to_pydatetime() + timedelta(hours=2)
        assert scored_forecasts(db, pair=PAIR) == []
        assert scored_counts(db, pair=PAIR, market_hour=hour).total == 0
        trackers = update_from_resolved(db, pair=PAIR, generation="g1", market_hour=hour)
        assert all(t.resolved == 0 for t in trackers.values())
        source = ClockedMarketData(
            BundledMarketData(), MarketClock(start=hour, origin=time.time(), speed=0.0)
        )
        report, kinds = build_report(
            db, source, PAIR, hour, thresholds_from(Settings.defaults()), champion=None, drift_hours=48
        )
        assert report.status == "insufficient_data" and report.n_resolved == 0 and kinds == []
        assert report.skill is None and report.coverage is None


def test_rebuilt_from_the_tags_as_at_promotion(champion: tuple[Path, Any, DataWindow]) -> None:
    """``mur up``'s backfill for a champion without backtest rows rebuilds the same rows from its tags."""
    path, ds, window = champion
    test = ds.timestamps[ds.split.test]  # type: ignore[attr-defined]
    tags = {
        "data_window_end": iso(window.end),
        "test_window_start": iso(test[0]),
        "test_window_end": iso(test[-1]),
    }
    at_promotion = backtest_rows(path, ds, pair=PAIR, version=5)  # type: ignore[arg-type]
    assert at_promotion and rebuilt_rows(TINY, PAIR, 5, path.read_bytes(), tags) == at_promotion


def test_promotion_loads_it_and_mur_up_loads_what_is_missing(
    champion: tuple[Path, Any, DataWindow],
    registry: tuple[Settings, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The gate's promotion stores the backtest (``log_and_register``'s hook); ``mur up``'s
    ``ensure_backtests`` loads it again for a champion without rows, from the registry alone, and then
    skips it."""
    import mlflow
    import mlflow.onnx

    path, ds, window = champion
    base, _ = registry
    settings = base.replace(**TINY_VALUES, market_data="bundled", promotion_skill_floor=-1.0)
    mlflow.set_tracking_uri(settings.registry.mlflow_tracking_uri)
    mlflow.create_experiment(settings.registry.mlflow_experiment, artifact_location=str(tmp_path / "art"))
    inferred: list[object] = []  # MLflow's inference imports the model in a subprocess: never asked

    def infer(*args: object, **_kwargs: object) -> list[str]:
        inferred.append(args)
        return []

    monkeypatch.setattr(mlflow.models, "infer_pip_requirements", infer)
    mcfg = model_config(settings)
    doc = metrics_document(PAIR, mcfg, ds, window, evaluate_onnx(path, ds, mcfg.rnn_len))
    result = log_and_register(
        settings, pair=PAIR, onnx_path=path, feature_spec=ds.spec.to_dict(), metrics_doc=doc, params={},
        history=[], ds=ds, idempotency_key="k1",
    )  # fmt: skip
    assert result.alias == CHAMPION, result.reason
    # the requirements stated, not inferred: onnx and onnxruntime at the versions installed
    assert inferred == []
    model_uri = f"models:/{result.model_name}/{result.version}"
    requirements = Path(
        mlflow.artifacts.download_artifacts(f"{model_uri}/requirements.txt", dst_path=str(tmp_path))
    )
    assert set(mlflow.onnx.get_default_pip_requirements()) <= set(requirements.read_text().split())
    expected = len(ds.split.test) * len(ds.horizons)
    with Database(settings, maxconn=1) as db:
        assert len(backtest_forecasts(db, pair=PAIR, version=result.version)) == expected
        with db.cursor() as cur:
            cur.execute("DELETE FROM backtest_forecasts")  # as on a stack promoted before backtests existed
        said: list[str] = []
        assert ensure_backtests(settings, [PAIR], said.append) == {PAIR: expected}
        assert said == [
            f"{PAIR}: backtest track record of v{result.version} loaded ({expected} forecasts of its test span)"
        ]
        assert ensure_backtests(settings, [PAIR], said.append) == {} and len(said) == 1
        assert len(backtest_forecasts(db, pair=PAIR)) == expected
