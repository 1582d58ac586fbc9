"""Running the dashboard: a threaded local server (``mur dash``) and a WSGI factory for production servers."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mur.errors import ConfigError, DatabaseError

if TYPE_CHECKING:
    from flask import Flask

    from mur.settings import Settings

logger = logging.getLogger(__name__)


def check_database(settings: Settings) -> None:
    """Fail early, with the fix, when the database is missing or has pending migrations."""
    from mur.db import migration_status

    status = migration_status(settings)
    if status.pending:
        raise DatabaseError(
            f"database {settings.pg_database} has {len(status.pending)} pending migration(s) "
            f"({', '.join(status.pending)}); run `mur db migrate` first"
        )


def serve(
    settings: Settings, *, host: str | None = None, port: int | None = None, debug: bool = False
) -> None:
    """Serve the dashboard on ``host:port`` (default ``MUR_DASH_HOST``/``MUR_DASH_PORT``) until interrupted.

    This is werkzeug's threaded server, enough for a local stack; behind a reverse proxy with TLS, run
    ``gunicorn 'dash_app.server:wsgi_app()'`` instead.
    """
    from werkzeug.serving import run_simple

    from dash_app.app import create_app, resolve_secret_key

    if debug and settings.env == "production":
        raise ConfigError("--debug is refused when MUR_ENV=production (it exposes tracebacks)")
    resolve_secret_key(settings)  # configuration errors first, before touching the database
    check_database(settings)
    app = create_app(settings)
    if debug:
        app.enable_dev_tools(debug=True)
    host = host or settings.dash_host
    port = port or settings.dash_port
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.info("dashboard on http://%s:%d (Serve API %s)", host, port, settings.serve_url)
    run_simple(host, port, app.server, threaded=True, use_reloader=debug, use_debugger=False)


def wsgi_app() -> Flask:
    """WSGI application for production servers (``gunicorn 'dash_app.server:wsgi_app()'``)."""
    from dash_app.app import create_app
    from mur.settings import get_settings

    settings = get_settings()
    check_database(settings)
    return create_app(settings).server
