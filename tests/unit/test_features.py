"""Features, splits, normalization and windows: shapes, ordering and no leakage (property tests)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mur.errors import DataValidationError
from mur.model.features import (
    CLOSE_IDX,
    FEATURE_NAMES,
    build_dataset,
    chronological_split,
    denormalize_outputs,
    fit_spec,
    make_features,
    make_windows,
    normalize_inputs,
    normalize_targets,
)


def candles(n: int, seed: int = 0, start: str = "2024-01-01") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]]
    return pd.DataFrame(
        {
            "timestamp": pd.date_range(start, periods=n, freq="h", tz="UTC"),
            "open": open_,
            "high": np.maximum(open_, close) * 1.001,
            "low": np.minimum(open_, close) * 0.999,
            "close": close,
            "volume": rng.uniform(1, 10, n),
        }
    )


def test_feature_columns_follow_the_contract() -> None:
    df = candles(48, start="2024-12-30")  # a Monday in ISO week 1 of 2025
    f = make_features(df)
    assert f.shape == (48, 9) and len(FEATURE_NAMES) == 9
    assert f[0, 0] == 0 and f[0, 1] == 30 and f[0, 2] == 1 and f[0, 3] == 12
    np.testing.assert_allclose(f[:, 8], df["close"] - df["open"])
    np.testing.assert_allclose(f[:, CLOSE_IDX], df["close"])


@settings(max_examples=40, deadline=None)
@given(n=st.integers(60, 400), seq_len=st.integers(2, 30))
def test_windows_shape_order_and_targets(n: int, seq_len: int) -> None:
    f = make_features(candles(n))
    x, y = make_windows(f, seq_len)
    assert x.shape == (n - seq_len, seq_len, 9) and x.dtype == np.float32
    assert y.shape == (n - seq_len,)
    i = (n - seq_len) // 2
    np.testing.assert_allclose(x[i], f[i : i + seq_len].astype(np.float32))
    assert y[i] == f[i + seq_len, CLOSE_IDX]  # target is the candle right after the window


@settings(max_examples=40, deadline=None)
@given(n=st.integers(120, 3000), seq_len=st.integers(2, 48))
def test_split_is_chronological_and_disjoint(n: int, seq_len: int) -> None:
    s = chronological_split(n, seq_len)
    assert len(s.train) and len(s.val) and len(s.test)
    assert s.train.max() < s.val.min() and s.val.max() < s.test.min()
    assert len(s.train) + len(s.val) + len(s.test) == n - seq_len
    # every training target lies inside the training span the scaler sees
    assert s.train.max() + seq_len < s.train_rows_end
    assert s.val.min() + seq_len >= s.train_rows_end
    assert abs((n - (s.test.min() + seq_len)) / n - 0.1) < 0.02


def test_reference_scaler_sees_only_the_training_span() -> None:
    df = candles(500)
    df.loc[450:, ["open", "high", "low", "close"]] *= 10  # a huge move in the test span
    f = make_features(df)
    s = chronological_split(len(f), 24)
    spec = fit_spec(f, s, 24, "reference")
    assert spec.col_max[CLOSE_IDX] == pytest.approx(f[: s.train_rows_end, CLOSE_IDX].max())
    assert spec.col_max[CLOSE_IDX] < f[:, CLOSE_IDX].max() / 5


@pytest.mark.parametrize("mode", ["relative", "reference"])
def test_target_normalization_round_trips(mode: str) -> None:
    ds = build_dataset(candles(400), 24, mode)  # type: ignore[arg-type]
    x, y = ds.x[ds.split.test], ds.y[ds.split.test]
    t = normalize_targets(y, x, ds.spec)
    np.testing.assert_allclose(denormalize_outputs(t, x, ds.spec), y, rtol=1e-5)


def test_relative_zero_output_is_persistence() -> None:
    ds = build_dataset(candles(300), 24, "relative")
    x = ds.x[:10]
    np.testing.assert_allclose(denormalize_outputs(np.zeros(10), x, ds.spec), x[:, -1, CLOSE_IDX], rtol=1e-6)
    z = normalize_inputs(x, ds.spec)
    assert np.allclose(z[:, -1, CLOSE_IDX], 0.0, atol=1e-5)  # last close relative to itself
    assert np.abs(z[..., :4]).max() <= 1.0 + 1e-6  # calendar columns in [-1, 1]


def test_too_few_candles_is_a_clear_error() -> None:
    with pytest.raises(DataValidationError, match="need at least 25 candles"):
        make_windows(make_features(candles(20)), 24)
    with pytest.raises(DataValidationError, match="too few candles"):
        chronological_split(30, 24)
