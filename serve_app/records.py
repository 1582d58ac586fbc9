"""The API's read-only views of what happened: ``GET /v1/track-record/{pair}``, ``GET /v1/monitoring/{pair}``,
``GET /v1/models/{pair}/history``, ``GET /v1/paper/{pair}`` and ``GET /v1/forecast/{pair}?as_of=T`` (what was
served then). They need a bearer token and use no quota. Market time throughout
(:mod:`mur.clock`): a forecast is resolved once its target candle has closed at market now.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field

from mur.clock import as_utc
from mur.contracts import MAX_MOVES
from mur.errors import InvalidInputError, NotFoundError
from mur.monitoring.paper import MAX_DAYS, PAPER_DAYS
from mur.monitoring.report import MonitoringReport
from mur.monitoring.track_record import MAX_LIMIT
from mur.pairs import lenient_pair
from mur.serving.contract import TIMESTAMP_MAX, TIMESTAMP_MIN, PaperOut, Time, with_times

if TYPE_CHECKING:
    from serve_app.service import ApiService

PairPath = Annotated[
    str,
    Path(
        min_length=1, max_length=40, description="a pair such as eth_usdt or ETHUSDT", examples=["eth_usdt"]
    ),
    AfterValidator(lenient_pair),
]


def _iso_time(value: Any) -> Any:
    """A market time is ISO-8601 text (pydantic alone would read a number as Unix seconds)."""
    if not (isinstance(value, str) and re.match(r"\d{4}-\d\d-\d\d", value.strip())):
        raise ValueError("expected an ISO-8601 time such as 2025-01-01T00:00:00Z")
    return value


IsoTime = Annotated[datetime, BeforeValidator(_iso_time), AfterValidator(as_utc)]
"""A market time: ISO-8601 text, read as UTC (a time without a zone is UTC)."""


class ErrorOut(BaseModel):
    """Every error answer."""

    error: str
    message: str


class ScoredOut(BaseModel):
    """One scored forecast: the first one served for its target and horizon (ISO-8601 UTC, market time:
    mur/clock.py)."""

    made_at: str = Field(description="market time the forecast was first served (the scored one)")
    target_time: str = Field(description="open time of the candle whose close was forecast")
    close_time: str = Field(description="when that candle closes (market time): the time the forecast is for")
    horizon_hours: int
    model_version: str
    predicted: float = Field(description="the forecast (the median for a range forecast)")
    last_close: float = Field(description="the close when it was made (the persistence forecast)")
    lower: float | None = None
    upper: float | None = None
    level: float | None = Field(None, description="the range's nominal coverage")


class ResolvedOut(ScoredOut):
    """One scored forecast whose target candle has closed."""

    actual: float = Field(description="the close that happened")
    error: float = Field(description="predicted - actual")
    persistence_error: float = Field(description="last_close - actual")
    inside: bool | None = Field(None, description="whether the actual close fell inside the range")
    source: Literal["live", "backtest"] = Field(
        "live", description="live: served; backtest: the champion's out-of-sample test span, before serving"
    )


class UnresolvedOut(ScoredOut):
    """One scored forecast not resolved yet: ``pending`` (its candle has not closed at market now) or
    ``overdue`` (closed, but its close is not known yet)."""

    status: Literal["pending", "overdue"]


class SummaryOut(BaseModel):
    n: int
    mae_model: float | None = None
    mae_persistence: float | None = None
    skill: float | None = Field(None, description="1 - mae_model / mae_persistence (> 0: beat persistence)")
    coverage: float | None = Field(None, description="share of actual closes inside the range")
    level: float | None = None
    by_horizon: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="the same per horizon (hours)"
    )


class TrackRecordOut(BaseModel):
    """One forecast per (target time, horizon) is scored: the first one served for it, with its model
    version; every count and summary of the dashboard, the monitoring report and ``/metrics`` uses the
    same rows (docs/monitoring.md, "The track record")."""

    pair: str
    source: Literal["live", "backtest"] = Field("live", description="which track record (``source``)")
    as_of: str = Field(description="market now (the current market hour, ISO-8601 UTC)")
    pending: int = Field(
        description="scored forecasts not resolved yet: waiting for their candle to close, or overdue"
    )
    overdue: int = Field(
        0, description="of those, the ones whose candle closed but whose close is not known yet"
    )
    resolved_total: int = Field(
        0, description="resolved scored forecasts in the range (``resolved`` is the latest ``limit``)"
    )
    scored: str = Field("", description="which forecast of a target is scored")
    from_: str | None = Field(None, alias="from", description="targets from this market time (inclusive)")
    to: str | None = Field(None, description="targets before this market time")
    resolved: list[ResolvedOut]
    unresolved: list[UnresolvedOut] = Field(
        default_factory=list, description="pending and overdue forecasts, newest first (at most ``limit``)"
    )
    summary: SummaryOut


class AlertOut(BaseModel):
    as_of: Time
    kinds: list[str]
    message: str
    delivered: bool = Field(description="whether Discord accepted the alert")
    retrain_run_id: str | None = Field(None, description="the mur_training run it requested")


class MonitoringOut(MonitoringReport):
    """The latest monitoring report of the pair (docs/monitoring.md) and its recent alerts."""

    recent_alerts: list[AlertOut] = Field(default_factory=list)


class AliasMoveOut(BaseModel):
    """One move of the pair's champion alias (docs/promotion.md, "History and rollback")."""

    id: int
    pair: str
    alias: str
    version: int
    previous_version: int | None = Field(description="the champion before (null: none)")
    action: Literal["gate", "live", "rollback", "manual"]
    actor: str
    reason: str
    scores: dict[str, Any] = Field(description="the scores behind the move (the version's gate scores)")
    market_time: str = Field(description="market time of the move (ISO-8601 UTC, mur/clock.py)")
    wall_time: str = Field(description="wall-clock time of the move (ISO-8601 UTC)")


