"""Forecast page: candles with the champion's next-hour forecast, the track record, the champion's metrics.

Forecasts come from the Serve API (with the user's dashboard token, so they count against the user's quota)
and are stored in ``forecasts`` as they arrive; actual closes are filled in from the candles. When the Serve
API is down the page says so and still draws the candles and the stored track record.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from dash import Dash, Input, Output, dcc, html
from dash.development.base_component import Component
from dash.exceptions import PreventUpdate

from dash_app.charts import candlestick_figure, empty_figure, naive_band, track_record, track_record_figure
from dash_app.clients import ChampionModel, ServeForecast, ServiceAnswerError, ServiceUnavailable
from dash_app.components import champion_summary, fmt_number, fmt_time, notice
from dash_app.context import DashboardContext, current_account, get_context
from mur.db import fill_actuals, list_forecasts, record_forecast_body
from mur.errors import MurError

if TYPE_CHECKING:
    import pandas as pd

    from mur.db import User

logger = logging.getLogger(__name__)

TRACK_RECORD_LIMIT = 500
MAX_ACTUALS_SPAN = timedelta(days=60)


def layout(context: DashboardContext, account: User) -> Component:
    """Pair picker, candle chart, champion card and track record (filled by :func:`update`)."""
    pairs = context.settings.pairs
    return html.Div(
        [
            html.Div(
                [
                    html.Div(
                        [
                            html.Label("Pair", htmlFor="forecast-pair"),
                            dcc.Dropdown(
                                id="forecast-pair",
                                options=[{"label": p.upper(), "value": p} for p in pairs],
                                value=pairs[0] if pairs else None,
                                clearable=False,
                                style={"width": "220px"},
                            ),
                        ],
                        className="field",
                    ),
                    html.Div(id="forecast-headline"),
                ],
                className="row",
            ),
            dcc.Loading(
                [
                    html.Div(id="forecast-status"),
                    dcc.Graph(id="forecast-chart", config={"displaylogo": False}),
                ],
                type="circle",
            ),
            html.Div([html.H3("Champion model"), html.Div(id="forecast-champion")], className="card"),
            html.Div(
                [
                    html.H3("Track record"),
                    html.Div(id="forecast-mae"),
                    dcc.Graph(id="forecast-track", config={"displaylogo": False}),
                ],
                className="card",
            ),
        ]
    )


def _utc_timestamp(value: Any) -> pd.Timestamp:
    import pandas as pd

    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def recent_candles(context: DashboardContext, pair: str) -> pd.DataFrame:
    """The latest ``context.candles_shown`` hourly candles of ``pair`` that have closed at market now (the
    market clock): never a candle of the current market hour or later, whatever the source holds."""
    import pandas as pd

    hour = _utc_timestamp(context.market_hour())
    _first, last = context.market.data_range(pair)
    last_ts = min(_utc_timestamp(last), hour - pd.Timedelta(hours=1))
    start = last_ts - pd.Timedelta(hours=context.candles_shown - 1)
    return context.market.klines(pair, start=start.to_pydatetime(), end=hour.to_pydatetime())


def fill_known_actuals(context: DashboardContext, pair: str, candles: pd.DataFrame | None) -> None:
    """Set ``actual`` for stored forecasts whose target candle has closed at market now and is in the data
    (bounded look-back)."""
    import pandas as pd

    hour = context.market_hour()
    pending = [
        f
        for f in list_forecasts(context.db, pair=pair, limit=TRACK_RECORD_LIMIT)
        if f.actual is None and f.target_time < hour
    ]
    if not pending:
        return
    latest = candles["timestamp"].iloc[-1] if candles is not None and len(candles) else None
    wanted = [f.target_time for f in pending if latest is None or f.target_time <= latest]
    if not wanted:
        return
    start = max(min(wanted), max(wanted) - MAX_ACTUALS_SPAN)
    frame = context.market.klines(pair, start=start, end=min(max(wanted) + timedelta(hours=1), hour))
    fill_actuals(
        context.db, pair=pair, candles=zip(pd.to_datetime(frame["timestamp"]), frame["close"], strict=True)
    )


def store_forecast(context: DashboardContext, pair: str, prediction: ServeForecast) -> None:
    """Record the forecast in the track record: every horizon's median and range (or the point alone)."""
    last_close = prediction.last_close if prediction.last_close is not None else prediction.forecast
    body = {
        "pair": pair,
        "forecast": prediction.forecast,
        "last_close": last_close,
        "target_time": prediction.target_time,
        "model_version": prediction.model_version,
        "horizons": [
            {
                "hours": b.hours,
                "target_time": b.target_time,
                "median": b.median,
                "lower": b.lower,
                "upper": b.upper,
                "level": b.level,
            }
            for b in prediction.horizons
        ],
    }
    record_forecast_body(context.db, body, made_at=context.market_now())


