"""Forecast page: candles with the champion's next-hour forecast, the track record, the champion's metrics.

Forecasts come from the Serve API (with the user's dashboard token, so they count against the user's quota)
and are stored in ``forecasts`` as they arrive; actual closes are filled in from the candles. When the Serve
API is down the page says so and still draws the candles and the stored track record.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from dash import Dash, Input, Output, State, ctx, dcc, html
from dash.development.base_component import Component
from dash.exceptions import PreventUpdate

from dash_app import paper_view
from dash_app.charts import candlestick_figure, empty_figure, track_record_figure
from dash_app.components import (
    card,
    champion_summary,
    field,
    fmt_age,
    fmt_close,
    fmt_number,
    fmt_time,
    muted,
    notice,
    pair_dropdown,
    row,
)
from dash_app.context import DashboardContext, get_context, require_user
from dash_app.track_view import (
    baseline_closes,
    download_csv,
    pending_table,
    reliability_table,
    summary_text,
    track_record_view,
)
from mur.db import record_forecast_body
from mur.errors import DataValidationError, MurError, ServiceAnswerError, ServiceUnavailable
from mur.monitoring.compute import resolve_forecasts
from mur.serving.contract import ForecastOut, ModelOut, ServedCalibration
from mur.timeutil import HOUR, as_utc, parse_time

if TYPE_CHECKING:
    import pandas as pd

    from mur.db import User

logger = logging.getLogger(__name__)

REFRESH_MS = 30_000
"""The page looks at the market clock this often; it asks the forecast API again only when a new market hour
began (each forecast call uses a unit of the user's quota) and otherwise refreshes its times."""
STALE_AFTER_HOURS = 6
"""A champion whose last training candle is this many market hours old is flagged stale on the page."""


def layout(context: DashboardContext, account: User) -> Component:
    """Pair picker, candle chart, champion card and track record (filled by :func:`update`)."""
    pairs = context.pairs()
    return html.Div(
        [
            row(
                field("Pair", pair_dropdown("forecast-pair", pairs, "220px")),
                html.Div(id="forecast-headline"),
            ),
            html.Div(id="forecast-freshness"),
            dcc.Interval(id="forecast-refresh", interval=REFRESH_MS),
            dcc.Store(id="forecast-state"),
            dcc.Loading(
                [
                    html.Div(id="forecast-status"),
                    dcc.Graph(id="forecast-chart", config={"displaylogo": False}),
                ],
                type="circle",
            ),
            card("Champion model", html.Div(id="forecast-champion")),
            card("Live reliability of the ranges", html.Div(id="forecast-reliability")),
            card(
                "Track record",
                html.Div(id="forecast-mae"),
                row(
                    html.Button(
                        "Download the track record (CSV)",
                        id="forecast-download-button",
                        className="secondary small",
                    ),
                    dcc.Download(id="forecast-download"),
                ),
                html.Div(id="forecast-pending"),
                dcc.Graph(id="forecast-track", config={"displaylogo": False}),
            ),
            card(f"Paper portfolio ({paper_view.LABEL})", html.Div(id="forecast-paper")),
        ]
    )


def parse_time_or_none(value: Any) -> datetime | None:
    """An aware UTC datetime from ISO-8601 text (``Z`` allowed); None if absent or unreadable."""
    try:
        return parse_time(value) if isinstance(value, str) and value else None
    except DataValidationError:
        return None


def recent_candles(context: DashboardContext, pair: str) -> pd.DataFrame:
    """The latest ``context.candles_shown`` hourly candles of ``pair`` that have closed at market now (the
    market clock): never a candle of the current market hour or later, whatever the source holds."""
    hour = as_utc(context.clock.hour())
    _first, last = context.market.data_range(pair)
    last_ts = min(as_utc(last), hour - HOUR)
    start = last_ts - (context.candles_shown - 1) * HOUR
    return context.market.klines(pair, start=start.to_pydatetime(), end=hour.to_pydatetime())


def _fetch_forecast(
    context: DashboardContext, account: User, pair: str
) -> tuple[ForecastOut | None, ModelOut | None, list[Component]]:
    """The Serve API's forecast and champion for ``pair`` (None when unavailable) and notices to show."""
    try:
        token = context.serve_token(account.id)
        prediction = context.serve.forecast(pair, token)
    except ServiceUnavailable as exc:
        text = f"The forecast service is down: {exc}. Showing the candles only."
        return None, None, [notice(text, "warn", id="serve-down")]
    except ServiceAnswerError as exc:
        hint = " Your monthly quota is used up." if exc.status == 429 else ""
        return None, None, [notice(f"No forecast: {exc}.{hint}", "warn", id="serve-error")]
    try:  # into the track record: every horizon's median and range (or the point alone), with the scale
        # each range was served with (the online update judges the range as served)
        body = {**prediction.model_dump(mode="json"), "pair": pair}
        record_forecast_body(context.db, body, made_at=context.clock.now())
    except MurError as exc:
        logger.warning("could not store the forecast of %s: %s", pair, exc)
    try:
        champion = next((m for m in context.serve.models(token) if m.pair == pair), None)
    except (ServiceUnavailable, ServiceAnswerError) as exc:
        return prediction, None, [notice(f"Champion metrics unavailable: {exc}.", "warn")]
    return prediction, champion, []


def update(pair: str | None, _ticks: Any = None, state: Any = None) -> tuple[Any, ...]:
    """Everything on the page for ``pair``: headline, notices, candle chart, champion, MAE text, track record,
    live reliability, pending forecasts and the page state the freshness line reads. A refresh tick within the
    market hour already shown changes nothing (no forecast call, no quota used)."""
    account = require_user()
    context = get_context()
    hour = context.clock.hour()  # one market hour for the whole answer
    hour_text = hour.isoformat()
    shown = isinstance(state, dict) and (state.get("pair"), state.get("hour")) == (pair, hour_text)
    if ctx.triggered_id == "forecast-refresh" and shown:
        raise PreventUpdate
    if pair not in context.pairs():
        message = "Pick one of the listed pairs."
        blank = empty_figure(message)
        return "", notice(message, "bad"), blank, "", "", blank, "", "", {"pair": pair, "hour": hour_text}
    notices: list[Component] = []
    candles = None
    try:
        candles = recent_candles(context, pair)
    except MurError as exc:
        notices.append(notice(f"No candles for {pair.upper()}: {exc}", "bad", id="candles-error"))
    prediction, champion, serve_notices = _fetch_forecast(context, account, pair)
    notices.extend(serve_notices)
    try:
        resolve_forecasts(context.db, context.market, pair, hour)
    except MurError as exc:
        logger.warning("could not fill actuals of %s: %s", pair, exc)
    now = context.clock.now()
    view = track_record_view(context.db, pair, market_hour=hour, closes=baseline_closes(context, pair))
    chart = (
        candlestick_figure(candles, pair=pair, forecast=prediction, now=now)
        if candles is not None and len(candles)
        else empty_figure("no candles")
    )
    headline: Component | str = ""
    if prediction is not None:
        change = (
            f" ({_signed_pct(prediction.forecast / prediction.last_close - 1)})"
            if prediction.last_close
            else ""
        )
        headline = html.P(
            [
                "Next-hour close forecast: ",
                html.Strong(fmt_number(prediction.forecast), id="forecast-value"),
                change,
                f" for the {fmt_close(prediction.closes_at(), now)}, model version {prediction.model_version}",
                *_range_text(prediction),
                html.Small(
                    " · Each new market hour shown here uses one unit of your API quota (see API).",
                    className="muted",
                ),
            ],
            className="notice ok",
        )
    champion_block: Component = (
        champion_summary(champion)
        if champion is not None
        else muted("The champion's metrics come from the forecast service.")
    )
    track = (
        track_record_figure(view.record, pair=pair)
        if view.record.resolved
        else empty_figure("no resolved forecasts yet")
    )
    trained = prediction.model_trained_until if prediction is not None else None
    if trained is None and champion is not None:
        trained = parse_time_or_none(champion.trained_window.end if champion.trained_window else None)
    state_out = {
        "pair": pair,
        "hour": hour_text,
        "close_time": prediction.closes_at().isoformat() if prediction is not None else None,
        "trained_until": trained.isoformat() if trained is not None else None,
        "version": prediction.model_version if prediction is not None else None,
    }
    return (
        headline,
        notices,
        chart,
        champion_block,
        summary_text(view, now),
        track,
        reliability_table(view.reliability, view.backtest),
        pending_table(view, now),
        state_out,
    )


def _signed_pct(share: float) -> str:
    """``+0.123 %``; a change that rounds to zero at three decimals says so instead of ``-0.000 %``."""
    text = f"{share * 100:+.3f}%"
    return "unchanged to 0.001%" if text in ("+0.000%", "-0.000%") else text


def freshness(state: Any, _ticks: Any = None) -> Component | str:
    """The freshness line: when the forecast candle closes and how old the model is, in market time
    (recomputed on every refresh tick from the page state; no API call)."""
    require_user()
    if not isinstance(state, dict) or not state.get("close_time"):
        return ""
    now = get_context().clock.now()
    close = parse_time_or_none(state["close_time"])
    trained = parse_time_or_none(state.get("trained_until"))
    parts: list[Any] = []
    if close is not None:
        parts.append(html.Span(f"Forecast for the {fmt_close(close, now)}.", id="forecast-close"))
    stale = trained is not None and (now - trained).total_seconds() / 3600 >= STALE_AFTER_HOURS
    text = " The model's training time is unknown."
    if trained is not None:
        text = (
            f" Model version {state.get('version')} {fmt_age(trained, now)} "
            f"(last training candle {fmt_time(trained)})"
        )
        text += (
            f": stale, no newer champion for {STALE_AFTER_HOURS}+ market hours; is training running?"
            if stale
            else "."
        )
    parts.append(html.Span(text, id="model-age"))
    return notice(parts, "warn" if stale else "ok", id="freshness-line")


def _range_text(prediction: ForecastOut) -> list[Any]:
    """``; 90 % range: L – U next hour, ... in 24 h`` for the headline (nothing for a point-only model)."""
    if not prediction.horizons:
        return []
    parts = [
        f"{fmt_number(b.lower, 6)} – {fmt_number(b.upper, 6)} in {b.hours} h" for b in prediction.horizons
    ]
    return [
        html.Br(),
        html.Span(f"{prediction.horizons[0].level:.0%} range: " + "; ".join(parts), id="forecast-range"),
        html.Br(),
        html.Span(calibration_text(prediction.calibration), id="forecast-calibration", className="muted"),
    ]


def calibration_text(calibration: ServedCalibration | None) -> str:
    """What the API said about the ranges' online calibration (docs/forecasts.md), in one sentence."""
    if calibration is None or calibration.method == "graph":
        return "The model's own ranges (no online calibration reported)."
    if calibration.method == "off":
        return "The model's own ranges: online calibration is off (MUR_ONLINE_CALIBRATION=false)."
    if calibration.method == "unavailable":
        return "The model's own ranges: the online calibration could not be read just now."
    if all(h.resolved == 0 for h in calibration.horizons):
        return "Online calibration: no resolved forecast yet, so the model's own ranges (scale 1)."
    scales = ", ".join(f"×{h.scale:.2f} at {h.hours} h" for h in calibration.horizons)
    return f"Online calibration (from the resolved forecasts) scales the ranges around the median: {scales}."


def register_callbacks(app: Dash) -> None:
    paper_view.register_callbacks(app)
    app.callback(
        Output("forecast-headline", "children"),
        Output("forecast-status", "children"),
        Output("forecast-chart", "figure"),
        Output("forecast-champion", "children"),
        Output("forecast-mae", "children"),
        Output("forecast-track", "figure"),
        Output("forecast-reliability", "children"),
        Output("forecast-pending", "children"),
        Output("forecast-state", "data"),
        Input("forecast-pair", "value"),
        Input("forecast-refresh", "n_intervals"),
        State("forecast-state", "data"),
    )(update)
    app.callback(
        Output("forecast-freshness", "children"),
        Input("forecast-state", "data"),
        Input("forecast-refresh", "n_intervals"),
    )(freshness)
    app.callback(
        Output("forecast-download", "data"),
        Input("forecast-download-button", "n_clicks"),
        State("forecast-pair", "value"),
        prevent_initial_call=True,
    )(download_csv)
