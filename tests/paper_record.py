"""A track record for the paper portfolio's tests (tests/serve/test_paper_api.py, tests/dash/test_browser_paper.py):
real bundled closes, a forecast of every hour and one of the rule's 24 h horizon every day."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from mur.data.bundled import BundledMarketData
from mur.db import Database, fill_actuals, record_forecast

H = timedelta(hours=1)


def paper_record(db: Database, pair: str, start: datetime, days: int) -> list[float]:
    """1 h forecasts of every hour from ``start`` for ``days`` days and 24 h ones of every day (90 % ranges 4 %,
    8 %, 12 %, ... wide in log price), served five minutes after their candle closed, resolved with the bundled
    closes; those closes (from ``start``'s candle on)."""
    frame = BundledMarketData().klines(pair, start=start, end=start + (days * 24 + 1) * H)
    closes = [float(c) for c in frame["close"]]
    for k in range(days * 24):
        for hours in (1, 24) if k % 24 == 0 else (1,):
            width = 0.04 * (k // 24 + 1) if hours == 24 else 0.01
            record_forecast(
                db,
                pair=pair,
                model_version="7",
                target_time=start + (k + hours) * H,
                predicted=closes[k],
                last_close=closes[k],
                made_at=start + (k + 1) * H + timedelta(minutes=5),
                horizon_hours=hours,
                lower=closes[k] * math.exp(-width / 2),
                upper=closes[k] * math.exp(width / 2),
                level=0.9,
            )
    fill_actuals(db, pair=pair, candles=zip(frame["timestamp"], frame["close"], strict=True))
    return closes
