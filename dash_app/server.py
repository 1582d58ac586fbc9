"""Running the dashboard: waitress with bounded threads and request timeouts (``mur dash``), and a WSGI
factory for other production servers.

Waitress reads each request (headers and body) in its one I/O thread and hands only complete requests to
its :data:`THREADS` worker threads, so a slow or half-sent request never holds a worker. What such a client
does hold, a connection (at most :data:`CONNECTION_LIMIT`), is closed when its request is not complete
:data:`REQUEST_TIMEOUT_S` after its first byte, or after :data:`IDLE_TIMEOUT_S` without a byte
(:class:`DashServer`). ``--debug`` alone uses werkzeug's development server (reloader, dev tools).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

from mur.errors import ConfigError, DatabaseError

if TYPE_CHECKING:
    from flask import Flask

    from mur.settings import Settings

logger = logging.getLogger(__name__)

THREADS = 8  # worker threads: as many as the app's database pool (create_app: maxconn=8)
CONNECTION_LIMIT = 100  # open connections at once; beyond it waitress stops accepting until one closes
REQUEST_TIMEOUT_S = 10.0  # a request (headers and body) must be complete this long after its first byte
IDLE_TIMEOUT_S = 30  # a connection without a byte for this long (idle keep-alive, stalled client) is closed


class _TimedParser(HTTPRequestParser):
    """Waitress's request parser, remembering when the request's first byte came."""

    def __init__(self, adj: Adjustments) -> None:
        super().__init__(adj)
        self.started = time.monotonic()


class _TimedChannel(HTTPChannel):
    parser_class = _TimedParser


class DashServer(TcpWSGIServer):
    """Waitress's TCP server that also closes a connection whose request is still incomplete
    ``request_timeout_s`` after its first byte (a client trickling bytes is not idle, yet holds a slot)."""

    channel_class = _TimedChannel
    request_timeout_s = REQUEST_TIMEOUT_S

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # idle connections: adj.channel_timeout
        cutoff = time.monotonic() - self.request_timeout_s
        for channel in list(self.active_channels.values()):
            request = channel.request
            if not channel.requests and request is not None and not request.completed:
                if request.started < cutoff:
                    logger.info(
                        "closing a connection from %s: request incomplete after %.0f s",
                        channel.addr[0] if channel.addr else "?",
                        self.request_timeout_s,
                    )
                    channel.will_close = True


def make_server(
    app: Any,
    *,
    host: str,
    port: int,
    threads: int = THREADS,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
    idle_timeout_s: int = IDLE_TIMEOUT_S,
) -> DashServer | MultiSocketServer:
    """A started (listening) waitress server for the WSGI ``app``; ``.run()`` serves until interrupted.

    Proxy headers are left to the app (werkzeug's ProxyFix with ``MUR_TRUSTED_PROXY_HOPS``).
    """
    adj = Adjustments(
        host=host,
        port=port,
        threads=threads,
        connection_limit=CONNECTION_LIMIT,
        channel_timeout=idle_timeout_s,
        cleanup_interval=1,  # timeouts are checked every second
        clear_untrusted_proxy_headers=False,
        ident="mur-dash",
    )
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    socket_map: dict[int, Any] = {}
    servers = []
    for sockinfo in adj.listen:
        server = DashServer(app, socket_map, dispatcher=dispatcher, adj=adj, sockinfo=sockinfo)
        server.request_timeout_s = request_timeout_s
        servers.append(server)
    if len(servers) == 1:
        return servers[0]
    listening = [(s.effective_host, s.effective_port) for s in servers]
    return MultiSocketServer(socket_map, adj, listening, dispatcher, log_info=servers[0].log_info)


def check_database(settings: Settings) -> None:
    """Fail early, with the fix, when the database is missing or has pending migrations."""
    from mur.db import migration_status

    status = migration_status(settings)
    if status.pending:
        raise DatabaseError(
            f"database {settings.db.pg_database} has {len(status.pending)} pending migration(s) "
            f"({', '.join(status.pending)}); run `mur db migrate` first"
        )


def serve(
    settings: Settings, *, host: str | None = None, port: int | None = None, debug: bool = False
) -> None:
    """Serve the dashboard on ``host:port`` (default ``MUR_DASH_HOST``/``MUR_DASH_PORT``) until interrupted.

    Waitress with bounded threads and request timeouts (:func:`make_server`); with ``debug``, werkzeug's
    development server with its reloader instead (refused when ``MUR_ENV=production``).
    """
    from dash_app.app import create_app, resolve_secret_key

    if debug and settings.general.env == "production":
        raise ConfigError("--debug is refused when MUR_ENV=production (it exposes tracebacks)")
    resolve_secret_key(settings)  # configuration errors first, before touching the database
    check_database(settings)
    app = create_app(settings)
    if debug:
        app.enable_dev_tools(debug=True)
    host = host or settings.dashboard.dash_host
    port = port or settings.dashboard.dash_port
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.info("dashboard on http://%s:%d (Serve API %s)", host, port, settings.serving.url)
    if debug:
        from werkzeug.serving import run_simple

        run_simple(host, port, app.server, threaded=True, use_reloader=True, use_debugger=False)
        return
    server = make_server(app.server, host=host, port=port)
    logger.info(
        "waitress: %d threads, %d connections, request timeout %.0f s, idle timeout %d s",
        THREADS,
        CONNECTION_LIMIT,
        REQUEST_TIMEOUT_S,
        IDLE_TIMEOUT_S,
    )
    try:
        server.run()
    finally:
        server.close()


def wsgi_app() -> Flask:
    """WSGI application for another WSGI server (``python -m dash_app`` already runs waitress); give that
    server the same bounds: a few threads, and a request/header read timeout."""
    from dash_app.app import create_app
    from mur.settings import get_settings

    settings = get_settings()
    check_database(settings)
    return create_app(settings).server