class ModelHistoryOut(BaseModel):
    pair: str
    moves: list[AliasMoveOut] = Field(description="newest first")


def served_body(rows: list[Any]) -> dict[str, Any]:
    """A forecast read back from the track record (:func:`mur.db.served.served_forecast`'s rows) as the API
    answered it (:class:`~mur.serving.contract.ForecastOut`, built by the forecasters' own
    :func:`~mur.model.inference.forecast_body`): ``as_of`` is when it was served, and ``source`` says where it
    came from."""
    from mur.model.inference import forecast_body
    from mur.timeutil import HOUR

    first = rows[0]
    one_hour = next((r for r in rows if r.horizon_hours == 1), first)
    body = forecast_body(
        first.pair,
        prediction=one_hour.predicted,
        last_close=first.last_close,
        candle_time=first.target_time - first.horizon_hours * HOUR,
        model_version=first.model_version,
        horizons=[
            {"hours": r.horizon_hours, "target_time": r.target_time, "median": r.predicted}
            | {"lower": r.lower, "upper": r.upper, "level": r.level}
            for r in rows
            if r.level is not None
        ],
    )
    return with_times(body | {"source": "track_record"}, min(r.made_at for r in rows))


async def forecast_as_of(service: ApiService, pair: str, at: datetime) -> dict[str, Any]:
    """What ``GET /v1/forecast/{pair}`` answered at market time ``at``, from the track record (no quota);
    :class:`NotFoundError` (404) when nothing was served from that hour's candle."""
    from mur.db.served import served_candle, served_forecast

    name = service.known_pair(pair)
    if not TIMESTAMP_MIN <= at < TIMESTAMP_MAX:
        raise InvalidInputError(f"as_of must lie between {TIMESTAMP_MIN.year} and {TIMESTAMP_MAX.year}")
    rows = await service.query(lambda db: served_forecast(db, pair=name, at=at))
    if not rows:
        raise NotFoundError(
            f"no forecast of {name} was served at {at.isoformat()} (from the candle of "
            f"{served_candle(at).isoformat()}): the track record holds only forecasts someone asked for"
        )
    return served_body(rows)


