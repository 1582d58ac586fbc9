"""The app factory: a Dash app on a Flask server with Flask-Login, CSRF protection and a server-side guard.

Protection is enforced on the server, for every request, in :func:`_guard`:

- ``/login``, ``/register``, ``/logout``, ``/assets/…`` and Dash's JavaScript bundles are public;
- ``/forecast``, ``/api``, ``/monitoring``, ``/admin`` without a session redirect to ``/login?next=…``; ``/admin`` without the
  admin role is 403;
- Dash's data endpoints (``/_dash-layout``, ``/_dash-dependencies``, ``/_dash-update-component``) without a
  session are 401; a callback whose outputs are admin components (ids ``admin-…``) is 403 for non-admins;
- any other path is 404 (Dash would otherwise serve its page for every URL), and so is a path under
  ``/_dash-component-suites/`` that names no registered file (a small JSON body and one log line, instead of
  Dash's 500 with a 3 KB traceback per request).

CSRF: Flask-WTF's ``CSRFProtect`` checks every POST. Forms carry the token in a hidden field; Dash's renderer
sends the ``_csrf_token`` cookie's value in an ``X-CSRFToken`` header on each callback, so the server sets that
cookie (readable by our pages' script, ``SameSite=Strict``) to a token bound to the session. A page on another
site can neither read the cookie nor make the browser send the session cookie (``SameSite=Strict``).
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any

from dash import Dash
from dash.exceptions import DependencyException
from flask import Flask, Response, current_app, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from flask_wtf.csrf import CSRFError, CSRFProtect, generate_csrf
from werkzeug.middleware.proxy_fix import ProxyFix

from dash_app import auth
from dash_app.context import EXTENSION_KEY, DashboardContext
from dash_app.layout import FORBIDDEN_TEXT
from mur.db import Database
from mur.errors import ConfigError, DatabaseError
from mur.orchestration.airflow_client import AirflowClient
from mur.security import HashingBusyError, HashingGate
from mur.serving.client import ServeClient
from mur.settings import PLACEHOLDER_SECRETS, Settings

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
MIN_SECRET_KEY_LENGTH = 16
CSRF_COOKIE = "_csrf_token"
CSRF_HEADER = "X-CSRFToken"
DASH_DATA_PATHS = frozenset(
    {"/_dash-layout", "/_dash-dependencies", "/_dash-update-component", "/_reload-hash"}
)
PUBLIC_PATHS = frozenset({"/login", "/register", "/logout", "/_favicon.ico"})
COMPONENT_SUITES = "/_dash-component-suites/"
PUBLIC_PREFIXES = ("/assets/", COMPONENT_SUITES)
ADMIN_ID_PREFIX = "admin-"
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def resolve_secret_key(settings: Settings) -> str:
    """``MUR_SECRET_KEY``; in development an unset key becomes a random one (sessions end at restart).

    Outside development an unset key is an error, and a placeholder or short key is refused everywhere.
    """
    key = settings.dashboard.secret_key
    if not key:
        if settings.general.env == "development":
            logger.warning(
                "MUR_SECRET_KEY is not set: using a random key, sessions end when the dashboard stops"
            )
            return secrets.token_urlsafe(32)
        raise ConfigError(
            f"MUR_SECRET_KEY must be set when MUR_ENV={settings.general.env} "
            "(generate one: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if key.strip().lower() in PLACEHOLDER_SECRETS or len(key) < MIN_SECRET_KEY_LENGTH:
        raise ConfigError(
            f"MUR_SECRET_KEY is a placeholder or shorter than {MIN_SECRET_KEY_LENGTH} characters; "
            "set a real secret (python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return key


def _wants_json() -> bool:
    return request.path in DASH_DATA_PATHS or request.path.startswith(COMPONENT_SUITES)


def _error(status: int, title: str, message: str) -> tuple[Any, int]:
    """A JSON error for Dash's data endpoints, an HTML page otherwise."""
    if _wants_json():
        return jsonify({"error": message}), status
    return render_template("error.html", status=status, title=title, message=message), status


def _touches_admin_components() -> bool:
    """True if a Dash callback request targets admin-only components (their ids start with ``admin-``)."""
    body = request.get_json(silent=True)
    return isinstance(body, dict) and ADMIN_ID_PREFIX in str(body.get("output", ""))


def _guard() -> ResponseReturnValue | None:
    """Server-side access control for every request (see the module docstring)."""
    path = request.path
    if path.startswith(COMPONENT_SUITES) and path.count("/") < 3:
        return _error(404, "Not found", "not found")  # no package/file: Dash would answer with its page
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
        return None
    known = path == "/" or path in auth.PAGES or path in DASH_DATA_PATHS
    if not known:
        return _error(404, "Not found", "There is no such page.")
    if not current_user.is_authenticated:
        if path in DASH_DATA_PATHS:
            return _error(401, "Login required", "login required")
        target = url_for("auth.login", next=path) if path in auth.PAGES else url_for("auth.login")
        return redirect(target)
    if path == "/":
        return redirect("/forecast")
    admin_only = path == "/admin" or (path == "/_dash-update-component" and _touches_admin_components())
    if admin_only and not current_user.account.is_admin:
        return _error(403, "Forbidden", FORBIDDEN_TEXT)
    return None


