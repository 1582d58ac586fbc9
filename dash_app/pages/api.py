"""API page: the user's tokens (create, rotate, revoke), this month's usage against the quota, a curl example.

A new token's plaintext is returned by the create/rotate callback and shown once; it is never stored, so
reloading the page shows only its prefix.
"""

from __future__ import annotations

from typing import Any

from dash import ALL, Dash, Input, Output, State, ctx, dcc, html
from dash.development.base_component import Component
from dash.exceptions import PreventUpdate

from dash_app.components import card, data_table, field, fmt_time, muted, notice, row
from dash_app.context import DASHBOARD_TOKEN_NAME, DashboardContext, get_context, require_user
from mur.db import (
    Token,
    User,
    create_token,
    get_usage,
    list_tokens,
    month_start,
    next_month_start,
    parse_lifetime,
    revoke_token,
    rotate_token,
)
from mur.errors import InvalidInputError, MurError

TOKEN_PLACEHOLDER = "$MUR_TOKEN"
EXPIRY_CHOICES = {
    "never": "never",
    "7d": "in 7 days",
    "30d": "in 30 days",
    "90d": "in 90 days",
    "365d": "in 1 year",
}
"""The API page's expiry field (value: label): ``mur tokens create --expires-in`` values (``never``: none)."""


def curl_example(context: DashboardContext, token: str | None = None) -> str:
    """A ready-to-copy request for the first configured pair's forecast (with ``token``, or a ``$MUR_TOKEN``
    placeholder)."""
    pair = context.settings.general.pairs[0] if context.settings.general.pairs else "btc_usdt"
    auth = f"Authorization: Bearer {token or TOKEN_PLACEHOLDER}"
    return f'curl -s -H "{auth}" {context.api_url}/v1/forecast/{pair}'


def usage_block(context: DashboardContext, account: User) -> Component:
    """This month's calls against the quota, as text and a progress bar."""
    used, limit = get_usage(context.db, user_id=account.id)
    share = used / limit if limit else 1.0
    resets = next_month_start(month_start())
    return html.Div(
        [
            html.P([html.Strong(f"{used} / {limit}", id="usage-text"), f" calls this month ({share:.0%})"]),
            html.Progress(id="usage-bar", value=str(min(used, limit)), max=str(max(limit, 1))),
            muted(
                "The Forecast page counts too: one unit for each new market hour it shows. "
                f"The quota resets on {resets:%Y-%m-%d} (UTC, wall clock: not market time)."
            ),
        ]
    )


def token_rows(tokens: list[Token]) -> Component:
    """The user's tokens by prefix; the dashboard's managed token can be revoked (it is then re-derived)."""
    if not tokens:
        return muted("No tokens yet.")
    rows: list[dict[str, Any]] = []  # one per token: each column's title and cell
    for token in reversed(tokens):  # newest first
        managed = token.name == DASHBOARD_TOKEN_NAME
        actions: list[Component] = []
        if token.is_active and not managed:
            rotate_id = {"type": "token-rotate", "index": token.id}
            actions.append(html.Button("Rotate", id=rotate_id, className="secondary small"))
        if token.is_active:
            revoke_id = {"type": "token-revoke", "index": token.id}
            actions.append(html.Button("Revoke", id=revoke_id, className="danger small"))
        state, when = token.status
        status = f"{state} {fmt_time(when)}" if when else state
        rows.append(
            {
                "name": token.name + (" — used by this dashboard" if managed else ""),
                "prefix": html.Code(token.prefix + "…"),
                "created (wall)": fmt_time(token.created_at),
                "last used (wall)": fmt_time(token.last_used_at),
                "expires (wall)": fmt_time(token.expires_at) if token.expires_at else "never",
                "status": status,
                "": html.Span(actions, className="row"),
            }
        )
    return data_table(list(rows[0]), [list(row.values()) for row in rows], id="token-list")


def layout(context: DashboardContext, account: User) -> Component:
    return html.Div(
        [
            card("Usage this month", html.Div(usage_block(context, account), id="token-usage")),
            card(
                "API tokens",
                muted(
                    "A new token is shown once, right after you create or rotate it: copy it then. "
                    "Afterwards only its prefix is known."
                ),
                row(
                    field(
                        "Name",
                        dcc.Input(
                            id="token-name",
                            type="text",
                            value="default",
                            maxLength=64,
                            style={"width": "240px"},
                        ),
                    ),
                    field(
                        "Expires",
                        dcc.Dropdown(
                            id="token-expires",
                            options=EXPIRY_CHOICES,
                            value="never",
                            clearable=False,
                            searchable=False,
                            style={"width": "160px"},
                        ),
                    ),
                    html.Button("Create token", id="token-create"),
                ),
                html.Div(id="token-new"),
                html.Div(token_rows(list_tokens(context.db, user_id=account.id)), id="token-table"),
            ),
            card(
                "Try it",
                row(
                    html.Pre(
                        curl_example(context),
                        id="curl-example",
                        className="curl",
                        style={"flex": "1 1 0", "minWidth": "300px"},
                    ),
                    dcc.Clipboard(target_id="curl-example", title="copy", style={"fontSize": 20}),
                    style={"alignItems": "flex-start"},
                ),
                endpoints_block(context.api_url),
            ),
        ]
    )


