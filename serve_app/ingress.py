"""The HTTP API (FastAPI under ``@serve.ingress``): auth, quota, routing to the per-pair Forecasters.

Every ``/v1`` call needs ``Authorization: Bearer <token>``; each forecast consumes one unit of the user's
monthly quota in one SQL statement, after the forecast succeeded (failed calls are not charged). The
database pool lives in this replica; its blocking calls run on a small thread pool. Errors are JSON:
``{"error": code, "message": text, ...}``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from mur.db import record_forecast
from mur.errors import ModelNotLoadedError, MurError, UnknownPairError
from mur.serving import (
    authenticate,
    charge,
    error_body,
    http_error,
    normalize_pair,
    quota_headers,
    require_admin,
)
from serve_app.args import AppArgs

T = TypeVar("T")
log = logging.getLogger("ray.serve")
API_VERSION = "v1"
RECORDED_KEYS_MAX = 10_000
DB_THREADS = 8
CALL_TIMEOUT_S = 30.0
STATUS_TIMEOUT_S = 5.0

api = FastAPI(
    title="Make Us Rich forecasting API",
    version="1.0.0",
    description=(
        "Next-hour close forecasts per crypto pair from the registry's champion models. "
        "Send `Authorization: Bearer <token>`; each forecast uses one unit of your monthly quota."
    ),
)


_bearer = HTTPBearer(auto_error=False, description="an API token from `mur tokens create USER`")


async def _authorization(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> str | None:
    """The Authorization header's value, rebuilt from FastAPI's bearer scheme (shows a lock in /docs)."""
    return f"Bearer {credentials.credentials}" if credentials else None


class Candle(BaseModel):
    """One hourly candle; ``timestamp`` is the open time (epoch milliseconds or ISO-8601, UTC)."""

    timestamp: int | str = Field(examples=[1735689600000, "2025-01-01T00:00:00Z"])
    open: float
    high: float
    low: float
    close: float
    volume: float | None = None


class CandlesIn(BaseModel):
    """Exactly ``seq_len`` candles (the model's window), oldest first, one hour apart."""

    candles: list[Candle]


class ForecastOut(BaseModel):
    """A next-hour close forecast."""

    pair: str
    forecast: float
    last_close: float
    change_pct: float
    candle_time: str = Field(description="open time of the last closed candle used")
    target_time: str = Field(description="open time of the candle whose close is forecast")
    model_version: int


class ErrorOut(BaseModel):
    """Every error answer."""

    error: str
    message: str


ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (401, 404, 422, 429, 503)}


@api.exception_handler(MurError)
async def _mur_error(_: Request, exc: MurError) -> JSONResponse:
    status, body, headers = http_error(exc)
    return JSONResponse(body, status_code=status, headers=headers)


@api.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    message = (
        f"{where}: {first.get('msg', 'invalid request')}" if where else first.get("msg", "invalid request")
    )
    return JSONResponse(error_body("invalid_request", message), status_code=422)


@api.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code)


