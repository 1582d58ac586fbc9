"""Prometheus metrics of the API (``GET /metrics``, docs/metrics.md), totalled across the ingress replicas.

A scrape reaches one replica at random (HAProxy in front of autoscaled replicas, possibly on several nodes), so
counters of one process would be wrong. Each replica counts its own requests (:class:`RequestMetrics`, plain
dicts filled by :class:`MetricsMiddleware`) and pushes the *cumulative* :class:`Counts` to one
:class:`MetricsHub`, keyed by replica id, every :data:`PUSH_INTERVAL_S` seconds and right before it answers
``/metrics``; the hub sums the latest counts of every replica, so whichever replica a scrape reaches answers the
totals. A push is idempotent (the latest cumulative counts replace the previous ones), so a lost or repeated
push never counts twice, and a restarted hub is refilled by the next pushes. On Serve the hub is a detached
named Ray actor (:mod:`serve_app.ingress`); in one process (tests) it is a :class:`LocalHub`.

What describes state rather than traffic is read at scrape time: the version each pair serves from the
registry watcher's snapshot, the forecasts recorded/resolved and the latest rolling skill and coverage from
PostgreSQL (:mod:`mur.monitoring.store`, bounded by :data:`DB_TIMEOUT_S`; a failure omits those series and
sets ``mur_metrics_db_up 0``, it never fails the scrape).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from mur.db import Database
    from serve_app.service import ApiService

log = logging.getLogger("ray.serve")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format 0.0.4."""
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Upper bounds (seconds) of the latency histogram's buckets; ``+Inf`` comes on top."""
UNMATCHED = "unmatched"
"""The ``route`` of a request that matches no route (any path: the label's values stay bounded)."""
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
CLIENT_GONE = 499
"""The ``status`` of a request that ended without an answer (the client went away)."""
PUSH_INTERVAL_S = 5.0
RETIRE_AFTER_S = 3600.0
"""A replica silent for this long is gone: its last counts are folded into the hub's retired totals."""
DB_TIMEOUT_S = 3.0
REGISTRY_TIMEOUT_S = 2.0
HUB_TIMEOUT_S = 2.0

# name -> type of every metric family the API exports (the compose test checks the dashboard against it)
REQUESTS = "mur_http_requests"
DURATION = "mur_http_request_duration_seconds"
QUOTA = "mur_quota_rejections"
ANSWERS = "mur_forecast_answers"
SERVED_VERSION = "mur_served_model_version"
RECORDED = "mur_forecasts_recorded"
RESOLVED = "mur_forecasts_resolved"
SKILL = "mur_rolling_skill"
COVERAGE = "mur_rolling_coverage"
DB_UP = "mur_metrics_db_up"
HUB_UP = "mur_metrics_hub_up"
REPLICAS = "mur_metrics_replicas"
FAMILIES = {
    REQUESTS: "counter",
    DURATION: "histogram",
    QUOTA: "counter",
    ANSWERS: "counter",
    SERVED_VERSION: "gauge",
    RECORDED: "counter",
    RESOLVED: "counter",
    SKILL: "gauge",
    COVERAGE: "gauge",
    DB_UP: "gauge",
    HUB_UP: "gauge",
    REPLICAS: "gauge",
}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def sample_names() -> set[str]:
    """Every sample name ``/metrics`` can show (``mur_http_requests_total``, ``..._bucket``, ...)."""
    return {name + suffix for name, kind in FAMILIES.items() for suffix in SUFFIXES[kind]}


# --- counting on one replica -------------------------------------------------------------------------------
@dataclass
class Counts:
    """Cumulative request counts of one replica (or their sum over replicas)."""

    requests: dict[tuple[str, str, str], int] = field(default_factory=dict)
    """(route, method, status) -> requests"""
    buckets: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    """(route, method) -> requests per latency bucket (not cumulative; the last one is ``+Inf``)"""
    seconds: dict[tuple[str, str], float] = field(default_factory=dict)
    """(route, method) -> total latency"""
    quota: dict[str, int] = field(default_factory=dict)
    """route -> 429 answers from the quota"""
    answers: dict[str, int] = field(default_factory=dict)
    """source -> latest-candle forecasts obtained (``ApiService.answer_counts``: cache, shared, forecaster)"""

    def total(self) -> int:
        return sum(self.requests.values())

    def add(self, other: Counts) -> None:
        for key, n in other.requests.items():
            self.requests[key] = self.requests.get(key, 0) + n
        for hkey, counts in other.buckets.items():
            mine = self.buckets.setdefault(hkey, [0] * (len(BUCKETS) + 1))
            for i, n in enumerate(counts):
                mine[i] += n
        for hkey, s in other.seconds.items():
            self.seconds[hkey] = self.seconds.get(hkey, 0.0) + s
        for route, n in other.quota.items():
            self.quota[route] = self.quota.get(route, 0) + n
        for source, n in other.answers.items():
            self.answers[source] = self.answers.get(source, 0) + n

    def copy(self) -> Counts:
        copied = Counts()
        copied.add(self)
        return copied


