"""Forecasting from raw candles with an exported ONNX model: the one candles -> window function and the one
forecast body, shared by ``mur predict`` and the Serve app."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from mur.errors import DataValidationError, ModelError
from mur.model.features import FEATURE_NAMES, make_features
from mur.model.quantile_config import interval_level
from mur.serving.contract import ForecastBody
from mur.timeutil import HOUR, iso


def model_seq_len(session: Any) -> int:
    """The window length an ONNX session expects (its input's second dimension)."""
    shape = session.get_inputs()[0].shape
    if len(shape) != 3 or not isinstance(shape[1], int):
        raise ModelError(f"unexpected ONNX input shape {shape}: expected (batch, seq_len, n_features)")
    return int(shape[1])


def window_from_candles(
    candles: pd.DataFrame, seq_len: int, features: Sequence[str] = FEATURE_NAMES
) -> np.ndarray:
    """The raw ``(seq_len, n_features)`` float32 model input for the last ``seq_len`` candles (validated),
    with the columns a model names in its metadata ``mur.features``.

    Stack windows (``np.stack`` or ``window[None]``) for the ``(batch, seq_len, n_features)`` the model takes.
    """
    if len(candles) < seq_len:
        raise DataValidationError(f"need {seq_len} candles, got {len(candles)}")
    feats = make_features(candles.iloc[-seq_len:], tuple(features))
    if not np.isfinite(feats).all():
        raise DataValidationError("candles contain NaN or infinite values")
    return feats.astype(np.float32)


def horizon_rows(
    quantiles: np.ndarray | None,
    horizons: Sequence[int],
    levels: Sequence[float],
    candle_time: datetime | pd.Timestamp,
) -> list[dict[str, Any]]:
    """The API's ``horizons`` list from one window's price quantiles ``(H, L)``: per horizon its hours,
    target time, median and the interval of the outer levels (``level`` = its nominal coverage)."""
    if quantiles is None or not len(horizons):
        return []
    q = np.asarray(quantiles, dtype=np.float64).reshape(len(horizons), len(levels))
    if not np.isfinite(q).all() or (q <= 0).any():
        raise ModelError("the model gave no usable forecast range for these candles")
    mid = list(levels).index(0.5)
    start = pd.Timestamp(candle_time)
    return [
        {
            "hours": int(h),
            "target_time": iso(start + h * HOUR),
            "median": float(q[j, mid]),
            "lower": float(q[j, 0]),
            "upper": float(q[j, -1]),
            "level": interval_level(levels),
        }
        for j, h in enumerate(horizons)
    ]


def forecast_body(
    pair: str,
    *,
    prediction: float,
    last_close: float,
    candle_time: datetime | pd.Timestamp,
    model_version: int | None = None,
    horizons: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The forecast answer (:class:`~mur.serving.contract.ForecastBody`, as JSON for the trip between
    deployments): next-hour close, last close, change, candle time (open time of the last candle), target
    time, ``model_version`` (the registry version; None for a model file) and ``horizons`` (the median and
    interval per horizon, :func:`horizon_rows`; empty for a point-only model).

    A forecast that is not a finite positive number (a model fed values it was never meant to see) is a
    :class:`ModelError`, never a body: JSON has no NaN, and the API charges only for answers it can give.
    """
    forecast, close = float(prediction), float(last_close)
    change_pct = (forecast / close - 1.0) * 100.0 if close > 0 else math.nan
    if not (math.isfinite(forecast) and math.isfinite(change_pct) and forecast > 0):
        raise ModelError(f"the {pair} model gave no usable forecast ({forecast!r}) for these candles")
    try:
        body = ForecastBody.model_validate(
            {
                "pair": pair,
                "forecast": forecast,
                "last_close": close,
                "change_pct": change_pct,
                "candle_time": candle_time,
                "target_time": pd.Timestamp(candle_time) + HOUR,
                "model_version": None if model_version is None else int(model_version),
                "horizons": horizons or [],
            }
        )
    except ValidationError as exc:
        raise ModelError(f"the {pair} forecast does not fit the forecast contract: {exc}") from exc
    return body.model_dump(mode="json", exclude_unset=True)


def forecast_from_candles(
    session: Any, candles: pd.DataFrame, *, pair: str, model_version: int | None = None
) -> dict[str, Any]:
    """The forecast body for the hours after the last of ``candles``, from one onnxruntime call."""
    from mur.model.export import model_metadata, run_forecast

    meta = model_metadata(session)
    window = window_from_candles(candles, model_seq_len(session), meta["features"])
    point, quantiles = run_forecast(session, window[np.newaxis])
    candle_time = pd.Timestamp(candles["timestamp"].iloc[-1])
    return forecast_body(
        pair,
        prediction=float(point[0]),
        last_close=float(candles["close"].iloc[-1]),
        candle_time=candle_time,
        model_version=model_version,
        horizons=horizon_rows(
            None if quantiles is None else quantiles[0],
            meta["horizons"],
            meta["quantile_levels"],
            candle_time,
        ),
    )