@serve.deployment(name="api", max_ongoing_requests=512, ray_actor_options={"num_cpus": 0.1})
@serve.ingress(api)
class ApiIngress:
    """Routes, auth and quota; forecasts are delegated to the pair's Forecaster deployment."""

    def __init__(
        self, forecasters: dict[str, DeploymentHandle], registry: DeploymentHandle, args: dict[str, Any]
    ) -> None:
        from mur.db import Database

        self.settings = AppArgs(**args).app_settings()
        self.forecasters = dict(forecasters)
        self.registry = registry
        # minconn == maxconn: psycopg2's pool closes every connection above minconn when it is returned,
        # which would mean a new PostgreSQL connection for most requests under load
        self.db = Database(self.settings, minconn=DB_THREADS, maxconn=DB_THREADS)
        self._pool = ThreadPoolExecutor(DB_THREADS, thread_name_prefix="mur-db")
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        self._recorded: set[tuple[str, int, str]] = set()

    async def _blocking(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(func, *args))

    def _handle(self, pair: str) -> tuple[str, DeploymentHandle]:
        name = normalize_pair(pair)
        handle = self.forecasters.get(name)
        if handle is None:
            raise UnknownPairError(
                f"unknown pair {pair!r}; served pairs: {', '.join(sorted(self.forecasters))}"
            )
        return name, handle

    def _latest(self, name: str, handle: DeploymentHandle) -> asyncio.Future[Any]:
        """The pair's latest-candles forecast, single-flight: GETs arriving while a call for the same pair is
        in flight share its answer (same cached candles, same model: the same forecast), so under load the
        Forecaster hop is paid once per burst instead of once per request."""
        future = self._inflight.get(name)
        if future is None:

            async def call() -> Any:
                return await handle.forecast_latest.remote()

            future = asyncio.ensure_future(call())
            self._inflight[name] = future
            future.add_done_callback(lambda _: self._inflight.pop(name, None))
        return future

    def _record(self, body: dict[str, Any]) -> None:
        """Keep a served market forecast for the track record (the dashboard's "how past forecasts fared"):
        one insert per pair, model version and target hour, off the request path; a failed insert is
        logged and retried on a later request."""
        key = (body["pair"], int(body["model_version"]), body["target_time"])
        if key in self._recorded:
            return
        if len(self._recorded) >= RECORDED_KEYS_MAX:
            self._recorded.clear()
        self._recorded.add(key)

        def done(future: Future[Any]) -> None:
            if (exc := future.exception()) is not None:
                self._recorded.discard(key)
                log.warning("could not record the %s forecast for %s: %s", key[0], key[2], exc)

        self._pool.submit(
            record_forecast,
            self.db,
            pair=body["pair"],
            model_version=str(body["model_version"]),
            target_time=datetime.fromisoformat(body["target_time"]),
            predicted=float(body["forecast"]),
            last_close=float(body["last_close"]),
        ).add_done_callback(done)

    async def _forecast(
        self,
        authorization: str | None,
        pair: str,
        call: Callable[[str, DeploymentHandle], Any],
        record: bool = False,
    ) -> JSONResponse:
        owner = await self._blocking(authenticate, self.db, authorization)
        name, handle = self._handle(pair)
        try:
            result = await asyncio.wait_for(asyncio.shield(call(name, handle)), timeout=CALL_TIMEOUT_S)
        except TimeoutError:
            raise ModelNotLoadedError(f"the {name} model did not answer within {CALL_TIMEOUT_S:g}s") from None
        if not result["ok"]:
            body = {k: v for k, v in result.items() if k not in ("ok", "status")}
            return JSONResponse(body, status_code=result["status"])
        quota = await self._blocking(charge, self.db, owner)
        if record:
            self._record(result["body"])
        return JSONResponse(result["body"], headers=quota_headers(quota))

    # --- probes --------------------------------------------------------------------------------
    @api.get("/healthz", tags=["probes"])
    async def healthz(self) -> dict[str, str]:
        """Liveness: the ingress answers."""
        return {"status": "ok"}

    @api.get("/readyz", tags=["probes"])
    async def readyz(self) -> JSONResponse:
        """Readiness: ``ready`` (every pair loaded, registry reachable), ``degraded`` (serving, but the
        registry, a reload or market data has a problem) or ``not_ready`` (503: nothing to serve)."""
        registry, statuses = await self._statuses()
        pairs: dict[str, Any] = {}
        problems: list[str] = []
        for pair, st in statuses.items():
            if isinstance(st, BaseException):
                pairs[pair] = {"loaded": False, "error": f"{type(st).__name__}: {st}"}
                problems.append(f"{pair}: no answer")
                continue
            target = (registry or {}).get("targets", {}).get(pair, {}).get("version")
            pairs[pair] = {
                "loaded": st["loaded"],
                "version": st["version"],
                "champion_version": target,
                "candle_time": st["market"].get("candle_time"),
            }
            if not st["loaded"]:
                problems.append(f"{pair}: model not loaded ({st['load_error'] or 'loading'})")
            elif st["load_error"]:
                problems.append(f"{pair}: {st['load_error']}")
            if st["market"].get("error"):
                problems.append(f"{pair}: market data: {st['market']['error']}")
        if isinstance(registry, BaseException):
            problems.append(f"registry watcher: {type(registry).__name__}")
        elif registry.get("registry_ok") is False:
            problems.append(f"registry: {registry.get('error')}")
        serving = any(p.get("loaded") for p in pairs.values())
        status = "ready" if serving and not problems else "degraded" if serving else "not_ready"
        body = {
            "status": status,
            "problems": problems,
            "pairs": pairs,
            "registry": None
            if isinstance(registry, BaseException)
            else {k: registry.get(k) for k in ("registry_ok", "error", "checked_at", "pending_pairs")},
        }
        return JSONResponse(body, status_code=200 if serving else 503)

    async def _statuses(self) -> tuple[Any, dict[str, Any]]:
        async def call(response: Any) -> Any:
            try:
                return await asyncio.wait_for(response, timeout=STATUS_TIMEOUT_S)
            except Exception as exc:  # unreachable replica: reported, not raised
                return exc

        pairs = sorted(self.forecasters)
        results = await asyncio.gather(
            call(self.registry.snapshot.remote()),
            *(call(self.forecasters[p].status.remote()) for p in pairs),
        )
        return results[0], dict(zip(pairs, results[1:], strict=True))

    # --- v1 ------------------------------------------------------------------------------------
    @api.get("/v1/pairs", tags=["v1"], responses=ERRORS)
    async def pairs(self, authorization: str | None = Depends(_authorization)) -> dict[str, list[str]]:
        """The pairs this API forecasts."""
        await self._blocking(authenticate, self.db, authorization)
        return {"pairs": sorted(self.forecasters)}

    @api.get("/v1/models", tags=["v1"], responses=ERRORS)
    async def models(self, authorization: str | None = Depends(_authorization)) -> dict[str, Any]:
        """The model served for each pair: version, alias, trained window and test metrics (incl. skill)."""
        await self._blocking(authenticate, self.db, authorization)
        _, statuses = await self._statuses()
        models = []
        for pair, st in statuses.items():
            if isinstance(st, BaseException) or not st["loaded"]:
                models.append({"pair": pair, "version": None, "loaded": False})
            else:
                models.append({**st["model"], "loaded": True})
        return {"models": models}

    @api.get("/v1/forecast/{pair}", tags=["v1"], response_model=ForecastOut, responses=ERRORS)
    async def forecast(self, pair: str, authorization: str | None = Depends(_authorization)) -> JSONResponse:
        """Next-hour close forecast from the latest closed candles (uses one unit of quota)."""
        return await self._forecast(authorization, pair, self._latest, record=True)

    @api.post("/v1/forecast/{pair}", tags=["v1"], response_model=ForecastOut, responses=ERRORS)
    async def forecast_candles(
        self, pair: str, payload: CandlesIn, authorization: str | None = Depends(_authorization)
    ) -> JSONResponse:
        """Next-hour close forecast for your own candles (exactly seq_len, hourly, ascending)."""
        rows = [c.model_dump() for c in payload.candles]
        return await self._forecast(authorization, pair, lambda _, h: h.forecast_candles.remote(rows))

    @api.post("/v1/admin/reload", tags=["admin"], responses={**ERRORS, 403: {"model": ErrorOut}})
    async def reload(
        self, wait_s: float = 30.0, authorization: str | None = Depends(_authorization)
    ) -> dict[str, Any]:
        """Re-read the registry now; wait (up to ``wait_s``) until every pair serves its champion."""
        owner = await self._blocking(authenticate, self.db, authorization)
        require_admin(owner)
        snapshot = await self.registry.refresh.remote()
        targets = {p: s["version"] for p, s in snapshot["targets"].items() if p in self.forecasters}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, min(wait_s, 120.0))
        while True:
            _, statuses = await self._statuses()
            serving = {
                p: (None if isinstance(st, BaseException) else st["version"]) for p, st in statuses.items()
            }
            done = all(serving.get(p) == v for p, v in targets.items())
            if done or loop.time() >= deadline:
                break
            await asyncio.sleep(0.25)
        return {
            "reloaded": done,
            "champions": targets,
            "serving": serving,
            "registry_ok": snapshot["registry_ok"],
            "error": snapshot["error"],
            "pending_pairs": snapshot["pending_pairs"],
        }

    def __del__(self) -> None:
        db = getattr(self, "db", None)
        if db is not None:
            db.close()
