"""The HTTP API as a FastAPI app over an :class:`~serve_app.service.ApiService` (no Ray here).

``create_api(service)`` is what the Serve ingress serves (:mod:`serve_app.ingress`) and what the in-process
tests call. Every ``/v1`` call needs ``Authorization: Bearer <token>`` (``/metrics``, the operators' Prometheus
scrape, needs none: docs/metrics.md); errors are JSON:
``{"error": code, "message": text, ...}``, never plain text.

A pure ASGI guard (:class:`RequestGuard`) sits around the routes: it answers 413 for a body over
:data:`MAX_BODY_BYTES` (from ``Content-Length``, or counted while a chunked body streams in), authenticates a
``POST`` before its body is read, and turns any exception into a JSON 500 (Serve would send plain text).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mur.data.synthetic import is_synthetic
from mur.db import TokenOwner
from mur.errors import MurError
from mur.serving.contract import MAX_CANDLES, CandlesIn, ForecastOut, ModelsOut, misfit
from mur.serving.http import error_body, http_error
from serve_app.metrics import CONTENT_TYPE, AnswerCounts, ApiMetrics, RequestMeters, route_template
from serve_app.records import ErrorOut, IsoTime, PairPath, add_record_routes, forecast_as_of
from serve_app.service import ApiService

log = logging.getLogger("ray.serve")
MAX_BODY_BYTES = 256 * 1024
"""The largest request body accepted (413 above): :data:`~mur.serving.contract.MAX_CANDLES` candles fit."""
OWNER_STATE = "mur_owner"
DOCS_ASSETS = "/docs-assets"
"""Where the API serves the Swagger UI and ReDoc files of /docs and /redoc (the ``fastapi-offline`` package)."""

TITLE = "Make Us Rich forecasting API"
DESCRIPTION = (
    "Next-hour close forecasts per crypto pair from the registry's champion models. "
    "Send `Authorization: Bearer <token>`; each forecast uses one unit of your monthly quota."
)

_bearer = HTTPBearer(auto_error=False, description="an API token from `mur tokens create USER`")


ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (401, 404, 422, 429, 503)}
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    400: {"model": ErrorOut, "description": "a body that cannot be read as JSON"},
    413: {"model": ErrorOut, "description": f"a body over {MAX_BODY_BYTES} bytes"},
}
HTTP_ERROR_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    """422 naming the first bad field (:func:`~mur.serving.contract.misfit`); one inside ``candles[i]`` is
    ``invalid_candles`` like the checks the schema cannot express (count, spacing, high/low)."""
    assert isinstance(exc, RequestValidationError)
    message = misfit(exc.errors())
    code = "invalid_candles" if message.startswith("candles.") else "invalid_request"
    return JSONResponse(error_body(code, message), status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's 400/404/405 as JSON, keeping their headers; a 405's ``Allow`` lists the methods of every
    route on the path (Starlette names only the first route's)."""
    assert isinstance(exc, StarletteHTTPException)
    code = HTTP_ERROR_CODES.get(exc.status_code, "http_error")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        methods = {
            m
            for r in request.app.router.routes
            if r.matches(request.scope)[0] != Match.NONE
            for m in getattr(r, "methods", None) or ()
        }
        if methods:
            headers["Allow"] = ", ".join(sorted(methods))
    return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=headers)


def _error_response(exc: Exception) -> JSONResponse:
    """A JSON answer for any exception: expected errors with their status, anything else a logged 500."""
    if not isinstance(exc, MurError):
        log.error("request failed", exc_info=exc)
        exc = MurError(f"internal error ({type(exc).__name__})")  # http_error: a 500 internal_error
    status, body, headers = http_error(exc)
    return JSONResponse(body, status_code=status, headers=headers)


def _too_large() -> JSONResponse:
    message = f"request body over {MAX_BODY_BYTES} bytes (at most {MAX_CANDLES} candles per request)"
    return JSONResponse(error_body("payload_too_large", message), status_code=413)