def _fetch_forecast(
    context: DashboardContext, account: User, pair: str
) -> tuple[ServeForecast | None, ChampionModel | None, list[Component]]:
    """The Serve API's forecast and champion for ``pair`` (None when unavailable) and notices to show."""
    notices: list[Component] = []
    try:
        token = context.serve_token(account.id)
        prediction = context.serve.forecast(pair, token)
    except ServiceUnavailable as exc:
        notices.append(
            notice(f"The forecast service is down: {exc}. Showing the candles only.", "warn", id="serve-down")
        )
        return None, None, notices
    except ServiceAnswerError as exc:
        hint = " Your monthly quota is used up." if exc.status == 429 else ""
        notices.append(notice(f"No forecast: {exc}.{hint}", "warn", id="serve-error"))
        return None, None, notices
    try:
        store_forecast(context, pair, prediction)
    except MurError as exc:
        logger.warning("could not store the forecast of %s: %s", pair, exc)
    champion = None
    try:
        champion = next((m for m in context.serve.models(token) if m.pair == pair), None)
    except (ServiceUnavailable, ServiceAnswerError) as exc:
        notices.append(notice(f"Champion metrics unavailable: {exc}.", "warn"))
    return prediction, champion, notices


def update(pair: str | None) -> tuple[Any, ...]:
    """Everything on the page for ``pair``: headline, notices, candle chart, champion, MAE text, track record."""
    account = current_account()
    if account is None:
        raise PreventUpdate
    context = get_context()
    if pair not in context.settings.pairs:
        message = "Pick one of the listed pairs."
        return "", notice(message, "bad"), empty_figure(message), "", "", empty_figure(message)
    notices: list[Component] = []
    candles = None
    try:
        candles = recent_candles(context, pair)
    except MurError as exc:
        notices.append(notice(f"No candles for {pair.upper()}: {exc}", "bad", id="candles-error"))
    prediction, champion, serve_notices = _fetch_forecast(context, account, pair)
    notices.extend(serve_notices)
    try:
        fill_known_actuals(context, pair, candles)
    except MurError as exc:
        logger.warning("could not fill actuals of %s: %s", pair, exc)
    record = track_record(
        list_forecasts(context.db, pair=pair, limit=TRACK_RECORD_LIMIT, horizon_hours=1),
        naive_band(candles["close"].tolist()) if candles is not None and len(candles) else None,
        market_hour=context.market_hour(),
    )

    chart = (
        candlestick_figure(candles, pair=pair, forecast=prediction, now=context.market_now())
        if candles is not None and len(candles)
        else empty_figure("no candles")
    )
    headline: Component | str = ""
    if prediction is not None:
        change = (
            f" ({(prediction.forecast / prediction.last_close - 1) * 100:+.3f} %)"
            if prediction.last_close
            else ""
        )
        headline = html.P(
            [
                "Next-hour close forecast: ",
                html.Strong(fmt_number(prediction.forecast), id="forecast-value"),
                change,
                f" for {fmt_time(prediction.target_time)}, model version {prediction.model_version}",
                *_range_text(prediction),
            ],
            className="notice ok",
        )
    champion_block: Component = (
        champion_summary(champion)
        if champion is not None
        else html.P("The champion's metrics come from the forecast service.", className="muted")
    )
    if record.count:
        mae_text: Component = html.P(
            [
                f"Over {record.count} resolved forecast(s): MAE of the model ",
                html.Strong(fmt_number(record.mae_model, 5), id="mae-model"),
                " vs persistence ",
                html.Strong(fmt_number(record.mae_persistence, 5), id="mae-persistence"),
                f"; {record.pending} waiting for their candle to close",
                _overdue_text(record),
                f" (market time {fmt_time(context.market_now())}).",
                *_range_record(record),
            ]
        )
        track = track_record_figure(record, pair=pair)
    else:
        mae_text = html.P(
            f"No resolved forecasts yet ({record.pending} waiting for their candle to close"
            f"{_overdue_text(record)}; market time {fmt_time(context.market_now())}).",
            className="muted",
            id="track-pending",
        )
        track = empty_figure("no resolved forecasts yet")
    return headline, notices, chart, champion_block, mae_text, track


def _overdue_text(record: Any) -> str:
    """``, N whose candle closed but whose close is not in the data yet`` (nothing when there are none)."""
    if not record.overdue:
        return ""
    return f", {record.overdue} whose candle closed but is not in the data yet"


def _range_record(record: Any) -> list[Any]:
    """The ranges' running coverage and interval skill vs the naive range, when forecasts had ranges."""
    if not record.ranged or record.coverage is None:
        return []
    parts: list[Any] = [
        html.Br(),
        f"{record.ranged} of them had a {record.level or 0.9:.0%} range: coverage ",
        html.Strong(f"{record.coverage:.1%}", id="track-coverage"),
    ]
    if record.interval_skill is not None:
        parts += [
            ", interval skill vs naive ranges ",
            html.Strong(f"{record.interval_skill:+.3f}", id="track-interval-skill"),
        ]
    return parts


def _range_text(prediction: ServeForecast) -> list[Any]:
    """``; 90 % range: L – U next hour, ... in 24 h`` for the headline (nothing for a point-only model)."""
    if not prediction.horizons:
        return []
    parts = [
        f"{fmt_number(b.lower, 6)} – {fmt_number(b.upper, 6)} in {b.hours} h" for b in prediction.horizons
    ]
    return [
        html.Br(),
        html.Span(f"{prediction.horizons[0].level:.0%} range: " + "; ".join(parts), id="forecast-range"),
    ]


def register_callbacks(app: Dash) -> None:
    app.callback(
        Output("forecast-headline", "children"),
        Output("forecast-status", "children"),
        Output("forecast-chart", "figure"),
        Output("forecast-champion", "children"),
        Output("forecast-mae", "children"),
        Output("forecast-track", "figure"),
        Input("forecast-pair", "value"),
    )(update)
