"""The forecast answer of the API, defined once: what the Forecaster builds
(:func:`mur.model.inference.forecast_body`), what the API publishes in its OpenAPI schema (``serve_app/api.py``),
what the Serve API's client (``mur/serving/client.py``: the dashboard and ``mur forecast``) reads back, and the
times the API adds to it (:func:`with_times`).

Times are aware UTC datetimes in Python and ISO-8601 text with a trailing ``Z`` (seconds precision) in JSON,
exactly what :func:`mur.timeutil.iso` writes, so a body dumped with ``model_dump(mode="json")`` is the JSON
the API answers. Import-light on purpose (pydantic and the standard library only): the dashboard and the CLI
import it without the serving stack.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from mur.clock import as_utc
from mur.contracts import HorizonMetrics, PredictorMetrics, Significance, Window

HOUR = timedelta(hours=1)
MAX_CANDLES = 1000
"""The most candles a request may carry (a model's window is at most this long)."""
PRICE_MIN = 1e-8
PRICE_MAX = 1e8
"""Prices must lie in ``[PRICE_MIN, PRICE_MAX]``: finite and normal in float32 (what the model computes in),
with room for every listed pair."""
VOLUME_MAX = 1e18
"""Volumes must lie in ``[0, VOLUME_MAX]``."""
TIMESTAMP_MIN = datetime(2009, 1, 1, tzinfo=UTC)
TIMESTAMP_MAX = datetime(2100, 1, 1, tzinfo=UTC)
"""Candle open times must lie in ``[TIMESTAMP_MIN, TIMESTAMP_MAX)`` (UTC)."""
TIMESTAMP_MIN_MS = int(TIMESTAMP_MIN.timestamp() * 1000)
TIMESTAMP_MAX_MS = int(TIMESTAMP_MAX.timestamp() * 1000)
TIMESTAMP_TEXT_MAX = 40
"""The longest ISO-8601 timestamp string accepted."""


def _text(value: datetime) -> str:
    return as_utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


Time = Annotated[datetime, AfterValidator(as_utc), PlainSerializer(_text, return_type=str, when_used="json")]
"""A UTC time: ISO-8601 (or epoch) in, ``2024-11-04T07:00:00Z`` out in JSON (the OpenAPI type is a string)."""

Method = Literal["online", "off", "graph", "unavailable"]


class HorizonScale(BaseModel):
    """The scale applied to one horizon's range."""

    hours: int
    scale: float = Field(
        default=1.0,
        description="factor on the range's distances from the median in log price (1: the graph's range)",
    )
    resolved: int = Field(
        default=0,
        description="resolved forecasts that stepped this horizon's tracker (0: no state yet, scale 1)",
    )


class ServedCalibration(BaseModel):
    """Which online calibration a forecast's ranges carry (docs/forecasts.md, "Online calibration")."""

    method: Method = Field(
        description="online: scaled by the online tracker; off: the setting is off; graph: not applied; "
        "unavailable: the state could not be read (scale 1)"
    )
    generation: str | None = Field(
        default=None, description="the tracker generation (quantile levels and offline calibration recipe)"
    )
    updated_at: str | None = Field(default=None, description="when the scales were last stepped (UTC)")
    horizons: list[HorizonScale] = Field(default_factory=list)
    note: str = ""


class HorizonOut(BaseModel):
    """The forecast ``hours`` ahead: the median close and a calibrated range (docs/forecasts.md)."""

    model_config = ConfigDict(allow_inf_nan=False)

    hours: int = Field(description="hours after the last closed candle", examples=[1, 4, 24])
    target_time: Time = Field(description="open time of the candle whose close is forecast")
    close_time: Time | None = Field(None, description="when that candle closes (market time)")
    median: float = Field(gt=0, description="median forecast of that close")
    lower: float = Field(gt=0, description="lower end of the range (the lowest quantile level)")
    upper: float = Field(gt=0, description="upper end of the range (the highest quantile level)")
    level: float = Field(description="nominal coverage of [lower, upper], e.g. 0.9", examples=[0.9])

    def closes_at(self) -> datetime:
        """When the forecast candle closes: ``close_time``, else an hour after its open ``target_time``."""
        return self.close_time or self.target_time + HOUR


class ForecastBody(BaseModel):
    """What a forecaster answers (:func:`mur.model.inference.forecast_body`; ``mur predict`` prints it):
    ``model_version`` is None for a model file. The API's answer (:class:`ForecastOut`) adds its times."""

    model_config = ConfigDict(allow_inf_nan=False)

    pair: str
    forecast: float = Field(description="next-hour close: the 1 h median")
    last_close: float
    change_pct: float
    candle_time: Time = Field(description="open time of the last closed candle used")
    target_time: Time = Field(
        description="open time of the candle whose close is forecast (it closes an hour later: close_time)"
    )
    model_version: int | None
    horizons: list[HorizonOut] = Field(
        default_factory=list, description="one entry per horizon (empty for a point-only model)"
    )

    def closes_at(self) -> datetime:
        """When the forecast candle closes: an hour after its open ``target_time``."""
        return self.target_time + HOUR


class ForecastOut(ForecastBody):
    """A next-hour close forecast, and the median and calibrated range for every horizon."""

    model_version: int
    as_of: Time | None = Field(None, description="market now when answered (ISO-8601 UTC, mur/clock.py)")
    close_time: Time | None = Field(
        None, description="when the forecast candle closes (market time): the time this forecast is for"
    )
    model_trained_until: Time | None = Field(
        None, description="the last candle the model was trained on (end of its training window)"
    )
    model_age_hours: float | None = Field(
        None, description="market hours from model_trained_until to as_of: a stale model shows here"
    )
    calibration: ServedCalibration | None = Field(
        None, description="the online scale applied to each horizon's range (none for a point-only model)"
    )
    source: str | None = Field(
        None,
        description="track_record: an as_of answer, read back from the track record",
        examples=["track_record"],
    )

    def closes_at(self) -> datetime:
        """When the forecast candle closes: ``close_time``, else an hour after its open ``target_time``."""
        return self.close_time or self.target_time + HOUR


def with_times(body: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The forecast body with its times said plainly (the fields of :class:`ForecastOut`;
    market time, :mod:`mur.clock`): ``as_of`` (market now), ``close_time`` (when the forecast candle closes:
    ``target_time`` + 1 h) and, when the forecaster says which candles the model was trained on
    (``model_trained_until``), the model's age ``model_age_hours`` (market hours from that last training
    candle to now)."""
    from mur.timeutil import iso, parse_time

    out = dict(body)
    out["as_of"] = iso(now)
    target = parse_time(out.get("target_time"))
    if target is not None:
        out["close_time"] = iso(target + HOUR)
    bands = []
    for band in out.get("horizons") or []:
        band_target = parse_time(band.get("target_time")) if isinstance(band, Mapping) else None
        bands.append(band if band_target is None else {**band, "close_time": iso(band_target + HOUR)})
    if bands:
        out["horizons"] = bands
    trained = parse_time(out.get("model_trained_until"))
    out["model_age_hours"] = None if trained is None else round(max(0.0, (now - trained) / HOUR), 2)
    return out


class ModelMetricsOut(BaseModel):
    """A served version's test-span evaluation (the registered part of its metrics document)."""

    mae: float | None = None
    skill: float | None = Field(default=None, description="1 - MAE_model / MAE_persistence (> 0 beats it)")
    model: PredictorMetrics | None = None
    persistence: PredictorMetrics | None = None
    linear: PredictorMetrics | None = None
    n_test: int | None = None
    significance: Significance | None = Field(
        default=None, description="Diebold-Mariano and binomial tests vs persistence on the test span"
    )
    interval_skill: float | None = Field(
        default=None, description="1 h: 1 - Winkler_model / Winkler_naive (> 0: better ranges than naive)"
    )
    coverage: float | None = Field(default=None, description="1 h: share of test closes inside the range")
    horizons: list[HorizonMetrics] | None = Field(
        default=None, description="per horizon: point and interval scores next to their baselines"
    )


class GateOut(BaseModel):
    """Why the promotion gate made this version champion (docs/promotion.md)."""

    rule: str | None = Field(default=None, description="first, fresher, noise, unloadable, ...")
    reason: str | None = None
    kind: str | None = Field(default=None, description="scheduled, backfill or manual")


class ModelOut(BaseModel):
    """The model served for one pair (``loaded: false`` and no version while none is)."""

    pair: str
    loaded: bool
    version: int | None = None
    model_name: str | None = None
    alias: str | None = None
    aliases: list[str] = []
    seq_len: int | None = None
    features: list[str] = Field(default_factory=list, description="input columns (metadata mur.features)")
    horizons: list[int] = Field(default_factory=list, description="forecast horizons in hours")
    quantile_levels: list[float] = []
    trained_window: Window | None = None
    test_window: Window | None = None
    metrics: ModelMetricsOut | None = None
    gate: GateOut | None = None
    run_id: str | None = None
    loaded_at: str | None = None
    synthetic: bool = Field(default=False, description="a synthetic pair (scale tests), not market data")


class ModelsOut(BaseModel):
    """``GET /v1/models``: the model served for each pair (read back by the dashboard's client)."""

    models: list[ModelOut]


# --- the live paper portfolio (mur/monitoring/paper.py): paper, not advice -------------------------------
class PaperStrategyOut(BaseModel):
    """One strategy over the paper hours, after fees (null: not computable yet, e.g. a flat series' Sharpe)."""

    hours: float | None = None
    total_return: float | None = None
    ann_vol: float | None = None
    sharpe: float | None = Field(default=None, description="annualised, zero risk-free rate")
    sortino: float | None = None
    max_drawdown: float | None = Field(default=None, description="a negative fraction")
    turnover: float | None = Field(default=None, description="sum of |change of exposure|")
    fees: float | None = Field(default=None, description="fees and slippage paid, units of starting equity")
    mean_exposure: float | None = None
    exposure_now: float | None = Field(default=None, description="the exposure held from the latest decision")
    drawdown_now: float | None = None


class PaperPointOut(BaseModel):
    """One hour: its close (market time) and, per strategy, exposure held over it, equity (1 at the start),
    drawdown from the running peak and costs paid so far (each change's cost, a fraction of the equity then)."""

    time: str
    close: float
    model_exposure: float | None = None
    model_equity: float | None = None
    model_drawdown: float | None = None
    model_costs: float | None = None
    ewma_exposure: float | None = None
    ewma_equity: float | None = None
    ewma_drawdown: float | None = None
    ewma_costs: float | None = None
    buy_hold_exposure: float | None = None
    buy_hold_equity: float | None = None
    buy_hold_drawdown: float | None = None
    buy_hold_costs: float | None = None


class PaperOut(BaseModel):
    """``GET /v1/paper/{pair}``: the sizing rule acting on the served ranges, paper, not advice."""

    model_config = ConfigDict(populate_by_name=True)

    pair: str
    as_of: str = Field(description="market now (the current market hour)")
    label: Literal["paper, not advice"]
    rule: dict[str, float | int | bool] = Field(description="target_vol, cap, horizon, fee_bps, ...")
    from_: str = Field(alias="from", description="start, equity 1: the close of the first decision's candle")
    to: str = Field(description="close time of the last paper hour")
    decisions: int = Field(description="forecasts of the rule's horizon traded")
    verdict: str = Field(description="whether the model-sized rule beat the EWMA-sized rule after fees")
    strategies: dict[Literal["model", "ewma", "buy_hold"], PaperStrategyOut | None]
    points: list[PaperPointOut] = Field(description="hour by hour, oldest first")


def misfit(exc: ValidationError | Sequence[Mapping[str, Any]]) -> str:
    """Where a body does not fit the contract (``exc``, or a request's errors), in one line for an error
    message: the first bad field (of a union, the branch whose value was wrong rather than one of another
    type), without pydantic's names of union branches (``constrained-int``, ``str``) or FastAPI's ``body`` in
    its location."""
    errors = exc.errors() if isinstance(exc, ValidationError) else exc
    first = next((e for e in errors if not e["type"].endswith(("_type", "_parsing"))), errors[0])
    loc = [str(p) for p in first["loc"] if p not in ("body", "int", "str", "float")]
    where = ".".join(p for p in loc if not p.startswith("constrained-"))
    return f"{where}: {first['msg']}" if where else str(first["msg"])


# --- the request: candles a client POSTs (mur/serving/payload.py reads them into a frame) ----------------
Price = Annotated[float, Field(ge=PRICE_MIN, le=PRICE_MAX)]


class Candle(BaseModel):
    """One hourly candle; ``timestamp`` is the open time (epoch milliseconds or ISO-8601, UTC, from 2009
    to 2100). Prices lie in [1e-8, 1e8] with ``low <= min(open, close)`` and ``high >= max(open, close)``."""

    model_config = ConfigDict(allow_inf_nan=False)

    timestamp: (
        Annotated[int, Field(ge=TIMESTAMP_MIN_MS, lt=TIMESTAMP_MAX_MS)]
        | Annotated[str, Field(min_length=1, max_length=TIMESTAMP_TEXT_MAX)]
    ) = Field(examples=[1735689600000, "2025-01-01T00:00:00Z"])
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Annotated[float, Field(ge=0, le=VOLUME_MAX)] | None = None

    @field_validator("timestamp")
    @classmethod
    def _iso_in_range(cls, value: int | str) -> int | str:
        """An ISO-8601 timestamp (naive = UTC) lies in ``[TIMESTAMP_MIN, TIMESTAMP_MAX)`` (kept as written)."""
        if isinstance(value, str):
            try:
                parsed = as_utc(datetime.fromisoformat(value.strip()))
            except ValueError:
                raise ValueError("cannot parse the timestamp (ISO-8601 or epoch ms)") from None
            if not TIMESTAMP_MIN <= parsed < TIMESTAMP_MAX:
                raise ValueError(
                    f"timestamp out of range: expected {_text(TIMESTAMP_MIN)} to {_text(TIMESTAMP_MAX)}"
                )
        return value

    @model_validator(mode="after")
    def _high_and_low(self) -> Candle:
        if self.high < max(self.open, self.close):
            raise ValueError("'high' is below its open or close")
        if self.low > min(self.open, self.close):
            raise ValueError("'low' is above its open or close")
        return self


class CandlesIn(BaseModel):
    """Exactly ``seq_len`` candles (the model's window), oldest first, one hour apart. The published schema
    says that count (:func:`create_api`); the bounds here only cap what is parsed before the model checks it."""

    candles: list[Candle] = Field(min_length=1, max_length=MAX_CANDLES)