class RequestMetrics:
    """The counters of this process (one event loop: no locks needed)."""

    def __init__(self) -> None:
        self.counts = Counts()

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        counts = self.counts
        key = (route, method, str(status))
        counts.requests[key] = counts.requests.get(key, 0) + 1
        hkey = (route, method)
        buckets = counts.buckets.setdefault(hkey, [0] * (len(BUCKETS) + 1))
        buckets[bisect.bisect_left(BUCKETS, seconds)] += 1  # le: a request of exactly 0.1 s is in "0.1"
        counts.seconds[hkey] = counts.seconds.get(hkey, 0.0) + seconds
        if status == 429:  # the API's only 429 is the exhausted monthly quota
            counts.quota[route] = counts.quota.get(route, 0) + 1

    def snapshot(self) -> Counts:
        return self.counts.copy()


def route_template(routes: Iterable[BaseRoute], scope: Scope) -> str:
    """The path template of the route a request is for (``/v1/forecast/{pair}``); a route that matches the path
    but not the method (405) names it too; no route at all is :data:`UNMATCHED`."""
    partial: str | None = None
    for route in routes:
        match, _ = route.matches(scope)
        path = getattr(route, "path", None)
        if match == Match.FULL:
            return path if isinstance(path, str) else UNMATCHED
        if match == Match.PARTIAL and partial is None and isinstance(path, str):
            partial = path
    return partial or UNMATCHED


