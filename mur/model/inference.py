"""Forecasting from raw candles with an exported ONNX model: the one candles -> window function and the one
forecast body, shared by ``mur predict`` and the Serve app."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from mur.errors import DataValidationError, ModelError
from mur.model.features import make_features
from mur.timeutil import HOUR, iso


def model_seq_len(session: Any) -> int:
    """The window length an ONNX session expects (its input's second dimension)."""
    shape = session.get_inputs()[0].shape
    if len(shape) != 3 or not isinstance(shape[1], int):
        raise ModelError(f"unexpected ONNX input shape {shape}: expected (batch, seq_len, 9)")
    return int(shape[1])


def window_from_candles(candles: pd.DataFrame, seq_len: int) -> np.ndarray:
    """The raw ``(seq_len, 9)`` float32 model input for the last ``seq_len`` candles (validated).

    Stack windows (``np.stack`` or ``window[None]``) for the ``(batch, seq_len, 9)`` the model takes.
    """
    if len(candles) < seq_len:
        raise DataValidationError(f"need {seq_len} candles, got {len(candles)}")
    feats = make_features(candles.iloc[-seq_len:])
    if not np.isfinite(feats).all():
        raise DataValidationError("candles contain NaN or infinite values")
    return feats.astype(np.float32)


def forecast_body(
    pair: str,
    *,
    prediction: float,
    last_close: float,
    candle_time: datetime | pd.Timestamp,
    model_version: int | None = None,
) -> dict[str, Any]:
    """The forecast answer: next-hour close, last close, change, candle time (open time of the last candle)
    and target time; ``model_version`` is the registry version (None for a model file).

    A forecast that is not a finite positive number (a model fed values it was never meant to see) is a
    :class:`ModelError`, never a body: JSON has no NaN, and the API charges only for answers it can give.
    """
    forecast, close = float(prediction), float(last_close)
    change_pct = (forecast / close - 1.0) * 100.0 if close > 0 else math.nan
    if not (math.isfinite(forecast) and math.isfinite(change_pct) and forecast > 0):
        raise ModelError(f"the {pair} model gave no usable forecast ({forecast!r}) for these candles")
    return {
        "pair": pair,
        "forecast": forecast,
        "last_close": close,
        "change_pct": change_pct,
        "candle_time": iso(candle_time),
        "target_time": iso(pd.Timestamp(candle_time) + HOUR),
        "model_version": None if model_version is None else int(model_version),
    }


def forecast_from_candles(
    session: Any, candles: pd.DataFrame, *, pair: str, model_version: int | None = None
) -> dict[str, Any]:
    """The forecast body for the hour after the last of ``candles``, from one onnxruntime call."""
    from mur.model.export import run_session

    window = window_from_candles(candles, model_seq_len(session))
    prediction = float(run_session(session, window[np.newaxis])[0])
    return forecast_body(
        pair,
        prediction=prediction,
        last_close=float(candles["close"].iloc[-1]),
        candle_time=pd.Timestamp(candles["timestamp"].iloc[-1]),
        model_version=model_version,
    )
