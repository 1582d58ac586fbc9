"""What the HTTP API does, without Ray or a web framework: auth, quota, routing to the pair forecasters,
readiness and the admin reload.

:class:`ApiService` talks to the per-pair forecasters and the registry watcher through two small protocols;
the Serve ingress passes adapters over DeploymentHandles (:mod:`serve_app.ingress`), the in-process tests
pass plain objects.

Quota: a caller with no unit left is refused (429) by one read *before* any model work; a forecast that
succeeded consumes one unit in one SQL statement, and only then is it answered 200 (failed calls are not
charged). The charge commits only while its request still waits for it (:meth:`ApiService._charge`), so a
call answered with an error is never charged, whatever the timing.

Blocking database calls run on a small thread pool, each awaited for at most ``db_timeout_s``: a PostgreSQL
that stops answering makes requests fail with a 503 in bounded time (and ``/readyz`` say so) instead of
piling up behind the stuck threads. The pool's statement and lock timeouts are shorter than that
(:func:`request_database`), so a statement stuck behind a lock fails, and rolls back, on the server too.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from mur.clock import market_clock
from mur.data.synthetic import is_synthetic
from mur.errors import DatabaseError, ModelError, ModelNotLoadedError, NoChampionError, UnknownPairError
from mur.pairs import normalize_pair
from mur.serving.calibration import OnlineScales
from mur.serving.contract import ForecastOut, with_times
from mur.serving.http import authenticate, charge, check_quota, quota_headers, require_admin
from mur.settings import Settings, get_settings
from mur.waiting import WaitTimeout, wait_until_async

if TYPE_CHECKING:
    from mur.db import Database, QuotaResult, TokenOwner

T = TypeVar("T")
log = logging.getLogger("ray.serve")
RECORDED_KEYS_MAX = 10_000
DB_THREADS = 8
CALL_TIMEOUT_S = 30.0
STATUS_TIMEOUT_S = 5.0
DB_TIMEOUT_S = 5.0
"""How long a request waits for one database call (token lookup, quota) before answering 503."""
STATEMENT_TIMEOUT_SHARE = 0.8
LOCK_TIMEOUT_SHARE = 0.4
"""The request pool's statement and lock timeouts, as shares of ``db_timeout_s`` (:func:`request_database`)."""


def request_database(
    settings: Settings, *, threads: int = DB_THREADS, db_timeout_s: float = DB_TIMEOUT_S
) -> Database:
    """The pool an :class:`ApiService` uses: one connection per database thread, all kept open (a new
    PostgreSQL connection costs more than the token lookup and quota statement it would serve), a thread
    waiting for one gives up after ``db_timeout_s``, and statements give up on the server before their request
    does (statement timeout 0.8x, lock timeout 0.4x ``db_timeout_s``): under a table lock a request's
    statement fails and rolls back instead of completing, charged, after its request was answered 503."""
    from mur.db import Database

    return Database(
        settings,
        minconn=threads,
        maxconn=threads,
        pool_timeout_s=db_timeout_s,
        statement_timeout_s=db_timeout_s * STATEMENT_TIMEOUT_SHARE,
        lock_timeout_s=db_timeout_s * LOCK_TIMEOUT_SHARE,
    )


class PairForecaster(Protocol):
    """One pair's forecaster. Request methods answer the forecast or raise a
    :class:`~mur.errors.MurError` (its HTTP status and JSON body: :func:`mur.serving.http.http_error`)."""

    async def forecast_latest(self) -> ForecastOut: ...

    async def forecast_candles(self, rows: Sequence[Mapping[str, Any]]) -> ForecastOut: ...

    async def status(self) -> dict[str, Any]: ...


class RegistryView(Protocol):
    """The registry watcher: champion targets per pair and the registry's health."""

    async def snapshot(self) -> dict[str, Any]: ...

    async def refresh(self) -> dict[str, Any]: ...


Answer = tuple[dict[str, Any], dict[str, str]]
"""A forecast answered 200: its JSON body and its quota headers."""


