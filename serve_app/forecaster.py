"""Forecaster: one multiplexed deployment serving the champion models of every pair (Ray model multiplexing).

A request carries its model id ``pair@version`` (``handle.options(multiplexed_model_id=...)``, set by the
ingress from the registry watcher's champions), so a promoted champion is a *new* id: replicas load it on
first use (the ingress preloads it before switching) while the old id finishes its requests and ages out of
the LRU. Each replica keeps at most ``serve_models_per_replica`` models (``@serve.multiplexed``'s LRU) and
one candle cache for all the pairs it has seen (:func:`~mur.serving.market_cache.shared_market_cache`).
Ray routes a request to a replica that already holds its model when one has room, so the models spread
over the replicas as the autoscaler adds them.

Hot pairs may get a dedicated deployment of the same class (``serve_dedicated_pairs``), with its own
autoscaling. A forecast is answered as a :class:`~mur.serving.contract.ForecastOut`; a failed one raises a
:class:`~mur.errors.MurError` (anything else becomes a 500 ``internal_error``), which reaches the ingress
inside Ray's ``RayTaskError`` (unwrapped there: :class:`serve_app.ingress.ForecasterHandle`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle

from mur.errors import DataValidationError, MarketDataError, ModelError, ModelNotLoadedError
from mur.model.inference import forecast_body
from mur.serving.calibration import graph_calibration
from mur.serving.contract import ForecastOut, misfit
from mur.serving.http import expected
from mur.serving.market_cache import shared_market_cache
from mur.serving.model import LoadedModel
from mur.serving.payload import candles_from_payload
from serve_app.args import AppArgs

log = logging.getLogger("ray.serve")
Prediction = tuple[float, "np.ndarray | None"]
"""One window's next close and price quantiles ``(H, L)`` (None for a point-only model)."""


def model_id(pair: str, version: int) -> str:
    """The multiplexed model id of ``pair`` ``version``: ``btc_usdt@12``."""
    return f"{pair}@{int(version)}"


def parse_model_id(text: str) -> tuple[str, int]:
    """``"btc_usdt@12"`` -> ``("btc_usdt", 12)`` (ValueError otherwise)."""
    pair, sep, version = text.rpartition("@")
    if not sep or not pair or not version.isdigit():
        raise ValueError(f"not a model id (pair@version): {text!r}")
    return pair, int(version)


