"""Metrics, baselines, skill, the metrics document and the promotion gate (pure functions)."""

from __future__ import annotations

import numpy as np
import pytest

from mur.evaluation.metrics import (
    LinearBaseline,
    evaluate_all,
    persistence_forecast,
    regression_metrics,
    skill,
)
from mur.evaluation.significance import verdict


def test_regression_metrics_by_hand() -> None:
    m = regression_metrics(np.array([11.0, 9.0]), np.array([10.0, 10.0]), np.array([10.5, 10.5]))
    assert m["mae"] == pytest.approx(1.0)
    assert m["rmse"] == pytest.approx(1.0)
    assert m["mape"] == pytest.approx(10.0)
    assert m["directional_accuracy"] == pytest.approx(
        0.5
    )  # only the second forecast gets the (down) direction right


def test_persistence_has_zero_skill_and_honest_verdict() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(90, 110, (50, 24, 9)).astype(np.float32)
    y = rng.uniform(90, 110, 50)
    last = persistence_forecast(x)
    out = evaluate_all(last, x, y, last)
    assert out["skill"] == pytest.approx(0.0)
    assert out["model"] == out["persistence"]
    assert not out["beats_persistence"]
    assert "does NOT beat persistence" in verdict(0.5, 0.5, -0.01)
    assert "does NOT beat persistence" in verdict(0.36, 0.64, +0.001)  # a positive skill, not significant
    assert skill(0.9, 1.0) == pytest.approx(0.1)


def test_linear_baseline_learns_a_linear_rule() -> None:
    rng = np.random.default_rng(1)
    n, s = 400, 8
    x = np.tile(rng.uniform(100, 101, (n, s, 1)), (1, 1, 9)).astype(np.float32)
    x[..., :4] = 1
    y = x[:, -1, 7] * (1 + 0.5 * (x[:, -1, 7] / x[:, -2, 7] - 1))  # momentum rule
    lin = LinearBaseline(s, ridge=0.0).fit(x[:300], y[:300])
    np.testing.assert_allclose(lin.predict(x[300:]), y[300:], rtol=1e-4)


def test_evaluation_fills_a_metrics_document_that_survives_the_version_tags() -> None:
    from mur.contracts import MetricsDocument

    rng = np.random.default_rng(1)
    x = 100 + rng.normal(0, 1, (50, 24, 9)).cumsum(axis=1)
    y = x[:, -1, 7] + rng.normal(0, 1, 50)
    evaluation = evaluate_all(y + 0.5, x, y, x[:, -1, 7])
    window = {"start": "2025-01-01T00:00:00Z", "end": "2025-02-01T00:00:00Z"}
    doc = MetricsDocument.model_validate(
        {
            "pair": "btc_usdt",
            "arch": "lstm",
            "normalization": "relative",
            "data_window": window,
            "test_window": {"start": "2025-01-28T00:00:00Z", "end": "2025-01-31T23:00:00Z"},
            **evaluation,
            "best_epoch": 2,
        }
    )
    dumped = doc.model_dump(mode="json")
    assert "epochs_run" not in dumped and dumped["best_epoch"] == 2  # unreported details are left out
    assert doc.mlflow_metrics()["model_mae"] == doc.model.mae and doc.skill == evaluation["skill"]
    tags = {
        "pair": "btc_usdt",
        "arch": "lstm",
        "normalization": "relative",
        "data_window_start": window["start"],
        "data_window_end": window["end"],
        "metrics_json": doc.version_tag_json(),
    }
    assert MetricsDocument.from_version_tags(tags) == doc.model_copy(update={"best_epoch": None})
    assert MetricsDocument.from_version_tags({"metrics_json": "{broken"}) is None


def test_mur_train_says_beats_only_when_the_test_does(capsys: pytest.CaptureFixture[str]) -> None:
    """`mur train`'s sentence under the point table: a positive skill the Diebold-Mariano test does not back
    reads "does NOT beat" (it read "model beats persistence by 0.00% MAE")."""
    from mur.commands.ml import print_metrics_table
    from mur.contracts import MetricsDocument

    rng = np.random.default_rng(2)
    x = 100 + rng.normal(0, 1, (60, 24, 9)).cumsum(axis=1)
    y = x[:, -1, 7] + rng.normal(0, 1, 60)
    window = {"start": "2025-01-01T00:00:00Z", "end": "2025-02-01T00:00:00Z"}
    doc = MetricsDocument.model_validate(
        {"pair": "xrp_usdt", "arch": "lstm", "normalization": "relative", "data_window": window,
         "test_window": window, **evaluate_all(x[:, -1, 7] + 1e-4, x, y, x[:, -1, 7])}
    )  # fmt: skip
    assert doc.significance is not None
    for p_better, said in (
        (0.36, "model does NOT beat persistence"),
        (0.01, "model beats persistence (skill"),
    ):
        sig = doc.significance.model_copy(update={"dm_p_better": p_better, "dm_p_worse": 1 - p_better})
        print_metrics_table([doc.model_copy(update={"skill": 0.0004, "significance": sig})])
        assert f"— {said}" in capsys.readouterr().out