class ApiService:
    """Routes, auth and quota; forecasts are delegated to the pair's forecaster."""

    def __init__(
        self,
        *,
        db: Database,
        forecasters: Mapping[str, PairForecaster],
        registry: RegistryView,
        db_threads: int = DB_THREADS,
        db_timeout_s: float = DB_TIMEOUT_S,
        configured_pairs: Iterable[str] = (),
        window: int | None = None,
    ) -> None:
        settings = getattr(db, "settings", None) or get_settings()
        self.window = window or settings.model.context_len
        """How many candles a POSTed forecast takes (the models' input window, ``MUR_CONTEXT_LEN``): what the
        OpenAPI schema says (the forecaster checks each model's own)."""
        self.db = db
        self.configured_pairs = frozenset(configured_pairs)
        self.added_pairs: frozenset[str] = frozenset()
        """Pairs an admin added to the catalogue (``mur pairs add``), re-read by :meth:`refresh_catalogue`: like
        a configured pair, one without a champion yet is a 503 ``no_champion``, never another pair's model."""
        self.db_timeout_s = db_timeout_s
        self.forecasters = dict(forecasters)
        self.registry = registry
        self._pool = ThreadPoolExecutor(db_threads, thread_name_prefix="mur-db")
        self._inflight: dict[str, asyncio.Future[ForecastOut]] = {}
        self._recorded: set[tuple[str, int, str]] = set()
        self._background: set[asyncio.Task[None]] = set()
        self.clock = market_clock(settings)
        self.answer_ttl_s = settings.serving.serve_answer_ttl_s
        self._answers: dict[str, tuple[str, float, ForecastOut]] = {}
        """Answer cache of the latest forecasts: pair → (model id, expiry on the monotonic clock, answer)."""
        self.answer_counts = {"cache": 0, "shared": 0, "forecaster": 0}
        """Where each latest-candle forecast came from (``mur_forecast_answers_total``, docs/metrics.md)."""
        self.calibration = OnlineScales(
            enabled=settings.monitoring.online_calibration,
            ttl_s=settings.monitoring.online_calibration_cache_s,
            read=self._read_calibration,
        )
        """The online scales applied to every answered and recorded range (docs/forecasts.md)."""

    def close(self, *, wait: bool = True) -> None:
        """Close the database pool (``wait``: after the pending track-record writes)."""
        self._pool.shutdown(wait=wait)
        self.db.close()

    async def _blocking(self, func: Callable[..., T], *args: Any) -> T:
        """``func(*args)`` on the database threads, awaited for at most ``db_timeout_s`` (DatabaseError after:
        the thread may stay blocked on a stalled server, the request does not)."""
        call = asyncio.get_running_loop().run_in_executor(self._pool, func, *args)
        try:
            return await asyncio.wait_for(call, timeout=self.db_timeout_s)
        except TimeoutError:
            raise DatabaseError(f"no answer from PostgreSQL within {self.db_timeout_s:g}s") from None

    async def _read_calibration(self, pair: str, generation: str) -> Any:
        from mur.db.calibration import load_calibration

        return await self.query(functools.partial(load_calibration, pair=pair, generation=generation))

    async def query(self, read: Callable[[Database], T]) -> T:
        """``read(db)`` on the database threads, bounded like every database call (503 when it stalls)."""
        return await self._blocking(read, self.db)

    async def database_ok(self) -> bool:
        """Whether a ``/v1`` request's tables (tokens, users, roles, quotas, usage) can be used now, in the
        lock modes a request takes, within the request's own timeouts (:func:`mur.db.probe_request_tables`):
        a lock on ``api_usage`` makes the API not ready, as its forecasts would fail."""
        from mur.db import probe_request_tables

        try:
            await self._blocking(probe_request_tables, self.db)
        except DatabaseError as exc:
            log.warning("readiness: the database cannot serve requests: %s", exc)
            return False
        return True

    async def authenticate(self, authorization: str | None) -> TokenOwner:
        """The owner of the request's bearer token (AuthError otherwise)."""
        return await self._blocking(authenticate, self.db, authorization)

    def pairs(self) -> list[str]:
        """The pairs this API forecasts."""
        return sorted(self.forecasters)

    def known_pairs(self) -> list[str]:
        """The served pairs and the catalogue's pairs (those without a champion yet too)."""
        return sorted(set(self.forecasters) | self.configured_pairs | self.added_pairs)

    async def refresh_catalogue(self) -> None:
        """Re-read the pairs an admin added (the ``pairs`` table); a database problem keeps the last list."""
        from mur.db.pairs import list_pair_records

        try:
            rows = await self._blocking(functools.partial(list_pair_records, include_removed=False), self.db)
        except Exception as exc:  # the catalogue is advisory here: the models served do not depend on it
            log.warning(
                "ingress: pair catalogue unread (%d added pairs kept): %s", len(self.added_pairs), exc
            )
            return
        self.added_pairs = frozenset(r.pair for r in rows)

    def known_pair(self, pair: str) -> str:
        """``pair``'s name if the API serves it or the catalogue has it, else UnknownPairError (404)."""
        name = normalize_pair(pair)
        if name not in self.forecasters and name not in self.known_pairs():  # a served pair: no sorting
            raise UnknownPairError(f"unknown pair {pair!r}; known pairs: {', '.join(self.known_pairs())}")
        return name

    def pair_forecaster(self, pair: str) -> tuple[str, PairForecaster]:
        """``pair``'s name and forecaster: UnknownPairError (404) for a pair no model serves, NoChampionError
        (503) for a configured pair without a champion yet."""
        name = self.known_pair(pair)
        forecaster = self.forecasters.get(name)
        if forecaster is None:  # honest: never a model known to be worse than persistence
            raise NoChampionError(
                f"{name} has no champion: no registered version passed the promotion gate yet (none is "
                "trained, or each is significantly worse than persistence); see docs/promotion.md"
            )
        return name, forecaster

    def _latest(self, name: str, forecaster: PairForecaster) -> asyncio.Future[ForecastOut]:
        """The pair's latest-candles forecast, computed once and shared.

        - **Single-flight**: GETs arriving while a call for the same pair is in flight share its answer (same
          cached candles, same model: the same forecast), so under load the forecaster hop is paid once per
          burst instead of once per request.
        - **Answer cache**: a successful answer of a multiplexed pair is kept ``answer_ttl_s`` seconds
          (``MUR_SERVE_ANSWER_TTL_S``), but never past the market hour's end (a new candle closes) and only
          for the model id it came from: a promoted champion is a new id, so its first GET asks the
          Forecaster. The latest forecast changes once per market hour; without the cache, hundreds of pairs
          under random traffic pay the Forecaster hop on nearly every GET (docs/scale-out.md).
        """
        key = getattr(forecaster, "model_key", None)
        cached = self._answers.get(name)
        if cached is not None and key is not None and cached[0] == key and time.monotonic() < cached[1]:
            self.answer_counts["cache"] += 1
            done: asyncio.Future[ForecastOut] = asyncio.get_running_loop().create_future()
            done.set_result(cached[2])
            return done
        future = self._inflight.get(name)
        if future is None:
            self.answer_counts["forecaster"] += 1
            future = asyncio.ensure_future(forecaster.forecast_latest())
            self._inflight[name] = future
            future.add_done_callback(lambda f: self._answered(name, key, f))
        else:
            self.answer_counts["shared"] += 1
        return future

    def _answered(self, name: str, key: str | None, future: asyncio.Future[ForecastOut]) -> None:
        """The pair's call finished: no longer in flight; a good answer of a known model id is cached."""
        self._inflight.pop(name, None)
        if key is None or self.answer_ttl_s <= 0 or future.cancelled() or future.exception() is not None:
            return
        lifetime = min(self.answer_ttl_s, self.clock.until_next_hour())
        self._answers[name] = (key, time.monotonic() + lifetime, future.result())

    def _record_shadows(self, forecaster: PairForecaster | None) -> None:
        """Record the shadow versions' forecasts in the background: never returned or charged (docs/promotion.md)."""
        from mur.db.forecasts import record_shadow_body

        async def run(shadows: Callable[[], Awaitable[list[ForecastOut]]]) -> None:
            try:
                for result in await shadows():
                    body = await self.calibration.calibrate(
                        result.model_dump(mode="json", exclude_unset=True)
                    )
                    await self._blocking(record_shadow_body, self.db, body, self.clock.now())
            except Exception as exc:  # the next recorded candle tries again
                log.warning("could not record the shadow forecasts: %s", exc)

        if (shadows := getattr(forecaster, "shadow_forecasts", None)) is not None:
            task = asyncio.get_running_loop().create_task(run(shadows))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def _record(self, body: dict[str, Any], forecaster: PairForecaster | None = None) -> Future[Any] | None:
        """Keep a served market forecast for the track record (the dashboard's "how past forecasts fared"):
        one insert per pair, model version and target hour, off the request path; a failed insert is
        logged and retried on a later request. Every horizon's median and range is stored (one row each).
        Returns the pending insert (None: already recorded)."""
        from mur.db import record_forecast_body

        key = (body["pair"], int(body["model_version"]), body["target_time"])
        if key in self._recorded:
            return None
        if len(self._recorded) >= RECORDED_KEYS_MAX:
            self._recorded.clear()
        self._recorded.add(key)

        def done(future: Future[Any]) -> None:
            if (exc := future.exception()) is not None:
                self._recorded.discard(key)
                log.warning("could not record the %s forecast for %s: %s", key[0], key[2], exc)

        made_at = self.clock.now()  # market time, like the target (mur/clock.py)
        self._record_shadows(forecaster)
        future = self._pool.submit(record_forecast_body, self.db, dict(body), made_at=made_at)
        future.add_done_callback(done)
        return future

    async def _forecast(
        self,
        owner: TokenOwner,
        pair: str,
        call: Callable[[str, PairForecaster], Awaitable[ForecastOut]],
        record: bool = False,
    ) -> Answer:
        name, forecaster = self.pair_forecaster(pair)
        await self._blocking(check_quota, self.db, owner)  # over quota: 429 before any model work
        try:
            result = await asyncio.wait_for(asyncio.shield(call(name, forecaster)), timeout=CALL_TIMEOUT_S)
        except TimeoutError:
            raise ModelNotLoadedError(f"the {name} model did not answer within {CALL_TIMEOUT_S:g}s") from None
        if normalize_pair(result.pair) != name:  # never another pair's model
            raise ModelError(f"the {name} forecaster answered with {result.pair!r}'s model")
        # finite throughout (ForecastOut refuses NaN and inf): an answer JSON cannot carry is never charged
        calibrated = await self.calibration.calibrate(result.model_dump(mode="json", exclude_unset=True))
        quota = await self._charge(owner)
        if record:
            self._record(calibrated, forecaster)
        body = with_times(calibrated, self.clock.now())
        return body, quota_headers(quota) if quota is not None else {}

    async def _charge(self, owner: TokenOwner) -> QuotaResult | None:
        """One unit of ``owner``'s quota for a forecast about to be answered 200 (QuotaExhaustedError, or
        DatabaseError for a 503, otherwise).

        The charge's transaction commits only if this request still waits for it: past ``db_timeout_s`` the
        request gives up (503) and the statement, whenever it returns, rolls back instead. If its commit had
        begun by then, the commit's outcome decides the answer; should that stay unknown for
        ``CALL_TIMEOUT_S`` (a connection gone silent mid-commit), the forecast is answered without quota
        headers (None): the caller may get a forecast uncharged, never an error charged.
        """
        # whose word comes first decides: the database thread about to commit, or the request giving up
        first = threading.Lock()
        claim = functools.partial(first.acquire, blocking=False)
        call = asyncio.get_running_loop().run_in_executor(self._pool, charge, self.db, owner, claim)
        try:
            return await asyncio.wait_for(asyncio.shield(call), timeout=self.db_timeout_s)
        except TimeoutError:
            if claim():
                raise DatabaseError(f"no answer from PostgreSQL within {self.db_timeout_s:g}s") from None
        except asyncio.CancelledError:  # the request went away (client gone, Serve's timeout): no answer
            claim()
            raise
        try:  # the commit had begun: its outcome decides
            return await asyncio.wait_for(call, timeout=CALL_TIMEOUT_S)
        except TimeoutError:
            log.warning(
                "the charge of user %s is still committing; answered without quota headers", owner.user_id
            )
            return None

    async def publish_once(self) -> int:
        """Record each served pair's forecast from the latest closed candles (no caller, no quota), so the
        track record fills every market hour whether or not anyone asked; returns how many were new."""
        recorded = 0
        for name in self.pairs():
            try:
                result = await asyncio.wait_for(
                    asyncio.shield(self._latest(name, self.forecasters[name])), timeout=CALL_TIMEOUT_S
                )
                body = await self.calibration.calibrate(result.model_dump(mode="json", exclude_unset=True))
                recorded += self._record(body, self.forecasters[name]) is not None
            except Exception as exc:  # a pair not loaded yet, a model error: the next pass tries again
                log.debug("publishing the %s forecast failed: %s", name, exc)
        return recorded

    async def publish_forever(self) -> None:
        """:meth:`publish_once` about four times per market hour (at most every 30 wall seconds), after
        :meth:`refresh_catalogue`."""
        while True:
            await self.refresh_catalogue()
            await self.publish_once()
            await asyncio.sleep(max(1.0, min(30.0, self.clock.seconds_per_hour / 4)))

    async def forecast_latest(self, owner: TokenOwner, pair: str) -> Answer:
        """Next-hour forecast from the latest closed candles (recorded for the track record)."""
        return await self._forecast(owner, pair, self._latest, record=True)

    async def forecast_candles(
        self, owner: TokenOwner, pair: str, rows: Sequence[Mapping[str, Any]]
    ) -> Answer:
        """Next-hour forecast for the caller's own candles."""
        return await self._forecast(owner, pair, lambda _, forecaster: forecaster.forecast_candles(rows))

    # --- status ----------------------------------------------------------------------------------
    async def statuses(self) -> tuple[Any, dict[str, Any]]:
        """The registry snapshot and each pair's status; an unreachable one is its exception, not raised."""
        pairs = self.pairs()
        calls = [self.registry.snapshot(), *(self.forecasters[p].status() for p in pairs)]
        results = await asyncio.gather(
            *(asyncio.wait_for(c, timeout=STATUS_TIMEOUT_S) for c in calls), return_exceptions=True
        )
        return results[0], dict(zip(pairs, results[1:], strict=True))

    async def readiness(self) -> dict[str, Any]:
        """``ready`` (every pair loaded, registry reachable, database answering), ``degraded`` (serving, but
        the registry, a reload or market data has a problem) or ``not_ready`` (503: nothing to serve, or
        the database does not answer, so no request can be authenticated)."""
        (registry, statuses), database_ok = await asyncio.gather(self.statuses(), self.database_ok())
        targets = {} if isinstance(registry, BaseException) else registry.get("targets", {})
        pairs: dict[str, Any] = {}
        problems: list[str] = []
        for pair, st in statuses.items():
            if isinstance(st, BaseException):
                pairs[pair] = {"loaded": False, "error": f"{type(st).__name__}: {st}"}
                problems.append(f"{pair}: no answer")
                continue
            pairs[pair] = {
                "loaded": st["loaded"],
                "version": st["version"],
                "champion_version": targets.get(pair, {}).get("version"),
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
        if not database_ok:
            problems.append("database: unavailable")
        serving = database_ok and any(p.get("loaded") for p in pairs.values())
        status = "ready" if serving and not problems else "degraded" if serving else "not_ready"
        return {
            "status": status,
            "problems": problems,
            "database_ok": database_ok,
            "pairs": pairs,
            "registry": None
            if isinstance(registry, BaseException)
            else {k: registry.get(k) for k in ("registry_ok", "error", "checked_at")},
        }

    async def models(self) -> list[dict[str, Any]]:
        """The model served for each pair (``loaded: False`` where none is)."""
        _, statuses = await self.statuses()
        models = []
        for pair, st in statuses.items():
            loaded = not isinstance(st, BaseException) and bool(st["loaded"])
            model = st["model"] if loaded else {"pair": pair, "version": None}
            models.append({**model, "loaded": loaded, "synthetic": is_synthetic(pair)})
        return models

    async def reload(self, owner: TokenOwner, wait_s: float) -> dict[str, Any]:
        """Re-read the registry now (admins only); wait up to ``wait_s`` until every pair serves its champion."""
        require_admin(owner)
        await self.refresh_catalogue()
        snapshot = await self.registry.refresh()
        targets = {p: s["version"] for p, s in snapshot["targets"].items() if p in self.forecasters}
        serving: dict[str, Any] = {}

        async def serving_champions() -> bool:
            _, statuses = await self.statuses()
            serving.update(
                (p, None if isinstance(s, BaseException) else s["version"]) for p, s in statuses.items()
            )
            return all(serving.get(p) == v for p, v in targets.items())

        try:
            done = await wait_until_async(
                serving_champions, what="the champions", timeout_s=min(wait_s, 120.0), interval_s=0.25
            )
        except WaitTimeout:
            done = False
        registry = {k: snapshot[k] for k in ("registry_ok", "error")}
        return {"reloaded": done, "champions": targets, "serving": serving, **registry}
