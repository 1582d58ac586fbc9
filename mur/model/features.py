"""Vectorized features, chronological splits, normalization and sliding windows (pure functions).

The feature contract shared by training, export and serving:

=====  ==============  ====================================================
index  name            raw value (what the ONNX model takes)
=====  ==============  ====================================================
0      day_of_week     Monday = 0 … Sunday = 6 (pandas ``dayofweek``)
1      day_of_month    1 … 31
2      iso_week        1 … 53 (ISO calendar week)
3      month           1 … 12
4-7    open/high/low/close   prices in the quote currency
8      close_minus_open      close − open
=====  ==============  ====================================================

Two normalizations (``relative`` default, ``reference``) are described by :class:`FeatureSpec`; the same
spec is folded into the exported ONNX graph (see :mod:`mur.model.export`), so clients send raw candles.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from mur.errors import DataValidationError

FEATURE_NAMES: tuple[str, ...] = (
    "day_of_week",
    "day_of_month",
    "iso_week",
    "month",
    "open",
    "high",
    "low",
    "close",
    "close_minus_open",
)
N_FEATURES = len(FEATURE_NAMES)
CALENDAR_IDX = (0, 1, 2, 3)
PRICE_IDX = (4, 5, 6, 7)
SPREAD_IDX = 8
CLOSE_IDX = 7
# Calendar columns are scaled by their known domain (no fitting needed, no leakage possible).
CALENDAR_DOMAIN: tuple[tuple[float, float], ...] = ((0, 6), (1, 31), (1, 53), (1, 12))
# Relative prices are expressed in percent of the window's last close so values are O(1).
RELATIVE_SCALE = 100.0

Normalization = Literal["relative", "reference"]


@dataclass(frozen=True)
class FeatureSpec:
    """Everything needed to turn raw feature windows into model inputs and back (JSON-serializable)."""

    seq_len: int
    normalization: Normalization
    feature_names: tuple[str, ...] = FEATURE_NAMES
    # reference mode: per-column min/max fitted on the training span
    col_min: tuple[float, ...] = field(default_factory=tuple)
    col_max: tuple[float, ...] = field(default_factory=tuple)
    relative_scale: float = RELATIVE_SCALE

    def to_dict(self) -> dict:
        """JSON-friendly dict (logged to MLflow next to the model)."""
        d = asdict(self)
        d["feature_names"] = list(self.feature_names)
        d["col_min"] = list(self.col_min)
        d["col_max"] = list(self.col_max)
        d["input"] = {
            "shape": ["batch", self.seq_len, N_FEATURES],
            "dtype": "float32",
            "order": "oldest first; the last row is the most recent closed candle",
        }
        d["output"] = "next-hour close in the quote currency, shape (batch, 1)"
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(
            seq_len=int(d["seq_len"]),
            normalization=d["normalization"],
            feature_names=tuple(d.get("feature_names", FEATURE_NAMES)),
            col_min=tuple(float(x) for x in d.get("col_min", ())),
            col_max=tuple(float(x) for x in d.get("col_max", ())),
            relative_scale=float(d.get("relative_scale", RELATIVE_SCALE)),
        )


@dataclass(frozen=True)
class Split:
    """Window indices (into the array of all windows) for each chronological span."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    train_rows_end: int  # candles [0, train_rows_end) form the training span (what scalers see)


def make_features(candles: pd.DataFrame) -> np.ndarray:
    """Return the ``(n, 9)`` float64 feature matrix for candles (one row per candle, vectorized)."""
    ts = pd.DatetimeIndex(candles["timestamp"])
    o = candles["open"].to_numpy(np.float64)
    c = candles["close"].to_numpy(np.float64)
    out = np.empty((len(candles), N_FEATURES), dtype=np.float64)
    out[:, 0] = ts.dayofweek
    out[:, 1] = ts.day
    out[:, 2] = ts.isocalendar().week.to_numpy(np.float64)
    out[:, 3] = ts.month
    out[:, 4] = o
    out[:, 5] = candles["high"].to_numpy(np.float64)
    out[:, 6] = candles["low"].to_numpy(np.float64)
    out[:, 7] = c
    out[:, 8] = c - o
    return out