class RequestGuard:
    """Pure ASGI middleware in front of the routes (inside Starlette's error middleware).

    1. A ``Content-Length`` over :data:`MAX_BODY_BYTES` is a 413 before anything is read.
    2. A request for a ``POST`` route is authenticated before its body is read (the owner is kept in the
       request state for the route); a bad token is a 401 for the price of a header.
    3. The body is read here, counted, and refused with a 413 as soon as it passes the limit (a chunked body
       has no ``Content-Length``), then replayed to the routes.
    4. Any exception that escapes a route becomes a JSON answer (a 500 unless it is a MurError).
    5. Every request, its 413, 401 and 500 answers too, is counted in ``meters``: by route template, method and
       status, and its latency (:mod:`serve_app.metrics`).
    """

    def __init__(
        self, app: ASGIApp, *, service: ApiService, meters: RequestMeters, routes: Sequence[BaseRoute]
    ) -> None:
        self.app = app
        self.service = service
        self.meters = meters
        self.routes = routes  # the router's list: routes added after the middleware count too

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route, full = route_template(self.routes, scope)
        status = 0
        started = time.perf_counter()

        async def send_tracked(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            guarded = await self._guard(scope, receive, authenticate=full and scope["method"] == "POST")
            if isinstance(guarded, JSONResponse):
                await guarded(scope, receive, send_tracked)
            else:
                await self.app(scope, guarded, send_tracked)
        except Exception as exc:
            if status:  # too late for an answer of our own: the client sees a cut response
                log.error("request failed after its answer started", exc_info=exc)
                return
            await _error_response(exc)(scope, receive, send_tracked)
        finally:
            self.meters.observe(route, scope["method"], status, time.perf_counter() - started)

    async def _guard(self, scope: Scope, receive: Receive, *, authenticate: bool) -> JSONResponse | Receive:
        """An early answer, or the ``receive`` that replays the (bounded) body to the routes."""
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                return JSONResponse(error_body("bad_request", "invalid Content-Length"), status_code=400)
            if int(length) > MAX_BODY_BYTES:
                return _too_large()
        if authenticate:
            owner = await self.service.authenticate(headers.get("authorization"))  # a 401 raises
            scope.setdefault("state", {})[OWNER_STATE] = owner
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see that
                return _replay_then(message, receive)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return _too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return _replay_then({"type": "http.request", "body": b"".join(chunks), "more_body": False}, receive)


def _replay_then(first: Message, receive: Receive) -> Receive:
    """A ``receive`` that returns ``first`` once, then defers to ``receive`` (e.g. for the disconnect)."""
    pending = [first]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


def create_api(service: ApiService, *, metrics: ApiMetrics | None = None) -> FastAPI:
    """The FastAPI app: probes, ``/metrics``, ``/v1`` routes and JSON error handlers, each route handing off to
    ``service``. ``metrics``: this replica's Ray metrics and the scrape (:mod:`serve_app.metrics`)."""
    # FastAPIOffline: /docs and /redoc load Swagger UI and ReDoc from the app itself (DOCS_ASSETS), not a CDN
    api = FastAPIOffline(
        title=TITLE, version="1.0.0", description=DESCRIPTION, static_url=DOCS_ASSETS, redoc_url=None
    )
    _add_redoc(api)
    api.add_exception_handler(RequestValidationError, _validation_error)
    api.add_exception_handler(StarletteHTTPException, _http_error)
    meters = metrics or ApiMetrics()
    service.answer_counts = AnswerCounts(service.answer_counts, meters.meters)
    api.add_middleware(RequestGuard, service=service, meters=meters.meters, routes=api.router.routes)

    async def _owner(
        request: Request, bearer: HTTPAuthorizationCredentials | None = Depends(_bearer)
    ) -> TokenOwner:
        """The caller: authenticated by :class:`RequestGuard` already (POST routes), or here by the token of
        FastAPI's bearer scheme (shows a lock in /docs)."""
        owner = request.scope.get("state", {}).get(OWNER_STATE)
        authorization = f"Bearer {bearer.credentials}" if bearer else None
        return owner if isinstance(owner, TokenOwner) else await service.authenticate(authorization)

    @api.get("/healthz", tags=["probes"])
    async def healthz() -> dict[str, str]:
        """Liveness: the ingress answers."""
        return {"status": "ok"}

    @api.get("/readyz", tags=["probes"])
    async def readyz() -> JSONResponse:
        """Readiness: ``ready`` (every pair loaded, registry reachable), ``degraded`` (serving, but the
        registry, a reload or market data has a problem) or ``not_ready`` (503: nothing to serve)."""
        body = await service.readiness()
        return JSONResponse(body, status_code=503 if body["status"] == "not_ready" else 200)

    @api.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        """Prometheus scrape, no token (reachable from the monitoring network only; docs/metrics.md)."""
        return Response(await meters.exposition(service), media_type=CONTENT_TYPE)

    @api.get("/v1/pairs", tags=["v1"], responses=ERRORS)
    async def pairs(owner: TokenOwner = Depends(_owner)) -> dict[str, list[Any]]:
        """The pairs this API forecasts; ``details`` marks synthetic ones (scale tests, not market data)."""
        served = service.pairs()
        return {"pairs": served, "details": [{"pair": p, "synthetic": is_synthetic(p)} for p in served]}

    @api.get("/v1/models", tags=["v1"], responses=ERRORS)
    async def models(owner: TokenOwner = Depends(_owner)) -> ModelsOut:
        """The model served for each pair: version, alias, trained window and test metrics (incl. skill)."""
        return ModelsOut.model_validate({"models": await service.models()})

    @api.get("/v1/forecast/{pair}", tags=["v1"], response_model=ForecastOut, responses=ERRORS)
    async def forecast(
        pair: PairPath,
        as_of: Annotated[
            IsoTime | None,
            Query(description="a past market time (ISO-8601; no zone: UTC): what was served then"),
        ] = None,
        owner: TokenOwner = Depends(_owner),
    ) -> JSONResponse:
        """Next-hour close forecast from the latest closed candles (uses one unit of quota). With ``as_of``:
        the forecast served at that market time, read back from the track record (every horizon as served,
        its model version, ``source: track_record``, ``as_of`` = when it was served; uses no quota), or a 404
        when none was served from that hour's candle."""
        if as_of is not None:
            return JSONResponse(await forecast_as_of(service, pair, as_of))
        body, headers = await service.forecast_latest(owner, pair)
        return JSONResponse(body, headers=headers)

    async def _pair_with_model(pair: PairPath) -> str:
        """The path's pair, refused before the body is read when no model serves it: a 404 for a pair the
        API does not know (its candles never go through another pair's model), a 503 ``no_champion`` for a
        configured pair whose champion is not there yet."""
        service.pair_forecaster(pair)
        return pair

    @api.post("/v1/forecast/{pair}", tags=["v1"], response_model=ForecastOut, responses=BODY_ERRORS)
    async def forecast_candles(
        payload: CandlesIn,
        pair: str = Depends(_pair_with_model),
        owner: TokenOwner = Depends(_owner),
    ) -> JSONResponse:
        """Next-hour close forecast for your own candles of ``pair``, by ``pair``'s own champion: exactly the
        model's window (``seq_len`` in /v1/models; the schema says the count), hourly, ascending; at most
        256 KiB. A pair nobody configured or added is a 404 (``unknown_pair``), one of the catalogue without a
        champion yet a 503 (``no_champion``), whatever the body: never another pair's model. Failed calls use
        no quota."""
        rows = [c.model_dump() for c in payload.candles]
        body, headers = await service.forecast_candles(owner, pair, rows)
        return JSONResponse(body, headers=headers)

    @api.post("/v1/admin/reload", tags=["admin"], responses={**BODY_ERRORS, 403: {"model": ErrorOut}})
    async def reload(
        wait_s: Annotated[float, Query(ge=0, le=120)] = 30.0, owner: TokenOwner = Depends(_owner)
    ) -> dict[str, Any]:
        """Re-read the registry now; wait (up to ``wait_s``) until every pair serves its champion."""
        return await service.reload(owner, wait_s)

    add_record_routes(api, service, _owner)
    _publish_candle_count(api, service.window)
    return api


REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
"""The one URL outside the app that ReDoc's bundle loads (the "API docs by Redocly" logo): served locally."""


def _add_redoc(api: FastAPI) -> None:
    """``/redoc`` over the bundled ReDoc script, its logo pointed at the bundled icon: nothing leaves the API."""
    from fastapi.openapi.docs import get_redoc_html
    from fastapi.responses import HTMLResponse
    from fastapi_offline import core

    script: list[bytes] = []

    @api.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{api.openapi_url}",
            title=f"{api.title} - ReDoc",
            redoc_js_url=f"{root}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )

    @api.get("/redoc.standalone.js", include_in_schema=False)
    async def redoc_script() -> Response:
        if not script:  # read once, on first use
            text = (core._STATIC_PATH / "redoc.standalone.js").read_text(encoding="utf-8")
            script.append(text.replace(REDOC_LOGO, f"{DOCS_ASSETS}/favicon.png").encode())
        return Response(
            script[0], media_type="text/javascript", headers={"Cache-Control": "public, max-age=3600"}
        )


def _publish_candle_count(api: FastAPI, window: int) -> None:
    """Make the OpenAPI schema say the one candle count the server accepts (``minItems == maxItems ==
    window``) instead of the parser's 1..MAX_CANDLES bounds: the schema is built now, with every route, and
    FastAPI keeps it (``api.openapi_schema``) for /openapi.json and the docs."""
    candles = api.openapi()["components"]["schemas"]["CandlesIn"]["properties"]["candles"]
    candles.update(
        minItems=window,
        maxItems=window,
        description=f"exactly {window} hourly candles (the model's window), oldest first",
    )