class MetricsMiddleware:
    """Pure ASGI middleware around everything else (the :class:`~serve_app.api.RequestGuard` included), so its
    413, 401 and 500 answers are counted too: requests by route, method and status, and their latency."""

    def __init__(self, app: ASGIApp, *, recorder: RequestMetrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.recorder = recorder
        self.routes = routes  # the router's list: routes added after the middleware count too

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = route_template(self.routes, scope)
        method = scope["method"] if scope["method"] in METHODS else "other"
        status = 0
        started = time.perf_counter()

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        except Exception:
            status = status or 500
            raise
        finally:
            self.recorder.observe(route, method, status or CLIENT_GONE, time.perf_counter() - started)


# --- totals across replicas --------------------------------------------------------------------------------
class MetricsHub:
    """The latest cumulative :class:`Counts` of every replica, and their sum. Plain and synchronous: a
    :class:`LocalHub` wraps it in one process, a detached Ray actor on Serve (:mod:`serve_app.ingress`)."""

    def __init__(self, retire_after_s: float = RETIRE_AFTER_S, clock: Callable[[], float] = time.monotonic):
        self.retire_after_s = retire_after_s
        self.clock = clock
        self.latest: dict[str, tuple[float, Counts]] = {}
        self.retired = Counts()
        self.gone: set[str] = set()

    def push(self, replica_id: str, counts: Counts) -> None:
        """Keep ``counts`` as ``replica_id``'s latest (never older ones: a push out of order is dropped)."""
        now = self.clock()
        previous = self.latest.get(replica_id)
        if replica_id not in self.gone and (previous is None or counts.total() >= previous[1].total()):
            self.latest[replica_id] = (now, counts)
        for rid, (seen, last) in list(self.latest.items()):
            if now - seen > self.retire_after_s:  # folded once; a late push from it would count it twice
                self.retired.add(last)
                del self.latest[rid]
                self.gone.add(rid)

    def totals(self, replica_id: str | None = None, counts: Counts | None = None) -> tuple[Counts, int]:
        """(the sum over every replica, retired ones included; the number of live replicas), after pushing
        ``counts`` when given."""
        if replica_id is not None and counts is not None:
            self.push(replica_id, counts)
        total = self.retired.copy()
        for _, last in self.latest.values():
            total.add(last)
        return total, len(self.latest)


class Hub(Protocol):
    """Where replicas push their counts and a scrape reads the totals."""

    async def push(self, replica_id: str, counts: Counts) -> None: ...

    async def totals(self, replica_id: str, counts: Counts) -> tuple[Counts, int]: ...


class LocalHub:
    """A :class:`MetricsHub` in this process (tests, one replica)."""

    def __init__(self, hub: MetricsHub | None = None) -> None:
        self.hub = hub or MetricsHub()

    async def push(self, replica_id: str, counts: Counts) -> None:
        self.hub.push(replica_id, counts)

    async def totals(self, replica_id: str, counts: Counts) -> tuple[Counts, int]:
        return self.hub.totals(replica_id, counts)


# --- what is read at scrape time ---------------------------------------------------------------------------
@dataclass(frozen=True)
class DbSeries:
    """Per pair: forecasts recorded and resolved (every horizon), the latest rolling skill and coverage."""

    counts: Mapping[str, tuple[int, int]]
    skill: Mapping[str, float]
    coverage: Mapping[str, float]


def read_db_series(db: Database) -> DbSeries:
    """The PostgreSQL-derived series (blocking: run on the service's database threads)."""
    from mur.monitoring.store import forecast_counts, latest_reports

    counts = forecast_counts(db)
    reports = latest_reports(db)
    return DbSeries(
        counts=counts,
        skill={p: r.skill for p, r in reports.items() if r.skill is not None},
        coverage={p: r.coverage for p, r in reports.items() if r.coverage is not None},
    )


def served_versions(snapshot: Mapping[str, Any]) -> dict[str, float]:
    """Each pair's champion version from a registry watcher snapshot (``{"targets": {pair: {"version"}}}``)."""
    versions: dict[str, float] = {}
    for pair, target in (snapshot.get("targets") or {}).items():
        version = target.get("version") if isinstance(target, Mapping) else None
        try:
            versions[str(pair)] = float(version)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
    return versions


class _Families:
    """A collector over metric families built beforehand (the scrape gathers them asynchronously first)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _cumulative(counts: Sequence[int]) -> list[tuple[str, float]]:
    running, out = 0, []
    for bound, n in zip((*BUCKETS, float("inf")), counts, strict=True):
        running += n
        out.append((floatToGoString(bound), float(running)))
    return out


def families(
    totals: Counts,
    *,
    replicas: int,
    hub_ok: bool,
    versions: Mapping[str, float] | None,
    db: DbSeries | None,
) -> list[Metric]:
    """Every metric family of a scrape (``versions``/``db``: None when they could not be read)."""
    requests = CounterMetricFamily(
        REQUESTS,
        "HTTP requests answered, by route template, method and status",
        labels=["route", "method", "status"],
    )
    for (route, method, status), n in sorted(totals.requests.items()):
        requests.add_metric([route, method, status], n)
    duration = HistogramMetricFamily(
        DURATION,
        "time from request to the end of its answer, by route template and method",
        labels=["route", "method"],
    )
    for (route, method), counts in sorted(totals.buckets.items()):
        duration.add_metric([route, method], _cumulative(counts), totals.seconds.get((route, method), 0.0))
    quota = CounterMetricFamily(QUOTA, "429 answers: the monthly quota was used up", labels=["route"])
    for route, n in sorted(totals.quota.items()):
        quota.add_metric([route], n)
    answers = CounterMetricFamily(
        ANSWERS,
        "latest-candle forecasts the API obtained, by source: its answer cache, a call already in flight "
        "(shared), or a Forecaster call",
        labels=["source"],
    )
    for source, n in sorted(totals.answers.items()):
        answers.add_metric([source], n)
    out: list[Metric] = [requests, duration, quota, answers]
    out.append(
        GaugeMetricFamily(REPLICAS, "ingress replicas whose counts are in these totals", value=replicas)
    )
    out.append(
        GaugeMetricFamily(
            HUB_UP, "1: the totals are every replica's; 0: this replica's only", value=int(hub_ok)
        )
    )
    if versions is not None:
        served = GaugeMetricFamily(SERVED_VERSION, "registry version of the pair's champion", labels=["pair"])
        for pair, version in sorted(versions.items()):
            served.add_metric([pair], version)
        out.append(served)
    out.append(
        GaugeMetricFamily(
            DB_UP, "1: the PostgreSQL-derived series below could be read", value=int(db is not None)
        )
    )
    if db is not None:
        recorded = CounterMetricFamily(RECORDED, "forecast rows recorded (every horizon)", labels=["pair"])
        resolved = CounterMetricFamily(RESOLVED, "forecast rows whose actual close is known", labels=["pair"])
        for pair, (n, done) in sorted(db.counts.items()):
            recorded.add_metric([pair], n)
            resolved.add_metric([pair], done)
        skill = GaugeMetricFamily(
            SKILL, "latest monitoring report: 1 - MAE_model / MAE_persistence", labels=["pair"]
        )
        for pair, value in sorted(db.skill.items()):
            skill.add_metric([pair], value)
        coverage = GaugeMetricFamily(
            COVERAGE, "latest monitoring report: share of closes inside the range", labels=["pair"]
        )
        for pair, value in sorted(db.coverage.items()):
            coverage.add_metric([pair], value)
        out += [recorded, resolved, skill, coverage]
    return out


def render(metrics: list[Metric]) -> bytes:
    """The text exposition (format 0.0.4) of ``metrics``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(metrics))
    return generate_latest(registry)


