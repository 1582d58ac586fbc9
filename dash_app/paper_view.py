"""The Forecast page's paper portfolio (issue 39): the sizing rule (:mod:`mur.evaluation.sizing`) acting on the
served ranges after fees, next to buy & hold and the EWMA-sized rule: hourly equity, drawdown and exposure from
:func:`mur.monitoring.paper.paper_portfolio`, the numbers of ``GET /v1/paper/{pair}`` and the ``mur_paper_*``
gauges. Read from the track record in PostgreSQL: viewing it spends no API quota. Paper, not advice.
"""

from __future__ import annotations

import logging
from typing import Any

import plotly.graph_objects as go
import psycopg
from dash import Dash, Input, Output, dcc, html
from dash.development.base_component import Component
from plotly.subplots import make_subplots

from dash_app.charts import FORECAST_COLOR, styled
from dash_app.components import Columns, column_table, fmt_number, fmt_pct, fmt_signed_pct, muted, notice
from dash_app.context import get_context, require_user
from mur.errors import MurError, NotFoundError
from mur.evaluation.sizing import SizingRule
from mur.monitoring.paper import LABEL, backtest_paper, paper_portfolio

logger = logging.getLogger(__name__)

NAMES = {"model": "rule sized by the model's ranges", "ewma": "rule sized by EWMA", "buy_hold": "buy & hold"}
COLORS = {"model": FORECAST_COLOR, "ewma": "#1f77b4", "buy_hold": "gray"}
PANELS = ("equity", "drawdown", "exposure")
COLUMNS: Columns = (
    ("strategy (paper, not advice)", lambda r: NAMES[r[0]]),
    ("total return", lambda r: fmt_signed_pct(r[1]["total_return"])),
    ("Sharpe", lambda r: fmt_number(r[1]["sharpe"], 2)),
    ("max drawdown", lambda r: fmt_pct(r[1]["max_drawdown"])),
    ("fees paid", lambda r: fmt_pct(r[1]["fees"], 2)),
    ("turnover", lambda r: fmt_number(r[1]["turnover"], 2)),
    ("mean exposure", lambda r: fmt_pct(r[1]["mean_exposure"])),
    ("exposure now", lambda r: fmt_pct(r[1]["exposure_now"])),
)


def paper_figure(body: dict[str, Any]) -> go.Figure:
    """Equity (1 at the start), drawdown and exposure of each strategy, hour by hour (market time)."""
    figure = make_subplots(
        rows=3, cols=1, shared_xaxes=True, row_heights=(0.5, 0.25, 0.25), subplot_titles=PANELS
    )
    times = [p["time"] for p in body["points"]]
    for name, label in NAMES.items():
        for row, panel in enumerate(PANELS if body["strategies"].get(name) else (), start=1):
            values = [p[f"{name}_{panel}"] for p in body["points"]]
            line = {"color": COLORS[name], "shape": "hv" if panel == "exposure" else "linear"}
            line["dash"] = "dot" if name == "buy_hold" else "solid"  # the EWMA rule often holds it too
            trace = go.Scatter(
                x=times, y=values, name=label, legendgroup=name, showlegend=row == 1, line=line
            )
            figure.add_trace(trace, row=row, col=1)
    return styled(figure, f"{body['pair'].upper()} paper portfolio ({LABEL})", 560, legend_y=-0.08)


def paper_panel(body: dict[str, Any]) -> Component:
    """The verdict, the rule in words, the strategies' figures and the chart."""
    rule = body["rule"]
    how = (
        f"Exposure = min({rule['cap']:g}, {rule['target_vol']:.0%} / the annualised volatility read from the "
        f"{rule['horizon']} h range), decided every {rule['horizon']} h from the forecast served within the hour "
        f"after the candle closed (none served: no exposure), long-only; {rule['fee_bps'] + rule['slippage_bps']:g} "
        f"bp of fees and slippage on every change. {body['decisions']} forecast(s) traded, market hours "
        f"{body['from']} → {body['to']}. Paper, not advice: no order is placed."
    )
    rows = [(name, s) for name, s in body["strategies"].items() if s]
    return html.Div(
        [
            notice(body["verdict"], "warn", id="paper-verdict"),
            muted(how),
            column_table(COLUMNS, rows, id="paper-rows"),
            dcc.Graph(id="paper-chart", figure=paper_figure(body), config={"displaylogo": False}),
        ]
    )


def update(pair: str | None, _n_intervals: int | None = None) -> Component | str:
    """The panel for ``pair`` (again on the Forecast page's refresh timer)."""
    require_user()
    context = get_context()
    if pair not in context.pairs():
        return ""
    rule = SizingRule.from_settings(context.settings)
    candles = lambda start, end: context.market.klines(pair, start=start, end=end)  # noqa: E731
    try:
        body = paper_portfolio(context.db, pair, market_hour=context.clock.hour(), rule=rule, candles=candles)
    except NotFoundError as exc:
        live = muted(f"Live: {exc}. {LABEL.capitalize()}.", id="paper-none")
        try:  # a first screen with evidence: the champion's test span, labelled as such
            backtest = backtest_paper(context.db, pair, rule=rule, candles=candles)
        except NotFoundError:
            return live
        title = html.H4("Backtest (out-of-sample, before serving): the rule on the champion's test span")
        return html.Div([live, title, paper_panel(backtest)], id="paper-backtest")
    except (MurError, psycopg.Error) as exc:
        logger.error("forecast page: cannot read the paper portfolio of %s: %s", pair, exc)
        return notice("The paper portfolio cannot be read right now; try again shortly.", "bad")
    return paper_panel(body)


def register_callbacks(app: Dash) -> None:
    app.callback(
        Output("forecast-paper", "children"),
        Input("forecast-pair", "value"),
        Input("forecast-refresh", "n_intervals"),
    )(update)
