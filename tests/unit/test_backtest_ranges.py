"""The backtest's range scores on hand-made forecasts: reliability, coverage and the per-horizon verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from mur.evaluation.backtest import FoldForecasts, concat_forecasts, range_scores, range_verdict
from mur.evaluation.intervals import reliability

LEVELS = (0.05, 0.5, 0.95)


def test_reliability_by_hand() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    q = np.array([[2.0, 3.0, 4.0]] * 4)  # y <= 2: 2 of 4; y <= 3: 3 of 4; y <= 4: all (ties count)
    assert reliability(q, y).tolist() == [0.5, 0.75, 1.0]


def forecasts(n: int, offset: float = 0.0) -> FoldForecasts:
    """Outcomes 1..n at 1 h and 2..n+1 at 2 h; the model's quantiles fixed at 5/10/15, (a) at 0/10/100 and
    (b) at 1/10/12, the same at both horizons."""
    y = np.arange(1.0, n + 1.0) + offset
    fixed = {
        name: np.broadcast_to(np.array(q), (n, 2, 3)).copy()
        for name, q in (("model", [5, 10, 15]), ("naive", [0, 10, 100]), ("ewma", [1, 10, 12]))
    }
    return FoldForecasts(
        timestamps=np.arange(n).astype("datetime64[h]"),
        last_close=np.full(n, 10.0),
        targets=np.stack([y, y + 1.0], axis=1),
        quantiles=fixed,
        horizons=(1, 2),
        levels=LEVELS,
    )


def test_range_scores_per_fold_and_pooled_by_hand() -> None:
    folds = [forecasts(10), forecasts(10, offset=10.0)]  # outcomes 1..10 then 11..20
    per_fold = range_scores(folds[0], tests=False)
    assert [h["hours"] for h in per_fold] == [1, 2] and all(h["n"] == 10 for h in per_fold)
    one = per_fold[0]
    assert one["reliability"] == {
        "levels": [0.05, 0.5, 0.95],
        "model": [0.5, 1.0, 1.0],  # outcomes 1..10: 5 at or below 5, all at or below 10 and 15
        "naive": [0.0, 1.0, 1.0],
        "ewma": [0.1, 1.0, 1.0],
    }
    assert one["interval"]["coverage"] == pytest.approx(0.6)  # 5..10 inside [5, 15]
    assert one["naive"]["coverage"] == 1.0 and one["ewma"]["coverage"] == 1.0
    assert one["interval"]["width"] == pytest.approx(1.0) and one["naive"]["width"] == pytest.approx(10.0)
    assert per_fold[1]["reliability"]["model"] == [0.4, 0.9, 1.0]  # outcomes 2..11 at 2 h

    pooled = range_scores(concat_forecasts(folds), tests=True)
    assert [h["n"] for h in pooled] == [20, 20]
    h1 = pooled[0]
    assert h1["reliability"]["model"] == [0.25, 0.5, 0.75]  # outcomes 1..20
    assert h1["reliability"]["naive"] == [0.0, 0.5, 1.0]
    assert h1["interval"]["coverage"] == pytest.approx(11 / 20)
    for name in ("interval", "naive", "ewma"):
        assert set(h1[name]) == {"coverage", "width", "winkler", "pinball"}
    assert h1["interval_skill"] == pytest.approx(1 - h1["interval"]["winkler"] / h1["naive"]["winkler"])
    for key in ("interval_dm_p_better", "interval_dm_p_worse_vs_ewma", "dm_p_worse"):
        assert 0.0 <= h1[key] <= 1.0


def test_range_verdict_says_when_the_range_does_not_beat_a_baseline() -> None:
    h = {
        "hours": 4,
        "interval": {"coverage": 0.843},
        "interval_level": 0.9,
        "interval_skill": 0.12,
        "interval_dm_p_better": 0.01,
        "interval_dm_p_worse": 0.99,
        "interval_skill_vs_ewma": -0.05,
        "interval_dm_p_better_vs_ewma": 0.6,
        "interval_dm_p_worse_vs_ewma": 0.4,
        "interval_skill_vs_garch": -0.09,
        "interval_dm_p_better_vs_garch": 0.99,
        "interval_dm_p_worse_vs_garch": 0.01,
    }
    line = range_verdict(h)
    assert line.startswith("4 h: coverage 0.843 (nominal 0.90)")
    assert "the range beats the naive range (a)" in line
    assert "the range does NOT beat the EWMA range (b)" in line
    assert "the range is significantly WORSE than the GARCH(1,1)-t range (c)" in line
    del h["interval_skill_vs_garch"]  # a document from before (c)
    assert "GARCH" not in range_verdict(h)