# --- one replica's view ------------------------------------------------------------------------------------
class ApiMetrics:
    """This replica's counters, the hub they are totalled in, and the scrape (``GET /metrics``)."""

    def __init__(
        self,
        hub: Hub | None = None,
        *,
        replica_id: str = "local",
        db_reader: Callable[[Database], DbSeries] = read_db_series,
        db_timeout_s: float = DB_TIMEOUT_S,
    ) -> None:
        self.recorder = RequestMetrics()
        self.answer_counts: Callable[[], Mapping[str, int]] | None = None
        """Where the answer sources are counted (``create_api`` wires the service's)."""
        self.hub: Hub = hub or LocalHub()
        self.replica_id = replica_id
        self.db_reader = db_reader
        self.db_timeout_s = db_timeout_s

    def snapshot(self) -> Counts:
        """This replica's cumulative counts: its requests and where its forecasts came from."""
        counts = self.recorder.snapshot()
        if self.answer_counts is not None:
            counts.answers = dict(self.answer_counts())
        return counts

    async def push(self) -> None:
        await asyncio.wait_for(self.hub.push(self.replica_id, self.snapshot()), HUB_TIMEOUT_S)

    async def push_forever(self, interval_s: float = PUSH_INTERVAL_S) -> None:
        """Push this replica's counts every ``interval_s`` (a failure is logged once until a push works)."""
        failing = False
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.push()
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    log.warning("metrics: pushing the counts to the hub failed (%s); retrying", exc)
                failing = True

    async def _totals(self) -> tuple[Counts, int, bool]:
        own = self.snapshot()
        try:
            totals, replicas = await asyncio.wait_for(self.hub.totals(self.replica_id, own), HUB_TIMEOUT_S)
            return totals, replicas, True
        except Exception as exc:  # still answer: this replica's own counts, marked mur_metrics_hub_up 0
            log.warning("metrics: the hub did not answer (%s); reporting this replica only", exc)
            return own, 1, False

    async def _versions(self, service: ApiService) -> dict[str, float] | None:
        try:
            return served_versions(await asyncio.wait_for(service.registry.snapshot(), REGISTRY_TIMEOUT_S))
        except Exception as exc:
            log.warning("metrics: no registry snapshot (%s)", exc)
            return None

    async def _db(self, service: ApiService) -> DbSeries | None:
        try:
            return await asyncio.wait_for(service._blocking(self.db_reader, service.db), self.db_timeout_s)
        except Exception as exc:
            log.warning("metrics: PostgreSQL series unavailable (%s)", exc)
            return None

    async def exposition(self, service: ApiService) -> bytes:
        """The scrape: the totals over every replica, the served versions and the PostgreSQL series."""
        (totals, replicas, hub_ok), versions, db = await asyncio.gather(
            self._totals(), self._versions(service), self._db(service)
        )
        return render(families(totals, replicas=replicas, hub_ok=hub_ok, versions=versions, db=db))
