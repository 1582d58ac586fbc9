"""A search trial's fold and the confirmation on real bundled candles, tiny budgets, no Ray
(mur/training/tune.py): scored against the naive baseline on hours the fit never saw, blind to every candle
after its targets, and the confirmation compares two configurations on the very same forecasts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from mur.settings import Settings
from mur.training.driver import load_candles
from mur.training.tune import confirm, score_fold
from mur.training.tuning import default_config, search_spans

ORIGIN = datetime(2025, 6, 1, tzinfo=UTC)
TINY = Settings(epochs=1, train_days=40)


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    frame, _, _ = load_candles(TINY, "btc_usdt", end=ORIGIN + timedelta(days=10), train_days=120)
    return frame


def test_fold_score_is_relative_to_naive_and_blind_to_later_candles(candles: pd.DataFrame) -> None:
    score = score_fold(TINY, candles, ORIGIN, 48, 40)
    assert score["n"] == 48
    assert 0.3 < score["winkler_ratio"] < 3 and 0.3 < score["pinball_ratio"] < 3
    assert 0.0 <= score["coverage"] <= 1.0
    # candles after the fold's last target (48 h + 23 h after the origin) cannot change its score
    later = pd.DatetimeIndex(candles["timestamp"]) >= pd.Timestamp(ORIGIN + timedelta(hours=48 + 23))
    changed = candles.copy()
    for col in ("open", "high", "low", "close"):
        changed.loc[later, col] = changed.loc[later, col] * 3.0
    assert score_fold(TINY, changed, ORIGIN, 48, 40) == pytest.approx(score)


def test_confirmation_compares_both_configurations_on_the_same_forecasts(candles: pd.DataFrame) -> None:
    end = pd.Timestamp(candles["timestamp"].iloc[-1]).to_pydatetime() + timedelta(hours=1)
    spans = search_spans(end, folds=1, fold_hours=48, confirm_hours=72, max_horizon=24)
    default = default_config(TINY)
    result = confirm(TINY, candles, spans, {**default, "feature_set": "reference"}, default)
    assert result["n"] == 72 - 23  # forecasts whose every target lies inside the span
    assert result["span"]["start"] == spans.confirm_start.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert result["same_as_default"] is False and result["identical_forecasts"] is False
    assert set(result["best_epoch"]) == {"default", "chosen"}
    assert [h["hours"] for h in result["horizons"]] == [1, 4, 24]
    assert result["winkler"]["se"] is not None and result["winkler"]["se"] > 0
    assert set(result["vs_naive"]) == {"default", "chosen"}
    same = confirm(TINY, candles, spans, default, default)  # the search kept the default: no gain at all
    assert same["winkler"]["gain"] == 0.0 and same["pinball"]["gain"] == 0.0
    assert same["same_as_default"] and set(same["best_epoch"]) == {"default"}  # one fit only
