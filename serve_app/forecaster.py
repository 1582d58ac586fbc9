"""Forecaster: one deployment per pair (named by the pair), autoscaled, batching requests into one ORT call.

Each replica holds the pair's champion in an onnxruntime session and a market-data cache refreshed in the
background. It follows the RegistryWatcher (long-poll) and swaps in a new champion atomically: requests
already in a batch finish on the model they started with, the next batch uses the new one, nothing is
dropped. Request methods return ``{"ok": True, "body": ...}`` or ``{"ok": False, "status", "error",
"message"}`` so that expected errors cross the handle as data, not as exceptions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from mur.errors import DataValidationError, MarketDataError, ModelNotLoadedError
from mur.model.inference import forecast_body, window_from_candles
from mur.serving.http import failure
from mur.serving.market_cache import MarketCache
from mur.serving.model import LoadedModel
from mur.serving.payload import candles_from_payload
from serve_app.args import AppArgs

log = logging.getLogger("ray.serve")
FOLLOW_TIMEOUT_S = 30.0
RETRY_S = 3.0


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class Forecaster:
    """The champion model of one pair."""

    async def __init__(  # type: ignore[misc]  # Serve awaits an async __init__
        self, pair: str, registry: DeploymentHandle, args: dict[str, Any]
    ) -> None:
        self.pair = pair
        self.registry = registry
        self.settings = AppArgs(**args).app_settings()
        self.model: LoadedModel | None = None
        self.load_error: str | None = None
        # @serve.batch adds these setters (its stubs do not show them)
        self._predict.set_max_batch_size(self.settings.serve_batch_max_size)  # type: ignore[attr-defined]
        self._predict.set_batch_wait_timeout_s(self.settings.serve_batch_wait_s)  # type: ignore[attr-defined]
        self.cache = MarketCache(self.settings, [pair])
        await asyncio.to_thread(self.cache.start, self.settings.market_refresh_s)
        self._epoch, self._generation = "", -1
        try:
            snapshot = await self.registry.snapshot.remote()
            await self._sync(snapshot)
        except Exception as exc:  # the follower loop retries
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.warning("%s: initial model load failed: %s", pair, exc)
        self._task = asyncio.get_running_loop().create_task(self._follow())

    # --- model lifecycle -----------------------------------------------------------------------
    async def _follow(self) -> None:
        """Long-poll the watcher; load each new target version (retrying a failed load every few s)."""
        while True:
            try:
                snapshot = await self.registry.wait_for_change.remote(
                    self._epoch, self._generation, FOLLOW_TIMEOUT_S
                )
                if not await self._sync(snapshot):
                    await asyncio.sleep(RETRY_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s: following the registry failed (%s); retrying", self.pair, exc)
                await asyncio.sleep(RETRY_S)

    async def _sync(self, snapshot: Mapping[str, Any]) -> bool:
        """Load the snapshot's target for this pair if it differs; False if that failed (retry later)."""
        target = snapshot["targets"].get(self.pair)
        if target is None:
            if self.model is None:
                self.load_error = snapshot.get("pair_errors", {}).get(self.pair) or "no champion known yet"
        elif self.model is None or self.model.version != int(target["version"]):
            version = int(target["version"])
            try:
                data = await self.registry.model_bytes.remote(self.pair, version)
                model = await asyncio.to_thread(LoadedModel.from_bytes, self.pair, version, data, target)
            except Exception as exc:
                self.load_error = f"version {version}: {type(exc).__name__}: {exc}"
                log.warning(
                    "%s: cannot load version %s, still serving %s: %s",
                    self.pair,
                    version,
                    self.model.version if self.model else None,
                    exc,
                )
                return False  # generation not advanced: retried after RETRY_S
            if model.seq_len + 24 > self.cache.history_hours:  # a model with a longer window than cached
                self.cache.history_hours = 2 * model.seq_len
                await asyncio.to_thread(self.cache.refresh)
            self.model, self.load_error = model, None  # atomic swap
            log.info("%s: now serving version %s", self.pair, version)
        self._epoch, self._generation = snapshot["epoch"], snapshot["generation"]
        return True

    # --- batching ------------------------------------------------------------------------------
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.001)
    async def _predict(self, items: list[tuple[LoadedModel, np.ndarray]]) -> list[float]:
        """All windows of a batch in one onnxruntime call per model (one model, except during a swap)."""
        out: list[float] = [0.0] * len(items)
        groups: dict[int, list[int]] = {}
        for i, (model, _) in enumerate(items):
            groups.setdefault(id(model), []).append(i)
        for indices in groups.values():
            model = items[indices[0]][0]
            preds = model.predict(np.stack([items[i][1] for i in indices]))
            for i, pred in zip(indices, preds, strict=True):
                out[i] = float(pred)
        return out

    def _require_model(self) -> LoadedModel:
        model = self.model
        if model is None:
            reason = f": {self.load_error}" if self.load_error else " yet"
            raise ModelNotLoadedError(f"no model loaded for {self.pair}{reason}")
        return model

    # --- requests ------------------------------------------------------------------------------
    async def forecast_latest(self) -> dict[str, Any]:
        """Next-hour forecast from the latest closed candles in the cache."""
        try:
            model = self._require_model()
            snap = self.cache.snapshot(self.pair)
            try:
                window = snap.window(model.seq_len)
            except DataValidationError as exc:  # our cache, not the caller's input: 503, not 422
                raise MarketDataError(f"cached candles of {self.pair} are unusable: {exc}") from exc
            prediction = await self._predict((model, window))
            body = forecast_body(
                self.pair,
                prediction=prediction,
                last_close=snap.last_close,
                candle_time=snap.candle_time,
                model_version=model.version,
            )
        except Exception as exc:
            return failure(exc, self.pair)
        return {"ok": True, "body": body}

    async def forecast_candles(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Next-hour forecast for client-supplied candles (exactly the model's window length)."""
        try:
            model = self._require_model()
            candles = candles_from_payload(rows, model.seq_len)
            window = window_from_candles(candles, model.seq_len)
            prediction = await self._predict((model, window))
            last = candles.iloc[-1]
            body = forecast_body(
                self.pair,
                prediction=prediction,
                last_close=float(last["close"]),
                candle_time=last["timestamp"],
                model_version=model.version,
            )
        except Exception as exc:
            return failure(exc, self.pair)
        return {"ok": True, "body": body}

    async def status(self) -> dict[str, Any]:
        """Loaded model, load error and market cache state of this replica."""
        model = self.model
        return {
            "pair": self.pair,
            "loaded": model is not None,
            "version": model.version if model else None,
            "model": model.describe() if model else None,
            "load_error": self.load_error,
            "market": self.cache.status()["pairs"].get(self.pair, {}),
            "replica": serve.get_replica_context().replica_id.unique_id,
        }

    def __del__(self) -> None:
        cache = getattr(self, "cache", None)
        if cache is not None:
            cache.stop(wait=False)
