"""What the dashboard's views and callbacks share: settings, the database pool, the service clients and the
logged-in user. Built once by :func:`dash_app.app.create_app` and stored on the Flask app.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from dash.exceptions import PreventUpdate
from flask import current_app
from flask_login import current_user

from mur.db import Database, ensure_managed_token
from mur.security import HashingGate, derive_api_token

if TYPE_CHECKING:
    from mur.clock import MarketClock
    from mur.data import MarketData
    from mur.db import User
    from mur.orchestration.airflow_client import AirflowClient
    from mur.serving.client import ServeClient
    from mur.settings import Settings

EXTENSION_KEY = "mur_dashboard"
DASHBOARD_TOKEN_NAME = "dashboard (managed)"
"""Name of the per-user token the dashboard calls the Serve API with (see :meth:`DashboardContext.serve_token`)."""


@dataclass
class DashboardContext:
    """Shared, thread-safe state of one dashboard app."""

    settings: Settings
    db: Database
    serve: ServeClient
    airflow: AirflowClient
    secret_key: str
    hashing: HashingGate
    """Bounds the argon2 checks (login, registration) running at once in this process."""
    candles_shown: int = 72

    @cached_property
    def market(self) -> MarketData:
        """The configured candle source (bundled data or Binance), created on first use."""
        from mur.data import get_market_data

        return get_market_data(self.settings)

    @cached_property
    def clock(self) -> MarketClock:
        """The market clock: the candle source's own when it has one (what it shows and the dashboard's "now"
        agree), else the one the settings describe (real time with Binance).

        Its ``now()`` (timezone-aware UTC) is what every market purpose on the pages uses (the charts' "now",
        which candles and forecasts are shown, what is still waiting for its candle); its ``hour()`` is the open
        time of the current, unclosed market hour. Sessions, cookies and login limits stay on wall time."""
        clock = getattr(self.market, "clock", None)
        if clock is not None and all(callable(getattr(clock, name, None)) for name in ("now", "hour")):
            return clock
        from mur.clock import market_clock

        return market_clock(self.settings)

    def pairs(self) -> list[str]:
        """The pairs the pages offer: the pair catalogue (configured + added by an admin - removed), read on
        every call so a pair added meanwhile shows up (:func:`mur.data.catalogue.pair_catalogue`)."""
        from mur.data.catalogue import pair_catalogue

        return pair_catalogue(self.settings, self.db)

    @property
    def api_url(self) -> str:
        """The Serve API URL shown to people (curl examples)."""
        return (self.settings.dashboard.api_public_url or self.settings.serving.url).rstrip("/")

    def serve_token(self, user_id: int) -> str:
        """The user's own Serve API token for the dashboard's calls, so they count against their quota.

        It is derived from the secret key (HMAC of the user id and a generation), never stored in clear: only
        its SHA-256 is in ``api_tokens`` like any token, named :data:`DASHBOARD_TOKEN_NAME`. Revoking it
        makes the next call derive the next generation; a new secret key replaces it (the old one is revoked).
        """
        secret = self.secret_key

        def derive(generation: int) -> str:
            return derive_api_token(secret, f"mur-dashboard/serve-token/v1/{user_id}/{generation}")

        token, _row = ensure_managed_token(self.db, user_id=user_id, name=DASHBOARD_TOKEN_NAME, derive=derive)
        return token


def get_context() -> DashboardContext:
    """The running app's :class:`DashboardContext` (inside a request)."""
    return current_app.extensions[EXTENSION_KEY]


def current_account() -> User | None:
    """The logged-in, enabled user (reloaded from the database on every request), or None."""
    return current_user.account if current_user.is_authenticated else None


def require_user() -> User:
    """The logged-in user; for anyone else the callback does nothing (the server's guard answered 401)."""
    if (account := current_account()) is None:
        raise PreventUpdate
    return account


def require_admin(clicks: object = True) -> User:
    """The logged-in admin; for anyone else the callback does nothing (the server's guard already answered
    403 to a non-admin's callback on an ``admin-`` component: this is the second check), and nothing either
    for a button not clicked yet (``clicks``: its ``n_clicks``)."""
    account = require_user()
    if not account.is_admin or not clicks:
        raise PreventUpdate
    return account
