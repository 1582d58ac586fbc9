"""Client-supplied candles (``POST /v1/forecast/{pair}``): validated into the typed klines frame.

The bounds of :class:`~mur.serving.contract.Candle` are the API's documented input contract (docs/serving.md): anything outside them is a 422
before a model sees it, so a forecast never meets an overflowing float32, an out-of-range timestamp or a
candle whose high is below its close.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from mur.clock import as_utc
from mur.errors import DataValidationError
from mur.serving.contract import CandlesIn, misfit
from mur.timeutil import iso

if TYPE_CHECKING:
    import pandas as pd

_PRICE_FIELDS = ("open", "high", "low", "close")


def candles_from_payload(rows: Sequence[Mapping[str, Any]], seq_len: int) -> pd.DataFrame:
    """Validate client candles and return them as the typed klines frame.

    Each candle is checked by the contract (:class:`~mur.serving.contract.Candle`: timestamps, price and
    volume bounds, high and low); here, the window: exactly ``seq_len`` candles (at most
    :data:`~mur.serving.contract.MAX_CANDLES`), on whole hours, ascending and exactly one hour apart.
    Violations raise :class:`DataValidationError` naming the first bad candle.
    """
    import pandas as pd

    from mur.data.candles import CLOSE_OFFSET_MS, typed_klines_frame

    try:
        candles = CandlesIn.model_validate({"candles": rows}).candles
    except ValidationError as exc:
        raise DataValidationError(misfit(exc)) from None
    if len(candles) != seq_len:
        raise DataValidationError(f"need exactly {seq_len} candles (the model's window), got {len(candles)}")
    stamps: list[pd.Timestamp] = []
    for i, candle in enumerate(candles):
        ts = (
            pd.Timestamp(candle.timestamp, unit="ms", tz="UTC")
            if isinstance(candle.timestamp, int)
            else pd.Timestamp(as_utc(datetime.fromisoformat(candle.timestamp.strip())))
        )
        if ts != ts.floor("h"):
            raise DataValidationError(f"candle {i}: timestamp {iso(ts)} is not on a whole hour")
        if stamps and ts - stamps[-1] != pd.Timedelta(hours=1):
            order = "not after" if ts <= stamps[-1] else "more than one hour after"
            raise DataValidationError(
                f"candle {i}: timestamp {iso(ts)} is {order} candle {i - 1} ({iso(stamps[-1])}); "
                "candles must be ascending and hourly"
            )
        stamps.append(ts)
    ms = np.asarray([ts.value // 1_000_000 for ts in stamps], dtype=np.int64)
    prices = {name: [getattr(c, name) for c in candles] for name in _PRICE_FIELDS}
    volume = [c.volume or 0.0 for c in candles]
    unknown = dict.fromkeys(("quote_av", "trades", "tb_base_av", "tb_quote_av", "ignore"), 0)
    raw = pd.DataFrame(
        {"timestamp": ms, **prices, "volume": volume, "close_time": ms + CLOSE_OFFSET_MS, **unknown}
    )
    return typed_klines_frame(raw)


def candles_to_payload(candles: pd.DataFrame) -> list[dict[str, Any]]:
    """The klines frame as the ``candles`` of a ``POST /v1/forecast/{pair}`` body (epoch-ms timestamps): what a
    client sends, the inverse of :func:`candles_from_payload`."""
    columns = ["timestamp", "open", "high", "low", "close", "volume"]
    epoch_ms = candles["timestamp"].dt.as_unit("ms").astype("int64")
    return candles[columns].assign(timestamp=epoch_ms).to_dict("records")