def _shown_once(token: str, what: str) -> Component:
    return html.Div(
        [
            html.P(f"{what} Copy it now: it will not be shown again."),
            row(
                html.Code(token, id="token-plaintext"),
                dcc.Clipboard(target_id="token-plaintext", title="copy"),
            ),
        ],
        className="token-once",
    )


def token_action(
    _create: Any, _rotate: Any, _revoke: Any, name: str | None, expires: str | None = None
) -> tuple[Any, ...]:
    """Create, rotate or revoke one of the caller's own tokens (the database checks ownership)."""
    account = require_user()
    trigger = ctx.triggered_id
    if trigger is None or not any(t.get("value") for t in ctx.triggered):
        raise PreventUpdate  # a button that merely appeared in the layout
    context = get_context()
    message: Component
    plaintext: str | None = None
    try:
        if trigger == "token-create":
            label = (name or "").strip()
            if label == DASHBOARD_TOKEN_NAME:
                raise InvalidInputError(f"the name {DASHBOARD_TOKEN_NAME!r} is reserved for the dashboard")
            lifetime = parse_lifetime(expires) if expires and expires != "never" else None
            plaintext, row = create_token(context.db, user_id=account.id, name=label, expires_in=lifetime)
            until = f" It expires {fmt_time(row.expires_at)}." if row.expires_at else ""
            message = _shown_once(plaintext, f"Token {row.name!r} created.{until}")
        elif isinstance(trigger, dict) and trigger.get("type") == "token-rotate":
            plaintext, row = rotate_token(context.db, user_id=account.id, token_id=int(trigger["index"]))
            message = _shown_once(plaintext, f"Token {row.name!r} rotated: the old one no longer works.")
        elif isinstance(trigger, dict) and trigger.get("type") == "token-revoke":
            row = revoke_token(context.db, user_id=account.id, token_id=int(trigger["index"]))
            message = notice(f"Token {row.name!r} ({row.prefix}…) revoked.", "ok")
        else:
            raise PreventUpdate
    except (MurError, ValueError) as exc:
        message = notice(f"Nothing changed: {exc}.", "bad", id="token-error")
    tokens = token_rows(list_tokens(context.db, user_id=account.id))
    return message, tokens, usage_block(context, account), curl_example(context, plaintext)


def register_callbacks(app: Dash) -> None:
    app.callback(
        Output("token-new", "children"),
        Output("token-table", "children"),
        Output("token-usage", "children"),
        Output("curl-example", "children"),
        Input("token-create", "n_clicks"),
        Input({"type": "token-rotate", "index": ALL}, "n_clicks"),
        Input({"type": "token-revoke", "index": ALL}, "n_clicks"),
        State("token-name", "value"),
        State("token-expires", "value"),
        prevent_initial_call=True,
    )(token_action)


ENDPOINTS = (
    (
        "GET",
        "/v1/forecast/{pair}",
        "the next close and the 90 % range at every horizon (one unit of quota); "
        "?as_of=TIME: what was served then, from the track record (no quota)",
    ),  # fmt: skip
    ("POST", "/v1/forecast/{pair}", "the same for your own candles (one unit of quota)"),
    ("GET", "/v1/pairs", "the pairs served"),
    ("GET", "/v1/models", "each pair's champion: version, training window, test metrics"),
    ("GET", "/v1/models/{pair}/history", "every move of the champion alias: when, who, why, scores"),
    (
        "GET",
        "/v1/track-record/{pair}",
        "how past forecasts fared: ?from=&to=&horizon=&limit=, &format=csv, &source=backtest (no quota)",
    ),
    (
        "GET",
        "/v1/monitoring/{pair}",
        "the latest monitoring report: rolling skill, coverage, drift (no quota)",
    ),
    ("GET", "/v1/paper/{pair}", "paper portfolio, paper, not advice: ?days=, &format=csv (no quota)"),
    ("POST", "/v1/admin/reload", "admins: re-read the registry now"),
    ("GET", "/healthz, /readyz", "liveness and readiness (no token)"),
)


def endpoints_block(api_url: str) -> Component:
    """Every endpoint of the API, and where its interactive documentation is."""
    rows = [[html.Code(f"{method} {path}"), text] for method, path, text in ENDPOINTS]
    return html.Div(
        [
            html.H4("Endpoints"),
            data_table(["endpoint", "what"], rows, id="api-endpoints"),
            muted(
                [
                    "Interactive documentation: ",
                    html.A(f"{api_url}/docs", href=f"{api_url}/docs", target="_blank"),
                    " (Swagger UI) and ",
                    html.A(f"{api_url}/redoc", href=f"{api_url}/redoc", target="_blank"),
                    " (ReDoc).",
                ]
            ),
        ]
    )