def make_windows(features: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Sliding windows ``X (n, seq_len, 9)`` float32 and next-hour close targets ``y (n,)`` float64.

    Window ``i`` covers candles ``i … i+seq_len-1``; its target is the close of candle ``i+seq_len``.
    """
    n = len(features) - seq_len
    if n <= 0:
        raise DataValidationError(
            f"need at least {seq_len + 1} candles to build one window, got {len(features)}"
        )
    # One float32 array without copying the overlapping windows: a read-only strided view whose last
    # axis (the 9 features) is contiguous. Consumers that need a private copy make one.
    f32 = np.ascontiguousarray(features[:-1], dtype=np.float32)
    x = np.lib.stride_tricks.sliding_window_view(f32, seq_len, axis=0).transpose(0, 2, 1)
    y = features[seq_len:, CLOSE_IDX].astype(np.float64)
    return x, y


def chronological_split(n_rows: int, seq_len: int, test_frac: float = 0.1, val_frac: float = 0.2) -> Split:
    """Split candles 90/10 into train+val / test, then the last 20 % of train into validation.

    A window belongs to the span that holds its *target* candle, so no target is ever seen by an earlier
    span; scalers are fitted on ``[0, train_rows_end)`` only (inputs of later windows may look back into
    earlier spans, exactly as at serving time).
    """
    n_windows = n_rows - seq_len
    test_start = int(round(n_rows * (1 - test_frac)))
    val_start = int(round(test_start * (1 - val_frac)))
    if val_start - seq_len < 2 or test_start - val_start < 1 or n_rows - test_start < 1:
        raise DataValidationError(
            f"too few candles ({n_rows}) for seq_len={seq_len}: need enough for train, validation and test"
        )
    target_row = np.arange(n_windows) + seq_len
    idx = np.arange(n_windows)
    return Split(
        train=idx[target_row < val_start],
        val=idx[(target_row >= val_start) & (target_row < test_start)],
        test=idx[target_row >= test_start],
        train_rows_end=val_start,
    )


def fit_spec(features: np.ndarray, split: Split, seq_len: int, normalization: Normalization) -> FeatureSpec:
    """Fit the normalization on the training span only (no leakage from validation or test)."""
    if normalization == "relative":
        return FeatureSpec(seq_len=seq_len, normalization="relative")
    train = features[: split.train_rows_end]
    return FeatureSpec(
        seq_len=seq_len,
        normalization="reference",
        col_min=tuple(float(v) for v in train.min(axis=0)),
        col_max=tuple(float(v) for v in train.max(axis=0)),
    )


def normalize_inputs(x: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Raw windows ``(n, seq_len, 9)`` → model inputs (float32). Mirrors ``export.NormalizedForecaster``.

    Computed in float32, like the ONNX graph, with in-place operations (this is the hot path of the
    feature benchmark: ~6 M values for three years of hourly candles).
    """
    x = np.asarray(x, dtype=np.float32)
    if spec.normalization == "reference":
        lo = np.asarray(spec.col_min, dtype=np.float32)
        span = np.asarray(spec.col_max, dtype=np.float32) - lo
        span[span == 0] = 1.0
        out = x - lo
        out *= 2.0 / span
        out -= 1.0
        return out
    # out = x * A + B with a per-window scale A (n, 1, 9) and a constant offset B (1, 1, 9): two passes
    # over contiguous memory instead of many strided column slices.
    lo = np.array([d[0] for d in CALENDAR_DOMAIN], dtype=np.float32)
    span = np.array([d[1] - d[0] for d in CALENDAR_DOMAIN], dtype=np.float32)
    scale = np.float32(spec.relative_scale)
    a = np.empty((len(x), 1, N_FEATURES), dtype=np.float32)
    a[:, 0, :4] = 2.0 / span
    a[:, 0, 4:] = scale / x[:, -1, CLOSE_IDX : CLOSE_IDX + 1]
    b = np.zeros((1, 1, N_FEATURES), dtype=np.float32)
    b[0, 0, :4] = -2.0 * lo / span - 1.0
    b[0, 0, 4:8] = -scale
    out = x * a
    out += b
    return out


def normalize_targets(y: np.ndarray, x: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Next-hour closes → training targets in the model's output space (float32)."""
    if spec.normalization == "reference":
        lo, hi = spec.col_min[CLOSE_IDX], spec.col_max[CLOSE_IDX]
        return (2.0 * (y - lo) / ((hi - lo) or 1.0) - 1.0).astype(np.float32)
    last_close = x[:, -1, CLOSE_IDX].astype(np.float64)
    return ((y / last_close - 1.0) * spec.relative_scale).astype(np.float32)


def denormalize_outputs(out: np.ndarray, x: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Model outputs → next-hour close prices (inverse of :func:`normalize_targets`)."""
    out = np.asarray(out, dtype=np.float64).reshape(-1)
    if spec.normalization == "reference":
        lo, hi = spec.col_min[CLOSE_IDX], spec.col_max[CLOSE_IDX]
        return (out + 1.0) / 2.0 * ((hi - lo) or 1.0) + lo
    last_close = x[:, -1, CLOSE_IDX].astype(np.float64)
    return last_close * (1.0 + out / spec.relative_scale)


@dataclass
class Dataset:
    """A prepared pair: raw windows, targets, split and the fitted spec."""

    x: np.ndarray  # raw windows (n, seq_len, 9) float32
    y: np.ndarray  # next-hour close (n,) float64
    split: Split
    spec: FeatureSpec
    timestamps: np.ndarray  # open time (UTC, naive datetime64) of each window's target candle (n,)

    def model_arrays(self, part: Literal["train", "val", "test"]) -> tuple[np.ndarray, np.ndarray]:
        """Normalized ``(inputs, targets)`` for one span, ready for a DataLoader."""
        idx = getattr(self.split, part)
        x = self.x[idx]
        return normalize_inputs(x, self.spec), normalize_targets(self.y[idx], x, self.spec)


def build_dataset(candles: pd.DataFrame, seq_len: int, normalization: Normalization) -> Dataset:
    """Features → windows → chronological split → normalization fitted on train (all vectorized)."""
    feats = make_features(candles)
    x, y = make_windows(feats, seq_len)
    split = chronological_split(len(feats), seq_len)
    spec = fit_spec(feats, split, seq_len, normalization)
    ts = pd.DatetimeIndex(candles["timestamp"]).tz_convert("UTC").tz_localize(None).to_numpy()[seq_len:]
    return Dataset(x=x, y=y, split=split, spec=spec, timestamps=ts)
