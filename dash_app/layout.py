"""The page shell (navigation bar, page container) and the callback that renders a page for the URL.

Navigation links are plain links (full page loads), so every page view goes through the server's guard.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from dash import Dash, Input, Output, dcc, html
from dash.development.base_component import Component
from flask_wtf.csrf import generate_csrf

from dash_app.context import current_account, get_context

FORBIDDEN_TEXT = (
    "This page is for administrators. An admin makes you one with: mur users grant YOUR_NAME admin"
)
"""The 403 answer's text (the page and the server's guard): who can open the page, and how one becomes admin."""
NAV_ITEMS = (("/forecast", "Forecast"), ("/api", "API"), ("/monitoring", "Monitoring"), ("/admin", "Admin"))


def shell() -> Component:
    """The static layout: URL, navigation bar and page container (filled by :func:`render_page`)."""
    return html.Div(
        [
            dcc.Location(id="url", refresh=False),
            dcc.Store(id="page-title"),
            html.Header(id="navbar", className="navbar"),
            html.Main(id="page-content", className="content"),
        ]
    )


def clock_line(clock: Any) -> str:
    """Market time, its speed and wall time in one line: the pages speak market time; sessions, tokens and
    quotas wall time."""
    wall = f"wall {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    if getattr(clock, "live", False):
        return f"market = {wall} (live)"
    speed = getattr(clock, "speed", None)
    pace = "" if speed is None else "frozen · " if speed == 0 else f"x{speed:g} · "
    return f"market {clock.now():%Y-%m-%d %H:%M} UTC · {pace}{wall}"


def navbar(pathname: str, *, username: str, is_admin: bool, clock: str = "") -> list[Component]:
    """Links to the pages this user may open, their name and a logout button (a CSRF-protected POST)."""
    links = [
        html.A(
            label,
            href=path,
            className="nav active" if path == pathname else "nav",
            id=f"nav{path.replace('/', '-')}",
        )
        for path, label in NAV_ITEMS
        if path != "/admin" or is_admin
    ]
    logout = html.Form(
        [
            dcc.Input(type="hidden", name="csrf_token", value=generate_csrf()),
            html.Button("Log out", type="submit", className="secondary small", id="logout-button"),
        ],
        method="POST",
        action="/logout",
    )
    return [
        html.Span("Make Us Rich", className="brand"),
        *links,
        html.Span(className="spacer"),
        html.Span(clock, className="who", id="nav-clock"),
        html.Span(f"{username}{' (admin)' if is_admin else ''}", className="who", id="nav-user"),
        logout,
    ]


def render_page(pathname: str | None) -> tuple[list[Component], Component]:
    """Navigation bar and content for ``pathname`` (checks the role again: callbacks are requests too)."""
    from dash_app.pages import admin, api, forecast, monitoring

    account = current_account()
    if account is None:  # the guard answers 401 before this; kept for defence in depth
        return [], html.P("Please log in.")
    path = pathname or "/forecast"
    context = get_context()
    nav = navbar(path, username=account.username, is_admin=account.is_admin, clock=clock_line(context.clock))
    if path == "/admin" and not account.is_admin:
        return nav, html.Div([html.H2("403 Forbidden"), html.P(FORBIDDEN_TEXT)], className="card")
    pages = {"/api": api.layout, "/monitoring": monitoring.layout, "/admin": admin.layout}
    return nav, pages.get(path, forecast.layout)(context, account)


TITLE_SCRIPT = f"""
function(pathname) {{
    var labels = {dict(NAV_ITEMS)!r};
    var title = (labels[pathname || "/forecast"] || "Forecast") + " · Make Us Rich";
    document.title = title;
    return title;
}}
"""
"""Sets the tab title in the browser (no server round trip): ``Forecast · Make Us Rich``."""


def register_callbacks(app: Dash) -> None:
    """Render the page for the current URL; title the browser tab after it."""
    app.clientside_callback(TITLE_SCRIPT, Output("page-title", "data"), Input("url", "pathname"))
    app.callback(
        Output("navbar", "children"),
        Output("page-content", "children"),
        Input("url", "pathname"),
    )(render_page)
