"""ApiIngress: the Serve deployment that serves :func:`serve_app.api.create_api` over HTTP.

The FastAPI app is built on the replica, after the constructor (``@serve.ingress()`` with
``__serve_build_asgi_app__``), so its routes close over this replica's :class:`~serve_app.service.ApiService`:
a database pool and adapters over the DeploymentHandles of the Forecaster and the registry watcher. The
:class:`ChampionRouter` follows the watcher and gives each pair's calls the model id of its champion
(``pair@version``, Ray model multiplexing through a handle: Serve does not multiplex on an ingress that runs
its own HTTP server behind HAProxy).

Each replica counts its requests with Ray's metrics API; ``/metrics`` on any replica reads every node's export
and answers the series of all of them (:mod:`serve_app.metrics`, docs/metrics.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.exceptions import RayError, RayTaskError
from ray.serve.exceptions import RayServeException
from ray.serve.handle import DeploymentHandle

from mur.errors import ModelNotLoadedError, MurError, ServiceError
from mur.serving.contract import ForecastOut
from serve_app.api import create_api
from serve_app.args import AppArgs
from serve_app.forecaster import model_id
from serve_app.metrics import ApiMetrics
from serve_app.service import ApiService, request_database

log = logging.getLogger("ray.serve")
SHARED = "*"
"""Key of the multiplexed Forecaster among the ingress's handles (the others are dedicated pairs)."""
FOLLOW_TIMEOUT_S = 30.0
RETRY_S = 3.0
PRELOAD_CONCURRENCY = 8
STARTUP_SYNC_S = 60.0


class ForecasterHandle:
    """One pair of the multiplexed Forecaster (:class:`~serve_app.service.PairForecaster`): each call carries
    the pair's current model id ``pair@version`` from the :class:`ChampionRouter`.

    The Forecaster's own errors (:class:`~mur.errors.MurError`) arrive inside Ray's ``RayTaskError`` and are
    raised as they were raised there; any other Ray error on the way (a replica that died, none available,
    back-pressure) is a :class:`~mur.errors.ServiceError` (503 JSON), its trace in the log.
    """

    def __init__(self, handle: DeploymentHandle, pair: str, router: ChampionRouter) -> None:
        self.handle = handle
        self.pair = pair
        self.router = router

    @property
    def model_key(self) -> str | None:
        """The model id this pair's calls carry now (``pair@version``; None before its first champion loaded):
        the key of its cached answers (:meth:`ApiService._latest`)."""
        return self.router.current.get(self.pair)

    def _target(self) -> DeploymentHandle | None:
        mid = self.model_key
        return None if mid is None else self.handle.options(multiplexed_model_id=mid)

    def _loaded(self) -> DeploymentHandle:
        target = self._target()
        if target is None:
            raise ModelNotLoadedError(f"no model loaded for {self.pair}: {self._reason()}")
        return target

    def _reason(self) -> str:
        return self.router.errors.get(self.pair) or "loading"

    async def _call(self, call: Awaitable[ForecastOut]) -> ForecastOut:
        try:
            return await call
        except (RayError, RayServeException) as exc:
            if isinstance(exc, RayTaskError) and isinstance(exc.cause, MurError):  # the Forecaster's answer
                raise exc.cause from None
            log.warning("the %s forecaster failed: %s", self.pair, exc, exc_info=exc)
            raise ServiceError(f"the {self.pair} forecaster is unavailable; try again") from exc

    async def forecast_latest(self) -> ForecastOut:
        return await self._call(self._loaded().forecast_latest.remote())

    async def forecast_candles(self, rows: Sequence[Mapping[str, Any]]) -> ForecastOut:
        return await self._call(self._loaded().forecast_candles.remote(rows))

    async def shadow_forecasts(self) -> list[ForecastOut]:
        """The latest-candles forecast of each version the pair serves in shadow (never returned to a caller:
        :meth:`ApiService._record_shadows`); a shadow that fails is logged and left out."""
        ids = self.router.shadows.get(self.pair, [])
        calls = [self.handle.options(multiplexed_model_id=mid).forecast_latest.remote() for mid in ids]
        answers = await asyncio.gather(*(self._call(c) for c in calls), return_exceptions=True)
        for mid, answer in zip(ids, answers, strict=True):
            if isinstance(answer, BaseException):
                log.warning("shadow %s gave no forecast: %s", mid, answer)
        return [a for a in answers if isinstance(a, ForecastOut)]

    async def status(self) -> dict[str, Any]:
        target = self._target()
        if target is None:
            return {
                "pair": self.pair,
                "loaded": False,
                "version": None,
                "model": None,
                "load_error": self._reason(),
                "market": {},
            }
        status = await target.status.remote()
        pending = self.router.errors.get(self.pair)
        if pending and status.get("loaded"):  # serving the previous version: the new one did not load
            status = {**status, "load_error": pending}
        return status