def add_record_routes(api: FastAPI, service: ApiService, owner: Callable[..., Any]) -> None:
    """Add the track-record, monitoring and model-history routes to ``api`` (``owner``: the bearer-token
    dependency)."""
    from mur.monitoring.store import latest_alerts, latest_report
    from mur.monitoring.track_record import track_record, track_record_csv

    market: list[Any] = []  # the market data source of the paper portfolio's EWMA rule, made on first use

    errors: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (401, 404, 422, 503)}
    # every route: bearer token, the same errors documented
    router = APIRouter(tags=["v1"], dependencies=[Depends(owner)], responses=errors)

    @router.get(
        "/v1/track-record/{pair}",
        response_model=TrackRecordOut,
        responses={200: {"content": {"text/csv": {}}, "description": "the track record (JSON, or CSV)"}},
        summary="Track record: how the served forecasts fared",
    )
    async def track_record_route(
        pair: PairPath,
        limit: Annotated[
            int, Query(ge=1, le=MAX_LIMIT, description="resolved (and unresolved) forecasts returned")
        ] = 100,
        horizon: Annotated[
            int | None, Query(ge=1, le=10_000, description="only this horizon (hours)")
        ] = None,
        since: Annotated[
            IsoTime | None,
            Query(alias="from", description="targets from this market time, ISO-8601 (inclusive)"),
        ] = None,
        until: Annotated[
            IsoTime | None, Query(alias="to", description="targets before this market time, ISO-8601")
        ] = None,
        format: Annotated[
            Literal["json", "csv"], Query(description="json, or csv: one row per forecast with its status")
        ] = "json",
        source: Annotated[
            Literal["live", "backtest"],
            Query(
                description="live: the served forecasts; backtest: the champion's out-of-sample forecasts of "
                "its test span, made before it served (never part of the live scores or alerts)"
            ),
        ] = "live",
    ) -> Any:
        """How the served forecasts fared: one scored forecast per target and horizon (the first served),
        resolved ones newest first with their summary against persistence and the range's coverage, and the
        pending ones. ``from``/``to`` pick target times (market time; a time without a zone is UTC).
        ``format=csv`` answers the same rows as CSV; ``source=backtest`` the backtest track record instead
        (every row resolved and labelled ``backtest``). Uses no quota."""
        name = service.known_pair(pair)
        hour = service.clock.hour()
        if since is not None and until is not None and since >= until:
            raise InvalidInputError(f"from ({since.isoformat()}) must be before to ({until.isoformat()})")

        def read(db: Any) -> dict[str, Any]:
            return track_record(
                db,
                name,
                market_hour=hour,
                source=source,
                limit=limit,
                horizon=horizon,
                since=since,
                until=until,
            )

        body = await service.query(read)
        return _csv(track_record_csv(body), f"{name}-{source}-track-record.csv") if format == "csv" else body

    @router.get(
        "/v1/paper/{pair}",
        response_model=PaperOut,
        responses={200: {"content": {"text/csv": {}}, "description": "JSON, or CSV"}},
        summary="Paper portfolio: the sizing rule acting on the served ranges (paper, not advice)",
    )
    async def paper(
        request: Request,
        pair: PairPath,
        days: Annotated[
            int, Query(ge=1, le=MAX_DAYS, description="market days of the track record")
        ] = PAPER_DAYS,
        format: Annotated[
            Literal["json", "csv"], Query(description="json, or csv: one row per hour")
        ] = "json",
    ) -> Any:
        """The sizing rule's paper equity after fees from the served forecasts (what was served, when), next
        to buy & hold and the rule sized by the EWMA baseline: hourly exposure, equity, drawdown and costs,
        the summary metrics and a plain verdict. 404 before a forecast of the rule's horizon can be traded.
        ``format=csv`` (or ``Accept: text/csv``) answers the hours as CSV. Uses no quota. Paper, not advice."""
        from mur.data.source import get_market_data
        from mur.evaluation.sizing import SizingRule
        from mur.monitoring.paper import paper_csv, paper_of, paper_rows

        name, hour, settings = service.known_pair(pair), service.clock.hour(), service.db.settings

        def candles(start: datetime, end: datetime) -> Any:
            if not market:
                market.append(get_market_data(settings))
            return market[0].klines(name, start=start, end=end)

        rule = SizingRule.from_settings(settings)
        rows = await service.query(lambda db: paper_rows(db, name, market_hour=hour, rule=rule, days=days))
        body = await asyncio.to_thread(
            paper_of, rows, pair=name, market_hour=hour, rule=rule, candles=candles
        )
        if format == "csv" or "text/csv" in request.headers.get("accept", ""):
            return _csv(paper_csv(body), f"{name}-paper-not-advice.csv")
        return body

    @router.get(
        "/v1/monitoring/{pair}",
        response_model=MonitoringOut,
        summary="Monitoring: the latest report of a pair",
    )
    async def monitoring(pair: PairPath) -> dict[str, Any]:
        """The pair's latest monitoring report: rolling skill vs persistence and coverage of the resolved
        forecasts, input drift against the champion's training window, thresholds crossed, recent alerts
        (404 before the first monitoring run). Uses no quota."""
        name = service.known_pair(pair)

        def read(db: Any) -> dict[str, Any] | None:
            report = latest_report(db, name)
            if report is None:
                return None
            alerts = [asdict(a) for a in latest_alerts(db, name, limit=10)]  # AlertOut's fields answered
            return report.model_dump(mode="json") | {"recent_alerts": alerts}

        body = await service.query(read)
        if body is None:
            raise NotFoundError(
                f"no monitoring report for {name} yet: the mur_monitoring DAG writes one every market hour"
            )
        return body

    @router.get(
        "/v1/models/{pair}/history",
        response_model=ModelHistoryOut,
        summary="Model history: every move of the pair's champion alias",
    )
    async def model_history(
        pair: PairPath,
        limit: Annotated[int, Query(ge=1, le=MAX_MOVES, description="the latest moves returned")] = 50,
    ) -> dict[str, Any]:
        """Every move of the pair's champion alias, newest first: the gate's promotions, live promotions and
        rollbacks, with market and wall time, actor, reason and the scores behind it. Uses no quota."""
        from mur.db.alias_history import list_moves

        name = service.known_pair(pair)
        moves = await service.query(lambda db: list_moves(db, name, limit=limit))
        return {"pair": name, "moves": [m.as_json() for m in moves]}

    api.include_router(router)


def _csv(text: str, filename: str) -> Response:
    """A CSV answer, downloaded as ``filename``."""
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    return Response(text, media_type="text/csv; charset=utf-8", headers=headers)
