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

The **extended** feature set (the default) appends two columns that carry volatility information:

=====  ==============  ====================================================
9      hour            0 … 23 (UTC) of the candle's open time
10     volume          base-asset volume of the candle
=====  ==============  ====================================================

A model's columns are named, in order, in its ONNX metadata ``mur.features``; the first nine are always
the reference set above, so the index constants below hold for both sets. Two normalizations
(``relative`` default, ``reference``) are described by :class:`FeatureSpec`; the same spec is folded into
the exported ONNX graph (see :mod:`mur.model.export`), so clients send raw candles.

Targets: besides the next-hour close ``y``, a dataset carries the closes ``y_h`` at each forecast horizon
(hours after the window's last candle). Spans are assigned by the window's *first* target and windows whose
*last* target crosses into the next span are purged, so no training target is ever a validation or test
target (:func:`chronological_split`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
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
"""Columns of the reference feature set (also the first columns of the extended set)."""
EXTENDED_FEATURE_NAMES: tuple[str, ...] = (*FEATURE_NAMES, "hour", "volume")
FEATURE_SETS: dict[str, tuple[str, ...]] = {"extended": EXTENDED_FEATURE_NAMES, "reference": FEATURE_NAMES}
FEATURE_VOCABULARY: frozenset[str] = frozenset(EXTENDED_FEATURE_NAMES)
"""Every column name a model's ``mur.features`` may list."""
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
        d = asdict(self)  # tuples: JSON lists
        d["input"] = {
            "shape": ["batch", self.seq_len, len(self.feature_names)],
            "dtype": "float32",
            "order": "oldest first; the last row is the most recent closed candle",
        }
        d["output"] = {
            "next_close": "next-hour close (the 1 h median) in the quote currency, shape (batch, 1)",
            "quantiles": "price quantiles, shape (batch, n_horizons, n_levels), non-decreasing on the last axis",
        }
        return d


@dataclass(frozen=True)
class Split:
    """Window indices (into the array of all windows) for each chronological span."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    train_rows_end: int  # candles [0, train_rows_end) form the training span (what scalers see)


def make_features(candles: pd.DataFrame, names: tuple[str, ...] = FEATURE_NAMES) -> np.ndarray:
    """Return the ``(n, len(names))`` float64 feature matrix for candles (one row per candle, vectorized).

    ``names`` are columns of :data:`FEATURE_VOCABULARY` in the model's order (default: the reference set).
    """
    unknown = [n for n in names if n not in FEATURE_VOCABULARY]
    if unknown:
        raise DataValidationError(f"unknown feature(s) {unknown}; known: {sorted(FEATURE_VOCABULARY)}")
    ts = pd.DatetimeIndex(candles["timestamp"])
    o = candles["open"].to_numpy(np.float64)
    c = candles["close"].to_numpy(np.float64)
    columns = {
        "day_of_week": ts.dayofweek,
        "day_of_month": ts.day,
        "iso_week": ts.isocalendar().week,
        "month": ts.month,
        "hour": ts.hour,
        "open": o,
        "high": candles["high"],
        "low": candles["low"],
        "close": c,
        "close_minus_open": c - o,
        "volume": candles.get("volume", np.zeros(len(candles))),
    }
    return np.column_stack([np.asarray(columns[name], dtype=np.float64) for name in names])


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


def chronological_split(
    n_rows: int, seq_len: int, test_frac: float = 0.1, val_frac: float = 0.2, max_horizon: int = 1
) -> Split:
    """Split candles 90/10 into train+val / test, then the last 20 % of train into validation.

    A window belongs to the span that holds its *first target* candle (the next hour) and is dropped when
    its last target (``max_horizon`` hours ahead) lies in a later span, so no target is ever seen by an
    earlier span; scalers are fitted on ``[0, train_rows_end)`` only (inputs of later windows may look back
    into earlier spans, exactly as at serving time). Windows without all their targets are not built.
    """
    n_windows = n_rows - seq_len - (max_horizon - 1)
    test_start = int(round(n_rows * (1 - test_frac)))
    val_start = int(round(test_start * (1 - val_frac)))
    if (
        n_windows < 1
        or val_start - seq_len - max_horizon < 2
        or test_start - val_start < max_horizon
        or n_rows - test_start < max_horizon
    ):
        raise DataValidationError(
            f"too few candles ({n_rows}) for seq_len={seq_len} and a {max_horizon} h horizon: need enough "
            "for train, validation and test"
        )
    first = np.arange(n_windows) + seq_len  # row of the first target
    last = first + max_horizon - 1  # row of the last target
    idx = np.arange(n_windows)
    return Split(
        train=idx[last < val_start],
        val=idx[(first >= val_start) & (last < test_start)],
        test=idx[first >= test_start],
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
    """Raw windows ``(n, seq_len, 9)`` → normalized inputs (float32) of the linear baseline's design.

    Computed in float32, like the ONNX graph, with in-place operations (this is the hot path of the
    feature benchmark: ~6 M values for three years of hourly candles).
    """
    x = np.asarray(x, dtype=np.float32)[..., :N_FEATURES]  # the reference columns (first in every set)
    if spec.normalization == "reference":
        lo = np.asarray(spec.col_min[:N_FEATURES], dtype=np.float32)
        span = np.asarray(spec.col_max[:N_FEATURES], dtype=np.float32) - lo
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

    x: np.ndarray  # raw windows (n, seq_len, n_features) float32
    y: np.ndarray  # next-hour close (n,) float64
    split: Split
    spec: FeatureSpec
    timestamps: np.ndarray  # open time (UTC, naive datetime64) of each window's first target candle (n,)
    horizons: tuple[int, ...] = (1,)
    y_h: np.ndarray | None = None  # close at each horizon (n, len(horizons)) float64
    features: np.ndarray | None = None  # the raw feature matrix the windows are cut from (n_rows, n_features)
    row_hour: np.ndarray | None = None  # UTC hour of every row of ``features`` (n_rows,)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.spec.feature_names

    @property
    def horizon_targets(self) -> np.ndarray:
        """Closes at every horizon ``(n, H)`` (the next close alone when built without horizons)."""
        return self.y[:, None] if self.y_h is None else self.y_h

    def last_row(self, idx: np.ndarray) -> np.ndarray:
        """Row (in :attr:`features`) of the last candle of windows ``idx``."""
        return np.asarray(idx) + self.spec.seq_len - 1

    def model_arrays(self, part: Literal["train", "val", "test"]) -> tuple[np.ndarray, np.ndarray]:
        """``(raw windows, targets)`` for one span, ready for a DataLoader: the quantile model normalizes
        inside its graph; targets are log returns in percent to every horizon, ``(n, H)`` float32."""
        idx = getattr(self.split, part)
        x = np.ascontiguousarray(self.x[idx], dtype=np.float32)
        last = x[:, -1, CLOSE_IDX].astype(np.float64)[:, None]  # targets: 100 * log(close_h / last close)
        return x, (100.0 * np.log(self.horizon_targets[idx].astype(np.float64) / last)).astype(np.float32)


def build_dataset(
    candles: pd.DataFrame,
    seq_len: int,
    normalization: Normalization,
    *,
    feature_names: tuple[str, ...] = FEATURE_NAMES,
    horizons: tuple[int, ...] = (1,),
) -> Dataset:
    """Features → windows → chronological split (purged for the longest horizon) → normalization fitted on
    train (all vectorized). ``seq_len`` is the model's input length in hours."""
    horizons = tuple(sorted({int(h) for h in horizons}))
    if not horizons or horizons[0] < 1:
        raise DataValidationError(f"horizons must be positive hours, got {list(horizons)}")
    max_h = horizons[-1]
    feats = make_features(candles, feature_names)
    n = len(feats) - seq_len - (max_h - 1)  # windows with every horizon's target
    if n < 1:
        raise DataValidationError(
            f"need at least {seq_len + max_h} candles for a {seq_len} h window and a {max_h} h horizon, "
            f"got {len(feats)}"
        )
    x, y = make_windows(feats, seq_len)
    x, y = x[:n], y[:n]
    close = feats[:, CLOSE_IDX]
    y_h = np.stack([close[seq_len + h - 1 : seq_len + h - 1 + n] for h in horizons], axis=1)
    split = chronological_split(len(feats), seq_len, max_horizon=max_h)
    spec = replace(fit_spec(feats, split, seq_len, normalization), feature_names=tuple(feature_names))
    ts = pd.DatetimeIndex(candles["timestamp"]).tz_convert("UTC").tz_localize(None).to_numpy()[seq_len:][:n]
    return Dataset(
        x=x,
        y=y,
        split=split,
        spec=spec,
        timestamps=ts,
        horizons=horizons,
        y_h=y_h,
        features=feats,
        row_hour=pd.DatetimeIndex(candles["timestamp"]).hour.to_numpy(),
    )
