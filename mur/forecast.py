"""Forecasting from raw candles with an exported ONNX model (shared by the CLI, Serve and the dashboard)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mur.errors import DataValidationError, ModelError
from mur.features import make_features


def model_seq_len(session) -> int:
    """The window length an ONNX session expects (its input's second dimension)."""
    shape = session.get_inputs()[0].shape
    if len(shape) != 3 or not isinstance(shape[1], int):
        raise ModelError(f"unexpected ONNX input shape {shape}: expected (batch, seq_len, 9)")
    return int(shape[1])


def windows_from_candles(candles: pd.DataFrame, seq_len: int) -> np.ndarray:
    """The ``(1, seq_len, 9)`` raw input for the last ``seq_len`` candles (validated)."""
    if len(candles) < seq_len:
        raise DataValidationError(f"need {seq_len} candles, got {len(candles)}")
    tail = candles.iloc[-seq_len:]
    feats = make_features(tail)
    if not np.isfinite(feats).all():
        raise DataValidationError("candles contain NaN or infinite values")
    return feats[np.newaxis].astype(np.float32)


def forecast_from_candles(session, candles: pd.DataFrame) -> dict[str, object]:
    """Next-hour close forecast after the last candle: forecast, last close, candle and target times."""
    from mur.export import run_session

    seq_len = model_seq_len(session)
    x = windows_from_candles(candles, seq_len)
    pred = float(run_session(session, x)[0])
    last_ts = pd.Timestamp(candles["timestamp"].iloc[-1])
    last_close = float(candles["close"].iloc[-1])
    return {
        "forecast": pred,
        "last_close": last_close,
        "change_pct": (pred / last_close - 1.0) * 100.0,
        "candle_time": last_ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "target_time": (last_ts + pd.Timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
