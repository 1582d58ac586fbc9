"""RegistryWatcher: the one deployment that talks to MLflow.

It polls the registry every ``registry_poll_s`` seconds (or at once on ``refresh``, the admin reload),
downloads a new champion's ONNX bytes *before* announcing it, and publishes ``{pair: version}`` targets
with a generation number. The ingress replicas long-poll :meth:`wait_for_change` and switch a pair's model
id (``pair@version``) once the multiplexed Forecaster has loaded it; Forecaster replicas load a model from
:meth:`model_entry` (served from memory), so N replicas never hit MLflow N times, a replica started while
MLflow is down still gets its model, and an unreachable registry leaves every loaded model serving. Every
registered pair with a champion is served (``AppArgs.pairs`` restricts that): a new pair needs no redeploy.

After each successful poll the champions and their ONNX files are also kept on disk
(:class:`~mur.serving.champion_store.ChampionStore`); a watcher that starts while MLflow is down (the app
redeployed during an outage) serves those until the registry answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from ray import serve

from mur.errors import MurError, RegistryUnavailableError
from mur.registry import checksums
from mur.registry.checksums import ChecksumError
from mur.registry.download import model_bytes
from mur.serving.champion_store import ChampionStore
from mur.serving.champions import champions, probe_artifacts, registry_client
from mur.timeutil import iso
from serve_app.args import AppArgs

log = logging.getLogger("ray.serve")
KEEP_VERSIONS = 2
"""Model files kept in memory per pair (the current champion and the previous one), beside its shadows."""
ARTIFACT_PROBE_EVERY_S = 30.0
"""How often a poll also lists a champion's artefacts (metadata alone does not prove that the files are
reachable): at most this often while they answer, at every poll after one that failed. The default poll
(``registry_poll_s``, 30 s) probes every time; a faster one does not pay an S3 listing and its authorization
on the MLflow server each poll (2026-11-27: a fifth of the server's CPU under a 2 s poll)."""


@serve.deployment(
    name="registry",
    num_replicas=1,
    max_ongoing_requests=1000,  # every ingress replica keeps one long-poll open here, loads come in bursts
    graceful_shutdown_timeout_s=2,  # open long-polls are safe to cut
    ray_actor_options={"num_cpus": 0},
)
class RegistryWatcher:
    """Champion targets per pair, their ONNX bytes, and the registry's health."""

    async def __init__(  # type: ignore[misc]  # Serve awaits an async __init__
        self, args: dict[str, Any], served_pairs: list[str]
    ) -> None:
        self.args = AppArgs(**args)
        self.settings = self.args.app_settings()
        self.epoch = uuid.uuid4().hex  # a new watcher replica restarts the generation count
        self.generation = 0
        self.targets: dict[str, dict[str, Any]] = {}
        self.registry_ok: bool | None = None
        self.error: str | None = None
        self.checked_at: datetime | None = None
        self.pair_errors: dict[str, str] = {}
        self._bytes: dict[tuple[str, int], bytes] = {}
        self._refused: set[tuple[str, int]] = set()  # versions whose bytes failed their checksum
        self._summaries: dict[tuple[str, int], dict[str, Any]] = {}
        self._client: Any = None
        self._probed_at: float | None = None  # monotonic time of the last artefact probe that answered
        self._changed = asyncio.Condition()
        self._poll_lock = asyncio.Lock()
        self.store = ChampionStore.for_settings(self.settings)
        await self._poll()
        if self.registry_ok is False and not self.targets:
            await self._restore(served_pairs)
        self._task = asyncio.get_running_loop().create_task(self._loop())

    # --- polling -------------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.serving.registry_poll_s)
            try:
                await self._poll()
            except Exception:  # keep polling whatever happens
                log.exception("registry poll crashed")

    def _read_registry(
        self,
    ) -> tuple[dict[str, dict[str, Any]], dict[tuple[str, int], bytes], dict[str, str]]:
        """Blocking: the champions, the bytes of served champions not downloaded yet, per-pair errors."""
        if self._client is None:
            self._client = registry_client(self.settings)
        found = champions(
            self._client,
            prefix=self.settings.registry.registry_prefix,
            experiment=self.settings.registry.mlflow_experiment,
            pairs=self.args.pairs,
            known=self._summaries,
        )
        due = self._probed_at is None or time.monotonic() - self._probed_at >= ARTIFACT_PROBE_EVERY_S
        if found and due:
            probe_artifacts(self._client, next(iter(found.values())).get("run_id"))
            self._probed_at = time.monotonic()
        fresh: dict[tuple[str, int], bytes] = {}
        errors: dict[str, str] = {}
        for pair, summary in found.items():
            for number in [int(summary["version"]), *summary.get("shadows", [])]:
                key = (pair, number)
                if key not in self._bytes:
                    try:
                        fresh[key] = model_bytes(self.settings, pair, number)
                    except MurError as exc:  # this pair's file only: the others still update
                        errors.setdefault(pair, f"version {number}: {exc}")
                        if isinstance(exc, ChecksumError) and key not in self._refused:  # alert once
                            self._refused.add(key)
                            checksums.refused(self.settings, pair, number, exc)
        return found, fresh, errors

    async def _poll(self) -> None:
        async with self._poll_lock:
            try:
                found, fresh, errors = await asyncio.to_thread(self._read_registry)
            except RegistryUnavailableError as exc:
                self.registry_ok, self.error = False, str(exc)
                self.checked_at = datetime.now(UTC)
                log.warning("registry poll failed; loaded models keep serving: %s", exc)
                return
            except Exception as exc:  # unexpected: report, keep the current targets
                self.registry_ok, self.error = False, f"{type(exc).__name__}: {exc}"
                self.checked_at = datetime.now(UTC)
                log.exception("registry poll failed")
                return
            self.registry_ok, self.error, self.checked_at = True, None, datetime.now(UTC)
            self._bytes.update(fresh)
            self.pair_errors = errors
            changed = False
            for pair, summary in found.items():
                key = (pair, int(summary["version"]))
                if key in self._refused:  # bytes not as registered: the previous one serves
                    continue
                self._summaries[key] = dict(summary)
                version, shadows = summary["version"], summary.get("shadows")
                before = self.targets.get(pair, {})
                if (before.get("version"), before.get("shadows")) != (version, shadows):
                    log.info(
                        "champion of %s is now version %s (shadows %s)", pair, version, shadows or "none"
                    )
                    self.targets[pair] = summary
                    changed = True
            self._prune()
            serving = ((p, int(s["version"])) for p, s in self.targets.items())
            current = {key: self._bytes[key] for key in serving if key in self._bytes}
            # on disk too, for a redeploy while the registry is down
            await asyncio.to_thread(self.store.save_champions, found)
            await asyncio.to_thread(self.store.save_models, current)
            if changed:
                async with self._changed:
                    self.generation += 1
                    self._changed.notify_all()

    async def _restore(self, pairs: list[str]) -> None:
        """Serve the last known champions of ``pairs`` from disk (the registry is unreachable at start)."""
        stored = await asyncio.to_thread(self.store.champions, pairs)
        for pair, summary in stored.items():
            key = (pair, int(summary["version"]))
            data = await asyncio.to_thread(self.store.model, *key)
            if data is not None:
                self._bytes[key] = data
                self._summaries[key] = dict(summary)
                self.targets[pair] = summary
        if self.targets:
            log.warning(
                "registry unreachable at start: serving the last known champions %s",
                {p: s["version"] for p, s in self.targets.items()},
            )
            self.generation += 1  # at start: nobody waits for a change yet

    def _prune(self) -> None:
        for pair in {p for p, _ in self._bytes}:
            versions = sorted((v for p, v in self._bytes if p == pair), reverse=True)
            target = self.targets.get(pair, {})
            current = target.get("version")
            keep = set(versions[:KEEP_VERSIONS]) | set(target.get("shadows") or []) | {current}
            for version in versions:
                if version not in keep:
                    del self._bytes[(pair, version)]

    # --- API for the ingress and the forecasters -------------------------------------------------
    async def snapshot(self) -> dict[str, Any]:
        """Targets, generation and registry health now."""
        return {
            "epoch": self.epoch,
            "generation": self.generation,
            "targets": {pair: dict(summary) for pair, summary in self.targets.items()},
            "pair_errors": dict(self.pair_errors),
            "registry_ok": self.registry_ok,
            "error": self.error,
            "checked_at": iso(self.checked_at) if self.checked_at else None,
        }

    async def refresh(self) -> dict[str, Any]:
        """Poll the registry now (admin reload / Airflow asset event) and return the new snapshot."""
        await self._poll()
        return await self.snapshot()

    async def wait_for_change(self, epoch: str, generation: int, timeout_s: float = 30.0) -> dict[str, Any]:
        """Return as soon as the targets move past ``generation`` (or after ``timeout_s``)."""
        if epoch == self.epoch and self.generation <= generation:
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._changed.wait_for(lambda: self.generation > generation), timeout=timeout_s
                    )
        return await self.snapshot()

    async def model_entry(self, pair: str, version: int) -> dict[str, Any]:
        """``{"data": ONNX bytes, "summary": version summary}`` of ``pair`` ``version`` (a Forecaster's load):
        the bytes from memory, else from the store on disk, else downloaded (not prefetched)."""
        key = (pair, int(version))
        data = self._bytes.get(key)
        if data is None:
            data = await asyncio.to_thread(self.store.model, *key)
        if data is None:
            data = self._bytes[key] = await asyncio.to_thread(model_bytes, self.settings, *key)
        # every target's summary is kept when it becomes the target; a shadow version has only its number
        return {"data": data, "summary": self._summaries.get(key, {"version": version})}
