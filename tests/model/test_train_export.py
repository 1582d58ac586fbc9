"""Train a tiny model on bundled data with the one driver and the local fit, export ONNX, validate it,
check metrics.json; CLI output and errors."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_in_process import run_mur

from mur.contracts import MetricsDocument
from mur.model.export import (
    INPUT_NAME,
    OUTPUT_NAME,
    QUANTILES_NAME,
    load_session,
    model_metadata,
    run_forecast,
    run_session,
)
from mur.model.features import EXTENDED_FEATURE_NAMES, FEATURE_NAMES, FEATURE_VOCABULARY, build_dataset
from mur.settings import Settings
from mur.training.driver import load_candles, train_and_register
from mur.training.loop import LocalFit

TINY = {"epochs": 2, "hidden_size": 8}


@pytest.fixture(scope="module")
def tiny_settings() -> Settings:
    return Settings(train_days=60, num_layers=1, market_data="bundled")


def train_to(settings: Settings, pair: str, out: Path, **overrides: object) -> MetricsDocument:
    """What ``mur train --out`` does: local fit, files in ``out``, no registry."""
    result = train_and_register(settings, pair, fit=LocalFit(), out_dir=out, register=False, **overrides)
    assert result.ok and result.version is None and result.metrics is not None
    return result.metrics


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, tiny_settings: Settings
) -> tuple[Path, MetricsDocument]:
    out = tmp_path_factory.mktemp("model")
    return out, train_to(tiny_settings, "btc_usdt", out, **TINY)


def test_metrics_json_shape(trained: tuple[Path, MetricsDocument]) -> None:
    out, doc = trained
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == doc.model_dump(mode="json")
    assert MetricsDocument.model_validate(on_disk) == doc
    assert list(on_disk) == [  # the README's field names, in this order; training details last
        "pair",
        "arch",
        "normalization",
        "data_window",
        "test_window",
        "model",
        "persistence",
        "linear",
        "skill",
        "beats_persistence",
        "n_test",
        "significance",
        "quantile_levels",
        "interval_skill",
        "coverage",
        "horizons",
        "best_epoch",
        "epochs_run",
        "filled_hours",
    ]
    sig = on_disk["significance"]
    assert 0 <= sig["dm_p_worse"] <= 1 and sig["dm_p_better"] == pytest.approx(1 - sig["dm_p_worse"])
    assert 0 <= sig["direction_hits"] <= sig["direction_n"] <= on_disk["n_test"]
    for who in ("model", "persistence", "linear"):
        assert set(on_disk[who]) == {"mae", "rmse", "mape", "directional_accuracy"}
        assert on_disk[who]["mae"] > 0
    assert on_disk["skill"] == pytest.approx(1 - on_disk["model"]["mae"] / on_disk["persistence"]["mae"])
    assert on_disk["data_window"]["end"] == "2026-01-01T00:00:00Z"  # bundled BTC ends 2025-12-31 23:00


def test_onnx_is_self_contained_and_takes_raw_candles(
    trained: tuple[Path, MetricsDocument], tiny_settings: Settings
) -> None:
    out, doc = trained
    path = out / "model.onnx"
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert not list(out.glob("*.data")), "weights must be embedded, no external-data side file"
    assert all(init.data_location != onnx.TensorProto.EXTERNAL for init in model.graph.initializer)
    sess = load_session(path)
    inp = sess.get_inputs()[0]
    meta = model_metadata(sess)
    assert meta["features"] == list(EXTENDED_FEATURE_NAMES) and set(meta["features"]) <= FEATURE_VOCABULARY
    assert meta["horizons"] == [1, 4, 24] and meta["quantile_levels"] == [0.05, 0.5, 0.95]
    assert inp.name == INPUT_NAME and inp.shape[1:] == [tiny_settings.model.context_len, 11]
    assert [o.name for o in sess.get_outputs()] == [OUTPUT_NAME, QUANTILES_NAME]
    assert sess.get_outputs()[0].shape[1:] == [1] and sess.get_outputs()[1].shape[1:] == [3, 3]
    candles, _, _ = load_candles(tiny_settings, "btc_usdt")
    ds = build_dataset(
        candles,
        tiny_settings.model.context_len,
        "relative",
        feature_names=EXTENDED_FEATURE_NAMES,
        horizons=(1, 4, 24),
    )
    x, y = ds.x[ds.split.test], ds.y[ds.split.test]
    pred = run_session(sess, x)  # dynamic batch axis: the whole test span at once
    point, quantiles = run_forecast(sess, x)
    assert pred.shape == y.shape and quantiles is not None and quantiles.shape == (len(x), 3, 3)
    assert np.all(np.diff(quantiles, axis=-1) >= 0), "quantiles must be non-decreasing along the levels"
    np.testing.assert_allclose(point, quantiles[:, 0, 1], rtol=1e-6)  # next_close is the 1 h median
    # forecasts are prices, close to the last close (the graph de-normalizes)
    assert np.all(np.abs(pred / x[:, -1, 7] - 1) < 0.2)
    assert np.mean(np.abs(pred - y)) == pytest.approx(doc.model.mae, rel=1e-6)
    # the 24 h range is wider than the 1 h range, and the metrics document scored every horizon
    assert np.all(quantiles[:, 2, 2] - quantiles[:, 2, 0] > quantiles[:, 0, 2] - quantiles[:, 0, 0])
    assert doc.horizons is not None and [h.hours for h in doc.horizons] == [1, 4, 24]
    h1 = doc.horizons[0]
    lo, hi, y1 = quantiles[:, 0, 0], quantiles[:, 0, 2], ds.horizon_targets[ds.split.test][:, 0]
    assert h1.interval.coverage == pytest.approx(float(np.mean((y1 >= lo) & (y1 <= hi))))
    assert h1.interval_skill == pytest.approx(1 - h1.interval.winkler / h1.naive.winkler)
    assert doc.interval_skill == h1.interval_skill and doc.coverage == h1.interval.coverage


def test_reference_feature_set_stays_available(tmp_path: Path, tiny_settings: Settings) -> None:
    reference = tiny_settings.replace(feature_set="reference", horizons=[1, 4])
    doc = train_to(reference, "eth_usdt", tmp_path, epochs=1, hidden_size=4)
    sess = load_session(tmp_path / "model.onnx")
    meta = model_metadata(sess)
    assert meta["features"] == list(FEATURE_NAMES) and meta["horizons"] == [1, 4]
    assert sess.get_inputs()[0].shape[1:] == [tiny_settings.model.context_len, 9]
    assert doc.horizons is not None and len(doc.horizons) == 2


def test_same_data_and_seed_give_same_weights(tmp_path: Path, tiny_settings: Settings) -> None:
    a = train_to(tiny_settings, "eth_usdt", tmp_path / "a", epochs=1, hidden_size=4)
    b = train_to(tiny_settings, "eth_usdt", tmp_path / "b", epochs=1, hidden_size=4)
    assert a.model == b.model
    assert (tmp_path / "a" / "model.onnx").read_bytes() == (tmp_path / "b" / "model.onnx").read_bytes()


def test_reference_normalization_and_gru(tmp_path: Path, tiny_settings: Settings) -> None:
    reference = tiny_settings.replace(normalization="reference")
    doc = train_to(reference, "sol_usdt", tmp_path, epochs=1, hidden_size=4, arch="gru")
    assert doc.normalization == "reference" and doc.arch == "gru"
    assert (tmp_path / "model.onnx").stat().st_size > 1000


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_mur(*args, env={"MUR_TRAIN_DAYS": "30"})


def test_cli_train_and_predict(tmp_path: Path) -> None:
    r = run_cli(
        "train",
        "btc_usdt",
        "--epochs",
        "1",
        "--hidden-size",
        "4",
        "--train-days",
        "31",
        "--out",
        str(tmp_path),
    )
    assert r.returncode == 0, r.stderr
    window = json.loads((tmp_path / "metrics.json").read_text())[
        "data_window"
    ]  # --train-days over MUR_TRAIN_DAYS
    assert datetime.fromisoformat(window["end"]) - datetime.fromisoformat(window["start"]) == timedelta(
        days=31
    )
    assert "persistence" in r.stdout and "linear" in r.stdout and "skill vs persistence" in r.stdout
    assert "forecasts per horizon" in r.stdout and "(a) naive" in r.stdout and "(b) EWMA" in r.stdout
    assert "registered" not in r.stdout  # no --register: nothing goes to MLflow
    r = run_cli(
        "predict",
        "btc_usdt",
        "--model",
        str(tmp_path / "model.onnx"),
        "--at",
        "2025-06-01T00:00:00Z",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["candle_time"] == "2025-05-31T23:00:00Z" and out["target_time"] == "2025-06-01T00:00:00Z"
    assert out["forecast"] > 0
    assert [h["hours"] for h in out["horizons"]] == [1, 4, 24]
    assert all(h["lower"] <= h["median"] <= h["upper"] and h["level"] == 0.9 for h in out["horizons"])
    assert out["horizons"][0]["median"] == out["forecast"]
    model = str(tmp_path / "model.onnx")
    r = run_cli("predict", "btc_usdt", "--model", model, "--at", "2025-06-01T00:00:00Z")
    assert r.returncode == 0 and "90 % range" in r.stdout and "24 h" in r.stdout, r.stderr  # the ranges too
    r = run_cli("predict", "btc_usdt", "--model", model, "--at", "2031-01-01T00:00:00Z")  # after the data
    assert (
        r.returncode != 0 and "can be at most one hour after it" in r.stderr and "Traceback" not in r.stderr
    )


def test_cli_train_json_is_a_training_result(tmp_path: Path) -> None:
    from mur.contracts import TrainingResult

    r = run_cli("train", "eth_usdt", "--epochs", "1", "--hidden-size", "4", "--out", str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr
    [result] = [TrainingResult.model_validate(item) for item in json.loads(r.stdout)]
    assert result.pair == "eth_usdt" and result.version is None and result.metrics is not None
    on_disk = MetricsDocument.model_validate_json((tmp_path / "metrics.json").read_text())
    assert on_disk == result.metrics and result.mae == on_disk.model.mae


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("train", "doge_usdt", "--epochs", "1"), "doge"),
        (("predict", "btc_usdt", "--model", "/nonexistent/model.onnx"), "model file not found"),
        (("train", "btc_usdt", "--end", "not-a-date"), "cannot parse time"),
        (("train", "btc_usdt", "--end", "2020-01-01T00:00:00Z"), "btc_usdt"),
    ],
)
def test_cli_errors_are_one_clear_line(args: tuple[str, ...], message: str) -> None:
    r = run_cli(*args)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert message in r.stderr.lower() or message in r.stderr


def test_cli_rejects_bad_csv_and_unreadable_model(tmp_path: Path) -> None:
    csv = tmp_path / "c.csv"
    csv.write_text(
        "timestamp,open,high,low,close,volume\n1700000000000,1,2,0.5,nan,3\n1700003600000,1,2,0.5,1,3\n"
    )
    r = run_cli("train", "mine", "--data", str(csv), "--epochs", "1")
    assert r.returncode == 1 and "Traceback" not in r.stderr and "nan" in r.stderr.lower()
    short = tmp_path / "short.csv"
    short.write_text(
        "timestamp,open,high,low,close,volume\n1700000000000,1,2,0.5,1,3\n1700003600000,1,2,0.5,1,3\n"
    )
    r = run_cli("train", "mine", "--data", str(short), "--epochs", "1")
    assert r.returncode == 1 and "need at least" in r.stderr
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    r = run_cli("predict", "btc_usdt", "--model", str(bad))
    assert r.returncode == 1 and "cannot load ONNX model" in r.stderr and "Traceback" not in r.stderr


def test_an_unreadable_model_without_a_message_is_a_model_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime's error may carry no message: still a one-line ModelError (naming its type), never an
    IndexError from reading the message's first line."""
    import onnxruntime

    from mur.errors import ModelError

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("")

    monkeypatch.setattr(onnxruntime, "InferenceSession", refuse)
    with pytest.raises(ModelError, match="cannot load ONNX model from model bytes: RuntimeError"):
        load_session(b"any")
