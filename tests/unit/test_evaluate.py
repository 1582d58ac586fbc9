"""Metrics, baselines, skill and the promotion gate (pure functions)."""

from __future__ import annotations

import numpy as np
import pytest

from mur.evaluate import (
    LinearBaseline,
    evaluate_all,
    persistence_forecast,
    regression_metrics,
    skill,
    verdict,
)
from mur.registry import CHALLENGER, CHAMPION, decide_promotion


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
    assert "does NOT beat persistence" in verdict(-0.01)
    assert skill(0.9, 1.0) == pytest.approx(0.1)


def test_linear_baseline_learns_a_linear_rule() -> None:
    rng = np.random.default_rng(1)
    n, s = 400, 8
    x = np.tile(rng.uniform(100, 101, (n, s, 1)), (1, 1, 9)).astype(np.float32)
    x[..., :4] = 1
    y = x[:, -1, 7] * (1 + 0.5 * (x[:, -1, 7] / x[:, -2, 7] - 1))  # momentum rule
    lin = LinearBaseline(s, ridge=0.0).fit(x[:300], y[:300])
    np.testing.assert_allclose(lin.predict(x[300:]), y[300:], rtol=1e-4)


@pytest.mark.parametrize(
    ("new_mae", "new_skill", "champ", "alias", "why"),
    [
        (1.0, 0.01, None, CHAMPION, "first model"),
        (1.0, -0.2, None, CHALLENGER, "below the floor"),
        (1.0, 0.0, 1.0, CHAMPION, "<="),
        (1.1, 0.0, 1.0, CHALLENGER, ">"),
        (0.9, -0.04, 1.0, CHAMPION, "<="),
        (5.0, 0.0, float("inf"), CHAMPION, "cannot be loaded"),  # champion's artefact is gone
    ],
)
def test_promotion_gate(new_mae: float, new_skill: float, champ: float | None, alias: str, why: str) -> None:
    d = decide_promotion(new_mae, new_skill, champ, skill_floor=-0.05)
    assert d.alias == alias
    assert why in d.reason
