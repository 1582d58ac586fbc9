"""The admin page's champion history card: a pair's alias moves (the gate's, live promotions, rollbacks) as a
timeline, and a rollback with a reason (:func:`mur.registry.aliases.rollback`, the same as
``mur models rollback``). docs/promotion.md, "History and rollback".

Every component id starts with ``admin-`` (the server's guard refuses callbacks on them to non-admins) and each
callback checks the role again.
"""

from __future__ import annotations

import logging
from typing import Any

from dash import Dash, Input, Output, State, dcc, html
from dash.development.base_component import Component

from dash_app.components import card, data_table, field, fmt_time, muted, notice, pair_dropdown, row
from dash_app.context import DashboardContext, get_context, require_admin
from mur.db import User
from mur.errors import MurError

logger = logging.getLogger(__name__)


def history_table(context: DashboardContext, pair: Any) -> Component:
    """``pair``'s champion moves, newest first."""
    from mur.db.alias_history import list_moves

    if not isinstance(pair, str) or not pair:
        return muted("Pick a pair.")
    moves = list_moves(context.db, pair, limit=50)
    if not moves:
        return muted(f"No champion moves of {pair.upper()} recorded yet.")
    rows = [
        [fmt_time(m.market_time), fmt_time(m.wall_time), m.action, m.change, m.actor, m.reason or "–"]
        + [m.scores_text]
        for m in moves
    ]
    header = ["market time", "wall time", "action", "version", "by", "reason", "scores"]
    return data_table(header, rows, id="admin-models-table")


def history_card(context: DashboardContext, account: User) -> Component:
    pairs = context.pairs()
    return card(
        "Champion history and rollback",
        muted(
            "Every move of a pair's champion alias. A rollback moves it back to the champion before (or the "
            "version given); the API serves it within one registry refresh."
        ),
        row(field("Pair", pair_dropdown("admin-models-pair", pairs, "200px"))),
        html.Div(history_table(context, pairs[0] if pairs else None), id="admin-models-history"),
        row(
            field(
                "To version (optional)",
                dcc.Input(id="admin-models-to", type="number", min=1, step=1, style={"width": "120px"}),
            ),
            field(
                "Reason",
                dcc.Input(id="admin-models-reason", type="text", style={"width": "320px"}),
            ),
            html.Button("Roll back", id="admin-models-rollback"),
        ),
        html.Div(id="admin-models-result"),
    )


def show_history(pair: Any) -> Component:
    require_admin()
    return history_table(get_context(), pair)


def roll_back(clicks: Any, pair: Any, to: Any, reason: Any) -> tuple[Any, Any]:
    """Roll the chosen pair's champion back; the timeline follows."""
    from mur.registry.aliases import rollback

    account = require_admin(clicks)
    context = get_context()
    try:
        if not isinstance(pair, str) or not pair:
            raise MurError("pick a pair first")
        target = None if to in (None, "") else int(to)
        move = rollback(context.settings, pair, to=target, actor=account.username, reason=str(reason or ""))
    except (MurError, ValueError) as exc:
        answer = notice(f"Not rolled back: {exc}", "bad", id="admin-models-error")
        return answer, history_table(context, pair)
    logger.info("admin %s rolled %s back: %s (%s)", account.username, move.pair, move.change, move.reason)
    text = f"{move.pair.upper()}: champion {move.change}. The API serves v{move.version} within one refresh."
    return notice(text, "ok", id="admin-models-ok"), history_table(context, pair)


def register_callbacks(app: Dash) -> None:
    app.callback(
        Output("admin-models-history", "children"),
        Input("admin-models-pair", "value"),
        prevent_initial_call=True,
    )(show_history)
    app.callback(
        Output("admin-models-result", "children"),
        Output("admin-models-history", "children", allow_duplicate=True),
        Input("admin-models-rollback", "n_clicks"),
        State("admin-models-pair", "value"),
        State("admin-models-to", "value"),
        State("admin-models-reason", "value"),
        prevent_initial_call=True,
    )(roll_back)
