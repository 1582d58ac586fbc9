"""The live paper portfolio's arithmetic on a hand-computed track record (mur/monitoring/paper.py): which
forecasts are traded, the hours and their closes, exposures from the served ranges (the cap on a flat range, no
exposure without a forecast), equity after fees, drawdown, and the EWMA-sized rule reading no candle after its
decision. Paper, not advice."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

from mur.db.forecasts import Forecast
from mur.errors import NotFoundError
from mur.evaluation.sizing import HOURS_PER_YEAR, SizingRule
from mur.monitoring.paper import LABEL, paper_csv, paper_from

H = timedelta(hours=1)
C0 = datetime(2025, 3, 1, tzinfo=UTC)
SPAN = NormalDist().inv_cdf(0.95) - NormalDist().inv_cdf(0.05)
COST = 10 / 1e4
LOG_WIDTH = 0.02
TARGET = 0.5 * LOG_WIDTH / (SPAN * math.sqrt(2)) * math.sqrt(HOURS_PER_YEAR)
"""Half the annualised volatility of a 2 h range 2 % wide in log price: that range sizes an exposure of 0.5."""
RULE = SizingRule(target_vol=TARGET, cap=1.0, horizon=2, fee_bps=7.0, slippage_bps=3.0)
CLOSES = [100.0, 102.0, 101.0, 103.0, 104.0, 102.0, 102.0]
"""The close of the candles opened at C0, C0 + 1 h, ... (known from the track record)."""


def forecast(candle: int, hours: int, width: float, made_after: timedelta = timedelta(minutes=5)) -> Forecast:
    """The forecast served from candle ``C0 + candle h`` for ``hours`` ahead, a 90 % range ``width`` wide in log
    price around its last close; resolved when its target is in :data:`CLOSES`."""
    last = CLOSES[candle]
    target = candle + hours
    return Forecast(
        id=candle * 100 + hours,
        pair="btc_usdt",
        model_version="3",
        made_at=C0 + (candle + 1) * H + made_after,
        target_time=C0 + target * H,
        predicted=last,
        last_close=last,
        actual=CLOSES[target] if target < len(CLOSES) else None,
        horizon_hours=hours,
        lower=last * math.exp(-width / 2),
        upper=last * math.exp(width / 2),
        level=0.9,
    )


def record() -> list[Forecast]:
    hourly = [forecast(k, 1, 0.01) for k in range(len(CLOSES) - 1)]
    # decisions at candles 0, 2, 4: a range 2 % wide (0.5), 4 % wide (0.25), flat (the cap); candle 6 has none
    return [*hourly, forecast(0, 2, 0.02), forecast(2, 2, 0.04), forecast(4, 2, 0.0), forecast(1, 2, 0.5)]


def test_paper_equity_fees_and_drawdown_by_hand() -> None:
    body = paper_from(record(), pair="btc_usdt", market_hour=C0 + 7 * H, rule=RULE)
    assert body["label"] == LABEL and body["decisions"] == 3
    assert (body["from"], body["to"]) == ("2025-03-01T01:00:00Z", "2025-03-01T07:00:00Z")
    points = body["points"]
    assert [p["close"] for p in points] == CLOSES[1:]
    exposure = [0.5, 0.5, 0.25, 0.25, 1.0, 1.0]  # the off-grid forecast from candle 1 is never read
    assert [p["model_exposure"] for p in points] == pytest.approx(exposure)
    equity, peak, fees = 1.0, 1.0, 0.0
    for k, (p, e) in enumerate(zip(points, exposure, strict=True)):
        change = abs(e - (exposure[k - 1] if k else 0.0))
        fees += COST * change * equity
        equity *= 1 + e * (CLOSES[k + 1] / CLOSES[k] - 1) - COST * change
        peak = max(peak, equity)
        assert p["model_equity"] == pytest.approx(equity, rel=1e-12)
        assert p["model_drawdown"] == pytest.approx(equity / peak - 1, abs=1e-12)
        hold = (CLOSES[1] / CLOSES[0] - COST) * CLOSES[k + 1] / CLOSES[1]  # the cost paid once, on entry
        assert p["buy_hold_equity"] == pytest.approx(hold, rel=1e-12)
    model, hold = body["strategies"]["model"], body["strategies"]["buy_hold"]
    assert model["total_return"] == pytest.approx(equity - 1) and model["fees"] == pytest.approx(fees)
    assert min(p["buy_hold_drawdown"] for p in points) == pytest.approx(hold["max_drawdown"])
    assert model["turnover"] == pytest.approx(0.5 + 0.25 + 0.75) and model["hours"] == 6
    assert model["exposure_now"] == 0.0  # the decision at candle 6: no forecast served, no exposure
    assert hold["mean_exposure"] == 1.0 and hold["fees"] == pytest.approx(COST)
    assert body["strategies"]["ewma"] is None and "EWMA-sized rule yet" in body["verdict"]
    assert ("does NOT beat" in body["verdict"]) == (model["sharpe"] <= hold["sharpe"])
    rows = paper_csv(body).splitlines()
    assert rows[0].startswith("label,time,close,model_exposure") and len(rows) == 7
    assert rows[1].startswith(f'"{LABEL}",2025-03-01T02:00:00Z,102.0,0.5')


def test_a_late_forecast_is_not_traded_and_an_unknown_close_catches_up() -> None:
    rows = [f for f in record() if (f.target_time, f.horizon_hours) != (C0 + 4 * H, 2)]
    late = forecast(2, 2, 0.04, made_after=timedelta(hours=1))  # served after the next candle closed
    gap = [f for f in rows if C0 + 3 * H not in (f.target_time, f.target_time - f.horizon_hours * H)]
    body = paper_from([*gap, late], pair="btc_usdt", market_hour=C0 + 7 * H, rule=RULE)
    points = body["points"]
    assert [p["model_exposure"] for p in points][:4] == pytest.approx([0.5, 0.5, 0.0, 0.0])
    assert [p["close"] for p in points][:4] == [102.0, 101.0, 101.0, 104.0]  # candle 3's close: unknown...
    assert points[3]["buy_hold_equity"] == pytest.approx(
        (1.02 - COST) * 104.0 / 102.0
    )  # ...candle 4 catches up


def test_empty_record() -> None:
    with pytest.raises(NotFoundError, match="fills as forecasts of the 2 h horizon"):
        paper_from(record()[:6], pair="btc_usdt", market_hour=C0 + 7 * H, rule=RULE)
    with pytest.raises(NotFoundError):  # a forecast from a candle not closed at market now is not read
        paper_from(record(), pair="btc_usdt", market_hour=C0, rule=RULE)


def candles(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    times = pd.date_range(C0 - (n - 7) * H, periods=n, freq="h", tz="UTC")
    return pd.DataFrame({"timestamp": times, "close": close, "high": close * 1.004, "low": close * 0.996})


def test_ewma_rule_reads_no_candle_after_its_decision() -> None:
    frame = candles(24 * 40, seed=1)
    body = paper_from(record(), pair="btc_usdt", market_hour=C0 + 7 * H, rule=RULE, candles=frame)
    ewma = [p["ewma_exposure"] for p in body["points"]]
    assert all(e is not None and 0 < e <= 1 for e in ewma) and body["strategies"]["ewma"]["hours"] == 6
    assert "the EWMA-sized rule after fees (Sharpe" in body["verdict"]
    for decision in (0, 2, 4):  # rewrite every candle after the decision: its exposure stays
        changed = frame.copy()
        after = changed["timestamp"] > pd.Timestamp(C0 + decision * H)
        changed.loc[after, ["close", "high", "low"]] *= np.linspace(0.5, 2.0, int(after.sum()))[:, None]
        again = paper_from(record(), pair="btc_usdt", market_hour=C0 + 7 * H, rule=RULE, candles=changed)
        assert [p["ewma_exposure"] for p in again["points"]][decision] == pytest.approx(ewma[decision])
    short = paper_from(record(), pair="btc_usdt", market_hour=C0 + 7 * H, rule=RULE, candles=frame[-30:])
    assert short["strategies"]["ewma"] is None  # too few candles before the first decision to fit it
