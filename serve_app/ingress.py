"""ApiIngress: the Serve deployment that serves :func:`serve_app.api.create_api` over HTTP.

The FastAPI app is built on the replica, after the constructor (``@serve.ingress()`` with
``__serve_build_asgi_app__``), so its routes close over this replica's :class:`~serve_app.service.ApiService`:
a database pool and adapters over the DeploymentHandles of the pair Forecasters and the registry watcher.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.exceptions import RayError
from ray.serve.exceptions import RayServeException
from ray.serve.handle import DeploymentHandle

from mur.errors import ServiceError
from serve_app.api import create_api
from serve_app.args import AppArgs
from serve_app.service import DB_THREADS, DB_TIMEOUT_S, ApiService

log = logging.getLogger("ray.serve")


class ForecasterHandle:
    """A Forecaster deployment seen through its handle (:class:`~serve_app.service.PairForecaster`).

    A Ray error on the way (a replica that died, none available, back-pressure) is a
    :class:`~mur.errors.ServiceError` (503 JSON); the trace goes to the log.
    """

    def __init__(self, handle: DeploymentHandle, pair: str = "") -> None:
        self.handle = handle
        self.pair = pair

    async def _call(self, call: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        try:
            return await call
        except (RayError, RayServeException) as exc:
            log.warning("the %s forecaster failed: %s", self.pair, exc, exc_info=exc)
            raise ServiceError(f"the {self.pair} forecaster is unavailable; try again") from exc

    async def forecast_latest(self) -> dict[str, Any]:
        return await self._call(self.handle.forecast_latest.remote())

    async def forecast_candles(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return await self._call(self.handle.forecast_candles.remote(rows))

    async def status(self) -> dict[str, Any]:
        return await self.handle.status.remote()


class RegistryHandle:
    """The RegistryWatcher deployment seen through its handle (:class:`~serve_app.service.RegistryView`)."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self.handle = handle

    async def snapshot(self) -> dict[str, Any]:
        return await self.handle.snapshot.remote()

    async def refresh(self) -> dict[str, Any]:
        return await self.handle.refresh.remote()


@serve.deployment(name="api", max_ongoing_requests=512, ray_actor_options={"num_cpus": 0.1})
@serve.ingress()
class ApiIngress:
    """Routes, auth and quota (:class:`~serve_app.service.ApiService`) on one replica."""

    def __init__(
        self, forecasters: dict[str, DeploymentHandle], registry: DeploymentHandle, args: dict[str, Any]
    ) -> None:
        from mur.db import Database

        settings = AppArgs(**args).app_settings()
        # minconn == maxconn: every pooled connection stays open (a new PostgreSQL connection costs more
        # than the token lookup and quota statement it would serve)
        # A stalled server: a request gives up after DB_TIMEOUT_S (ApiService), a thread waiting for a
        # pooled connection after as long.
        self.service = ApiService(
            db=Database(settings, minconn=DB_THREADS, maxconn=DB_THREADS, pool_timeout_s=DB_TIMEOUT_S),
            forecasters={pair: ForecasterHandle(h, pair) for pair, h in forecasters.items()},
            registry=RegistryHandle(registry),
            configured_pairs=settings.pairs,
        )

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Called by Serve on the replica after ``__init__``: the app this deployment serves."""
        return create_api(self.service)

    def __del__(self) -> None:
        service = getattr(self, "service", None)
        if service is not None:
            service.close(wait=False)