@serve.deployment(name="forecaster", ray_actor_options={"num_cpus": 0.1})
class Forecaster:
    """The champions of many pairs, loaded on demand into an LRU of onnxruntime sessions."""

    async def __init__(  # type: ignore[misc]  # Serve awaits an async __init__
        self, registry: DeploymentHandle, args: dict[str, Any], pairs: list[str] | None = None
    ) -> None:
        self.registry = registry
        self.settings = AppArgs(**args).app_settings()
        self.load_errors: dict[str, str] = {}
        # @serve.batch adds these setters (its stubs do not show them)
        self._predict.set_max_batch_size(self.settings.serving.serve_batch_max_size)  # type: ignore[attr-defined]
        self._predict.set_batch_wait_timeout_s(self.settings.serving.serve_batch_wait_s)  # type: ignore[attr-defined]

        async def load(model: str) -> LoadedModel:
            return await self._load(model)

        # wired at init so the LRU size is a setting (Ray detects multiplexing on the instance)
        self._models = serve.multiplexed(
            max_num_models_per_replica=self.settings.serving.serve_models_per_replica
        )(load)
        self.cache = shared_market_cache(self.settings)
        snapshot: Mapping[str, Any] = {}
        try:
            snapshot = await self.registry.snapshot.remote()
        except Exception as exc:  # the ingress retries; models load on demand
            log.warning("forecaster: no registry snapshot at start: %s", exc)
        targets = {p: t for p, t in (snapshot.get("targets") or {}).items() if not pairs or p in pairs}
        await asyncio.to_thread(self.cache.start, self.settings.serving.market_refresh_s, sorted(targets))
        self._preload_task = None
        if self.settings.serving.serve_preload_champions and targets:
            ids = [model_id(p, t["version"]) for p, t in sorted(targets.items())]
            self._preload_task = asyncio.get_running_loop().create_task(
                self._preload(ids[: self.settings.serving.serve_models_per_replica])
            )

    # --- model lifecycle -----------------------------------------------------------------------
    async def _preload(self, ids: list[str]) -> None:
        """Load the champions known at start (a new replica answers its first requests warm)."""
        for mid in ids:
            try:
                await self._models(mid)
            except Exception as exc:  # reported per request; a preload never kills the replica
                log.warning("forecaster: preloading %s failed: %s", mid, exc)

    async def _load(self, mid: str) -> LoadedModel:
        """The multiplexed loader: ONNX bytes and summary from the watcher, session built off the loop."""
        pair, version = parse_model_id(mid)
        try:
            entry = await self.registry.model_entry.remote(pair, version)
            model = await asyncio.to_thread(
                LoadedModel.from_bytes, pair, version, entry["data"], entry["summary"]
            )
            await asyncio.to_thread(self.cache.ensure, pair, model.seq_len + 24)
        except Exception as exc:
            self.load_errors[pair] = f"version {version}: {type(exc).__name__}: {exc}"
            raise
        self.load_errors.pop(pair, None)
        log.info("forecaster: loaded %s", mid)
        return model

    async def _model(self) -> LoadedModel:
        """The request's model (its multiplexed id), loaded if needed within the cold-load timeout."""
        mid = serve.get_multiplexed_model_id()
        if not mid:
            raise ModelNotLoadedError("no model id in the request")
        pair, version = parse_model_id(mid)
        try:
            return await asyncio.wait_for(
                asyncio.shield(self._models(mid)), timeout=self.settings.serving.serve_cold_load_timeout_s
            )
        except TimeoutError:
            raise ModelNotLoadedError(
                f"{pair} version {version} is still loading (cold load over "
                f"{self.settings.serving.serve_cold_load_timeout_s:g}s); try again"
            ) from None
        except Exception as exc:
            raise ModelNotLoadedError(f"no model loaded for {pair}: version {version}: {exc}") from exc

    # --- batching ------------------------------------------------------------------------------
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.001)
    async def _predict(self, items: list[tuple[LoadedModel, np.ndarray]]) -> list[Prediction]:
        """All windows of a batch, one onnxruntime call per model (a batch mixes pairs): per window the
        next close and the price quantiles ``(H, L)`` (None for a point-only model)."""
        out: list[Prediction] = [(0.0, None)] * len(items)
        groups: dict[int, list[int]] = {}
        for i, (model, _) in enumerate(items):
            groups.setdefault(id(model), []).append(i)
        for indices in groups.values():
            model = items[indices[0]][0]
            points, quantiles = model.forecast(np.stack([items[i][1] for i in indices]))
            for k, i in enumerate(indices):
                out[i] = (float(points[k]), None if quantiles is None else quantiles[k])
        return out

    @staticmethod
    def _body(model: LoadedModel, prediction: Prediction, last_close: float, candle_time: Any) -> ForecastOut:
        point, quantiles = prediction
        body = forecast_body(
            model.pair,
            prediction=point,
            last_close=last_close,
            candle_time=candle_time,
            model_version=model.version,
            horizons=model.horizon_rows(quantiles, candle_time),
        )
        if body["horizons"]:  # the graph's own ranges; the API applies the online scale (docs/forecasts.md)
            body["calibration"] = graph_calibration(
                model.horizons, model.quantile_levels, model.calibration_recipe
            )
        trained_until = (model.summary.get("data_window") or {}).get("end")
        if trained_until:  # the model's age is said from it (ApiService: model_age_hours)
            body["model_trained_until"] = str(trained_until)
        try:
            return ForecastOut.model_validate(body)
        except ValidationError as exc:
            raise ModelError(f"the {model.pair} forecast does not fit the contract: {misfit(exc)}") from None

    # --- requests ------------------------------------------------------------------------------
    async def forecast_latest(self) -> ForecastOut:
        """Next-hour forecast (and the horizons' ranges) from the latest closed candles in the cache."""
        pair = serve.get_multiplexed_model_id().rpartition("@")[0]
        try:
            model = await self._model()
            snap = self.cache.snapshot(model.pair)
            try:
                window = snap.window(model.seq_len, model.features or None)
            except DataValidationError as exc:  # our cache, not the caller's input: 503, not 422
                raise MarketDataError(f"cached candles of {model.pair} are unusable: {exc}") from exc
            prediction = await self._predict((model, window))
            return self._body(model, prediction, snap.last_close, snap.candle_time)
        except Exception as exc:
            raise expected(exc, pair) from None

    async def forecast_candles(self, rows: Sequence[Mapping[str, Any]]) -> ForecastOut:
        """Next-hour forecast for client-supplied candles (exactly the model's window length)."""
        pair = serve.get_multiplexed_model_id().rpartition("@")[0]
        try:
            model = await self._model()
            candles = candles_from_payload(rows, model.seq_len)
            prediction = await self._predict((model, model.window(candles)))
            last = candles.iloc[-1]
            return self._body(model, prediction, float(last["close"]), last["timestamp"])
        except Exception as exc:
            raise expected(exc, pair) from None

    async def status(self) -> dict[str, Any]:
        """The request's model (loaded if needed), its load error and the pair's market cache state."""
        pair = serve.get_multiplexed_model_id().rpartition("@")[0]
        model: LoadedModel | None = None
        error: str | None = None
        try:
            model = await self._model()
        except ModelNotLoadedError as exc:
            error = str(exc)
        return {
            "pair": pair,
            "loaded": model is not None,
            "version": model.version if model else None,
            "model": model.describe() if model else None,
            "load_error": error,
            "market": self.cache.status(pair),
            "replica": serve.get_replica_context().replica_id.unique_id,
        }

    async def replica_info(self) -> dict[str, Any]:
        """What this replica holds: model ids in its LRU, cached pairs (for the benchmark and tests)."""
        wrapper = getattr(self._models, "__serve_multiplex_wrapper", None)
        return {
            "replica": serve.get_replica_context().replica_id.unique_id,
            "models": list(getattr(wrapper, "models", {}) or {}),
            "cached_pairs": len(self.cache.pairs),
        }