class ChampionRouter:
    """Which model id each pair's requests carry, following the registry watcher.

    A new champion is *preloaded* (a ``status`` call with the new id makes a Forecaster replica load it)
    before the pair switches to it, so requests never wait on or fail with a model that cannot be loaded: a
    champion whose file is broken leaves the previous version serving (or, for a pair without one, a 503
    ``model_not_loaded`` with the reason), and is retried every few seconds.
    """

    def __init__(
        self, handles: Mapping[str, DeploymentHandle], registry: DeploymentHandle, service: ApiService
    ) -> None:
        self.handles = dict(handles)
        self.registry = registry
        self.service = service
        self.current: dict[str, str] = {}
        self.shadows: dict[str, list[str]] = {}
        """Each pair's shadow model ids (loaded by the Forecaster on first use, off every caller's path)."""
        self.errors: dict[str, str] = {}
        self._epoch, self._generation = "", -1
        self._limit = asyncio.Semaphore(PRELOAD_CONCURRENCY)

    def handle_for(self, pair: str) -> DeploymentHandle:
        return self.handles.get(pair) or self.handles[SHARED]

    async def follow(self) -> None:
        """Long-poll the watcher forever; sync on every change, retry failed loads every RETRY_S."""
        while True:
            try:
                snapshot = await self.registry.wait_for_change.remote(
                    self._epoch, self._generation, RETRY_S if self.errors else FOLLOW_TIMEOUT_S
                )
                await self.sync(snapshot)
            except Exception as exc:
                log.warning("ingress: following the registry failed (%s); retrying", exc)
                await asyncio.sleep(RETRY_S)

    async def sync(self, snapshot: Mapping[str, Any]) -> None:
        """Serve every pair of the snapshot; switch each to its champion once that is loadable."""
        targets: dict[str, Any] = snapshot.get("targets") or {}
        for pair in targets:
            if pair not in self.service.forecasters:
                self.service.forecasters[pair] = ForecasterHandle(self.handle_for(pair), pair, self)
        for pair, error in (snapshot.get("pair_errors") or {}).items():
            if pair not in self.current:
                self.errors[pair] = error
        self.shadows = {p: [model_id(p, v) for v in t.get("shadows") or []] for p, t in targets.items()}
        wanted = {p: model_id(p, t["version"]) for p, t in targets.items()}
        await asyncio.gather(
            *(self._switch(p, mid) for p, mid in wanted.items() if self.current.get(p) != mid)
        )
        self._epoch, self._generation = snapshot["epoch"], snapshot["generation"]

    async def _switch(self, pair: str, mid: str) -> None:
        async with self._limit:
            try:
                status = await self.handle_for(pair).options(multiplexed_model_id=mid).status.remote()
            except Exception as exc:
                status = {"loaded": False, "load_error": f"{type(exc).__name__}: {exc}"}
        if status.get("loaded"):
            self.current[pair] = mid
            self.errors.pop(pair, None)
            log.info("ingress: %s now served as %s", pair, mid)
        else:
            self.errors[pair] = str(status.get("load_error") or "not loaded")
            log.warning("ingress: %s stays on %s: %s", mid, self.current.get(pair), self.errors[pair])


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

    async def __init__(  # type: ignore[misc]  # Serve awaits an async __init__
        self, forecasters: dict[str, DeploymentHandle], registry: DeploymentHandle, args: dict[str, Any]
    ) -> None:
        settings = AppArgs(**args).app_settings()
        self.service = ApiService(
            db=request_database(settings),
            forecasters={},
            registry=RegistryHandle(registry),
            configured_pairs=settings.general.pairs,
        )
        self.router = ChampionRouter(forecasters, registry, self.service)
        self.metrics = ApiMetrics(app=serve.get_replica_context().app_name)
        try:  # serve what is loadable now; the follower catches up with the rest
            await asyncio.wait_for(self.router.sync(await registry.snapshot.remote()), timeout=STARTUP_SYNC_S)
        except Exception as exc:
            log.warning("ingress: first sync with the registry incomplete: %s", exc)
        self._task = asyncio.get_running_loop().create_task(self.router.follow())
        # the track record fills every market hour, asked or not (served forecasts are recorded as well)
        self._publish_task = asyncio.get_running_loop().create_task(self.service.publish_forever())

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Called by Serve on the replica after ``__init__``: the app this deployment serves."""
        return create_api(self.service, metrics=self.metrics)

    def __del__(self) -> None:
        service = getattr(self, "service", None)
        if service is not None:
            service.close(wait=False)
