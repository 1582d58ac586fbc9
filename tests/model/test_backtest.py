"""Rolling-origin evaluation: fold arithmetic, no look-ahead, and ``mur backtest`` writing its files."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cli_in_process import run_mur

from mur.errors import DataValidationError
from mur.evaluation.backtest import fold_origins


def mur_backtest(*args: str) -> subprocess.CompletedProcess[str]:
    """``mur backtest ARGS`` as a user runs it (no MLflow), in this process (tests/cli_in_process.py)."""
    return run_mur("backtest", *args, "--no-mlflow")


def test_fold_origins_tile_the_hours_before_end() -> None:
    end = datetime(2025, 6, 1, tzinfo=UTC)
    origins = fold_origins(end, 3, 24)
    assert [o.isoformat() for o in origins] == [
        "2025-05-29T00:00:00+00:00",
        "2025-05-30T00:00:00+00:00",
        "2025-05-31T00:00:00+00:00",
    ]
    with pytest.raises(DataValidationError, match="folds"):
        fold_origins(end, 0, 24)


def test_mur_backtest_on_bundled_data_writes_json_and_png(tmp_path: Path) -> None:
    out = tmp_path / "bt"
    proc = mur_backtest(
        "btc_usdt",
        "--folds",
        "3",
        "--fold-hours",
        "24",
        "--train-days",
        "40",
        "--epochs",
        "1",
        "--end",
        "2025-06-01T00:00:00Z",
        "--out",
        str(out),
        "--strategy",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pooled" in proc.stdout and "Diebold-Mariano p-value" in proc.stdout
    doc = json.loads((out / "backtest.json").read_text())
    assert [f["origin"] for f in doc["folds"]] == [
        "2025-05-29T00:00:00Z",
        "2025-05-30T00:00:00Z",
        "2025-05-31T00:00:00Z",
    ]
    for fold in doc["folds"]:
        assert fold["n"] == 24
        # no look-ahead: every scored hour is at or after its origin, training ended at the origin
        assert min(fold["timestamps"]) == fold["origin"]
        assert fold["train_start"] < fold["origin"]
    assert doc["pooled"]["n"] == 72 and 0 <= doc["pooled"]["dm_p_better"] <= 1
    pooled_row = next(line for line in proc.stdout.splitlines() if line.startswith("│ pooled"))
    hits = sum(f["model"]["directional_accuracy"] * f["n"] for f in doc["folds"]) / 72
    assert pooled_row.split("│")[-2].strip() == f"{hits:.3f}"  # the folds' direction measure, pooled
    # range first: per horizon, per fold and pooled, the model and both baselines on the same targets
    assert "walk-forward ranges pooled over 3 folds" in proc.stdout and "range 24 h: coverage" in proc.stdout
    for fold in doc["folds"]:  # the 24 h targets of the last forecasts lie after --end, and are loaded
        assert [(h["hours"], h["n"]) for h in fold["horizons"]] == [(1, 24), (4, 24), (24, 24)]
    for h in doc["pooled"]["horizons"]:
        assert h["n"] == 72 and h["reliability"]["levels"] == doc["pooled"]["quantile_levels"]
        for name in ("interval", "naive", "ewma"):
            assert set(h[name]) == {"coverage", "width", "winkler", "pinball"}
            assert 0 <= h[name]["coverage"] <= 1 and h[name]["winkler"] > 0
        for name in ("model", "naive", "ewma"):
            assert len(h["reliability"][name]) == len(h["reliability"]["levels"])
        assert 0 <= h["interval_dm_p_better"] <= 1 and 0 <= h["interval_dm_p_better_vs_ewma"] <= 1
    assert len(doc["pooled"]["range_verdicts"]) == 3
    assert (out / "backtest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # --strategy: the sizing rule walked forward after fees, sized by each range, next to buy & hold
    plan = doc["pooled"]["strategy"]
    assert set(plan["strategies"]) == {"model", "ewma", "garch", "buy_hold"}
    assert plan["strategies"]["buy_hold"]["hours"] == 72 and plan["rule"]["horizon"] == 24
    assert plan["verdict"] in proc.stdout and plan["verdict"].startswith("paper, not advice")
    assert all(s in proc.stdout for s in ("model-sized", "EWMA-sized", "GARCH-sized", "buy & hold"))
    assert (out / "strategy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_backtest_refuses_too_little_history(tmp_path: Path) -> None:
    proc = mur_backtest(
        "btc_usdt",
        "--folds",
        "2",
        "--train-days",
        "5",
        "--epochs",
        "1",
        "--out",
        str(tmp_path),
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "candles before" in proc.stderr


def test_backtest_document_is_standard_json_when_a_standard_error_is_unknown() -> None:
    """An unknown standard error is ``inf`` (too few points), a flat fold's statistic NaN: JSON null, never
    ``Infinity``/``NaN`` (which strict JSON readers refuse)."""
    import numpy as np

    from mur.evaluation.backtest import BacktestReport, FoldResult

    evidence = {"skill_se": float("inf"), "dm_statistic": float("nan"), "direction_hits": np.int64(3)}
    fold = FoldResult(1, "o", "s", "e", 3, {"mae": np.float64(1.5)}, {"mae": 2.0}, 0.25, evidence)
    doc = json.loads(json.dumps(BacktestReport("btc_usdt", "w", {}, [fold], {}).to_dict(), allow_nan=False))
    assert doc["folds"][0]["evidence"] == {"skill_se": None, "dm_statistic": None, "direction_hits": 3}
    assert doc["folds"][0]["model"] == {"mae": 1.5}