def _after(response: Response) -> Response:
    """Security headers on every answer; a fresh CSRF cookie for Dash's callbacks when logged in."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    page_or_data = request.path in auth.PAGES or request.path in DASH_DATA_PATHS
    if page_or_data and response.status_code < 400 and current_user.is_authenticated:
        response.set_cookie(
            CSRF_COOKIE,
            generate_csrf(),
            secure=current_app.config["SESSION_COOKIE_SECURE"],
            httponly=False,  # Dash's renderer reads it to send the X-CSRFToken header
            samesite="Strict",
            path="/",
        )
    if page_or_data:
        response.headers["Cache-Control"] = "no-store"
    return response


def _csrf_failed(error: CSRFError) -> ResponseReturnValue:
    advice = "Reload the page." if _wants_json() else "Go back and try again."
    return _error(400, "Form expired", f"{error.description} {advice}")


def _no_such_component(error: DependencyException) -> ResponseReturnValue:
    """A path under ``/_dash-component-suites/`` that names no registered file: 404, one short log line."""
    logger.info("404 %.120r: no such component file", request.path)
    return _error(404, "Not found", "not found")


def _database_failed(error: DatabaseError) -> ResponseReturnValue:
    """503 with a generic message (the details, host and database names included, go to the log)."""
    logger.error("database error on %s: %s", request.path, error)
    return _error(503, "Service unavailable", "The database is unavailable right now; try again shortly.")


def _hashing_busy(error: HashingBusyError) -> ResponseReturnValue:
    """503 at once when every password-hashing slot is taken (bounded memory under a login flood)."""
    logger.warning("password hashing busy on %s", request.path)
    body, status = _error(503, "Busy", "Too many logins at once right now; try again in a moment.")
    return body, status, {"Retry-After": "1"}


def _configure_server(server: Flask, settings: Settings, secret_key: str) -> None:
    server.config.update(
        SECRET_KEY=secret_key,
        SESSION_COOKIE_NAME="mur_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=settings.general.env == "production",  # production runs behind TLS
        PERMANENT_SESSION_LIFETIME=auth.SESSION_LIFETIME,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Strict",
        REMEMBER_COOKIE_SECURE=settings.general.env == "production",
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session (12 h idle at most)
        WTF_CSRF_HEADERS=[CSRF_HEADER],
        MAX_CONTENT_LENGTH=1024 * 1024,
    )
    if settings.dashboard.trusted_proxy_hops:
        # Only then are X-Forwarded-For/-Proto believed: the client IP (rate limits) and the scheme come from
        # the last `hops` proxies' headers. Without a proxy anyone could send them.
        hops = settings.dashboard.trusted_proxy_hops
        server.wsgi_app = ProxyFix(server.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]


def create_app(settings: Settings, *, db: Database | None = None) -> Dash:
    """Build the dashboard: Flask server (accounts, guard, CSRF) and the Dash pages on it.

    Nothing connects here: the database pool, the Serve API and Airflow are used on the first request.
    ``db`` replaces the pool built from ``settings`` (tests).
    """
    from dash_app import layout
    from dash_app.pages import admin, api, forecast, monitoring

    secret_key = resolve_secret_key(settings)
    server = Flask(__name__, template_folder=str(PACKAGE_DIR / "templates"), static_folder=None)
    _configure_server(server, settings, secret_key)
    context = DashboardContext(
        settings=settings,
        db=db or Database(settings, maxconn=8),
        serve=ServeClient(settings.serving.url),
        airflow=AirflowClient.from_settings(settings),
        secret_key=secret_key,
        hashing=HashingGate(settings.dashboard.hashing_concurrency),
    )
    server.extensions[EXTENSION_KEY] = context
    auth.init_login(server)
    server.before_request(_guard)  # first hook: access control answers before the CSRF check and Dash's hooks
    CSRFProtect(server)
    server.register_blueprint(auth.bp)
    server.after_request(_after)
    server.register_error_handler(CSRFError, _csrf_failed)
    server.register_error_handler(DependencyException, _no_such_component)
    server.register_error_handler(DatabaseError, _database_failed)
    server.register_error_handler(HashingBusyError, _hashing_busy)

    app = Dash(
        __name__,
        server=server,  # type: ignore[arg-type]  # Dash's stub says bool|callable; a Flask app is documented
        use_pages=False,
        assets_folder=str(PACKAGE_DIR / "assets"),
        title="Make Us Rich",
        update_title=None,  # type: ignore[arg-type]  # None disables the "Updating..." title (documented)
        suppress_callback_exceptions=True,
        serve_locally=True,
        csrf_token_name=CSRF_COOKIE,
        csrf_header_name=CSRF_HEADER,
    )
    app.layout = layout.shell()
    layout.register_callbacks(app)
    forecast.register_callbacks(app)
    api.register_callbacks(app)
    monitoring.register_callbacks(app)
    admin.register_callbacks(app)
    return app
