"""The admin page's pair catalogue card: list the pairs, add one (a market symbol, or a CSV of its hourly klines
uploaded here), remove one. The rules are :mod:`mur.data.catalogue`'s, the same as ``mur pairs``.

Every component id starts with ``admin-`` (the server's guard refuses callbacks on them to non-admins) and each
callback checks the role again.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
from typing import Any

from dash import Dash, Input, Output, State, dcc, html
from dash.development.base_component import Component

from dash_app.components import card, data_table, field, fmt_time, muted, notice, row
from dash_app.context import DashboardContext, get_context, require_admin
from mur.db import User
from mur.errors import MurError

logger = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 700 * 1024
"""Largest CSV the page takes (base64 in the callback must stay under the server's 1 MiB request limit): about a
year of hourly candles; larger files go through ``mur pairs add SYMBOL --csv FILE``."""


def pairs_table(context: DashboardContext) -> Component:
    """Every pair of the catalogue, then the removed ones (their history kept)."""
    from mur.data.catalogue import catalogue_entries

    rows = [
        [
            e.pair,
            e.source,
            e.status,
            str(e.candles) if e.source == "csv" else "–",
            "–" if e.first_open is None else f"{fmt_time(e.first_open)} to {fmt_time(e.last_open)}",
            e.changed_by or "–",
            fmt_time(e.changed_at),
        ]
        for e in catalogue_entries(context.settings, context.db)
    ]
    header = ["pair", "candles from", "status", "uploaded candles", "range", "by", "when"]
    return data_table(header, rows, id="admin-pairs-table")


def _remove_options(context: DashboardContext) -> list[dict[str, str]]:
    return [{"label": p.upper(), "value": p} for p in context.pairs()]


def _with_lists(context: DashboardContext, answer: Component) -> tuple[Any, Any, Any]:
    """An add or remove callback's outputs: its answer, then the table and the remove list as they are now."""
    return answer, pairs_table(context), _remove_options(context)


def pairs_card(context: DashboardContext, account: User) -> Component:
    """The card: the table, the add form (symbol + optional CSV), the remove form."""
    offline = context.settings.data.market_data == "bundled"
    how = (
        "Offline market data: upload the pair's hourly klines as CSV (columns timestamp, open, high, low, "
        f"close, volume; every hour, at least {context.settings.data.pair_min_history_hours} before market now), or "
        "give a bundled symbol."
        if offline
        else "Live market data: the symbol is checked against the exchange."
    )
    return card(
        "Pairs",
        muted(
            f"{how} The next run of the training DAG trains a new pair; removing a pair stops its "
            "training and keeps its history (forecasts, track record, registered versions)."
        ),
        html.Div(pairs_table(context), id="admin-pairs"),
        row(
            field(
                "Symbol",
                dcc.Input(
                    id="admin-pair-symbol",
                    type="text",
                    placeholder="DOGEUSDT",
                    style={"width": "160px"},
                ),
            ),
            field(
                "Hourly klines (CSV)",
                dcc.Upload(
                    id="admin-pair-upload",
                    children=html.Div(["Drop a CSV here or ", html.A("choose one")]),
                    accept=".csv,text/csv",
                    multiple=False,
                    max_size=MAX_UPLOAD_BYTES,
                    className="upload",
                    style={
                        "border": "1px dashed #888",
                        "padding": "6px 12px",
                        "cursor": "pointer",
                    },
                ),
                html.Div(id="admin-pair-file", className="muted"),
            ),
            html.Button("Add pair", id="admin-pair-add"),
        ),
        muted(
            f"CSV files up to {MAX_UPLOAD_BYTES // 1024} KiB here (about a year of hourly candles); larger "
            "ones: mur pairs add SYMBOL --csv FILE."
        ),
        html.Div(id="admin-pair-result"),
        row(
            field(
                "Pair",
                dcc.Dropdown(
                    id="admin-pair-remove-pair",
                    options=_remove_options(context),
                    style={"width": "200px"},
                ),
            ),
            html.Button("Remove pair", id="admin-pair-remove"),
        ),
        html.Div(id="admin-pair-remove-result"),
    )


def _decode(contents: str) -> bytes:
    """A ``data:…;base64,…`` URL (what dcc.Upload sends) -> the file's bytes."""
    _, _, payload = str(contents).partition(",")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MurError("the uploaded file could not be read (not base64)") from exc


def show_file(filename: Any) -> str:
    """Name the chosen file next to the upload box."""
    return f"chosen: {filename}" if filename else ""


def add_pair(clicks: Any, symbol: Any, contents: Any, filename: Any) -> tuple[Any, Any, Any]:
    """Add the pair (with the uploaded CSV when one is chosen); the table and the remove list follow."""
    from mur.data.catalogue import add_csv_pair, add_exchange_pair

    account = require_admin(clicks)
    context = get_context()
    try:
        if not isinstance(symbol, str) or not symbol.strip():
            raise MurError("type the pair's symbol first (e.g. DOGEUSDT)")
        if contents:
            name = str(filename or "upload.csv")
            data = io.BytesIO(_decode(contents))
            record = add_csv_pair(
                context.settings, context.db, symbol, data, name=name, added_by=account.username
            )
            what = f"{record.candles} hourly candles from {name}"
        else:
            record = add_exchange_pair(context.settings, context.db, symbol, added_by=account.username)
            what = f"candles from the market data ({context.settings.data.market_data})"
    except MurError as exc:
        return _with_lists(context, notice(f"Not added: {exc}", "bad", id="admin-pair-error"))
    logger.info("admin %s added pair %s (%s)", account.username, record.pair, record.source)
    message = f"Added {record.pair.upper()}: {what}. The next run of the training DAG trains it."
    return _with_lists(context, notice(message, "ok", id="admin-pair-ok"))


def remove_pair(clicks: Any, pair: Any) -> tuple[Any, Any, Any]:
    """Take the chosen pair out of the catalogue (its history stays)."""
    from mur.data.catalogue import remove_pair as remove

    account = require_admin(clicks)
    context = get_context()
    try:
        if not isinstance(pair, str) or not pair:
            raise MurError("pick a pair first")
        record = remove(context.settings, context.db, pair, removed_by=account.username)
    except MurError as exc:
        return _with_lists(context, notice(f"Not removed: {exc}", "bad", id="admin-pair-remove-error"))
    logger.info("admin %s removed pair %s", account.username, record.pair)
    message = f"Removed {record.pair.upper()} from training; its forecasts, track record and versions stay."
    return _with_lists(context, notice(message, "ok", id="admin-pair-remove-ok"))


def register_callbacks(app: Dash) -> None:
    app.callback(
        Output("admin-pair-file", "children"),
        Input("admin-pair-upload", "filename"),
        prevent_initial_call=True,
    )(show_file)
    app.callback(
        Output("admin-pair-result", "children"),
        Output("admin-pairs", "children"),
        Output("admin-pair-remove-pair", "options"),
        Input("admin-pair-add", "n_clicks"),
        State("admin-pair-symbol", "value"),
        State("admin-pair-upload", "contents"),
        State("admin-pair-upload", "filename"),
        prevent_initial_call=True,
    )(add_pair)
    app.callback(
        Output("admin-pair-remove-result", "children"),
        Output("admin-pairs", "children", allow_duplicate=True),
        Output("admin-pair-remove-pair", "options", allow_duplicate=True),
        Input("admin-pair-remove", "n_clicks"),
        State("admin-pair-remove-pair", "value"),
        prevent_initial_call=True,
    )(remove_pair)
