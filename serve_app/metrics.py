"""Prometheus metrics of the API (``GET /metrics``, docs/metrics.md), through Ray's metrics API.

Traffic is counted with Ray Serve's metrics (:mod:`ray.serve.metrics`, over :mod:`ray.util.metrics`): each
ingress replica records its requests (:class:`~serve_app.api.RequestGuard`) and where its forecasts came from
(:class:`AnswerCounts`) in :class:`RequestMeters`; Ray tags them with the replica and the application, and
each node's metrics agent exports them on the node's metrics export port, named ``ray_mur_*``. A scrape
reaches one replica at random (HAProxy in front of autoscaled replicas, possibly on several nodes), so
``GET /metrics`` reads the export of every alive Ray node (:func:`read_ray_exports`) and answers this
application's ``mur_*`` series, one per ingress replica (:func:`ray_series`; Prometheus sums them).

What describes state rather than traffic is read at scrape time: the version each pair serves from the
registry watcher's snapshot, the forecasts recorded/resolved, the latest rolling skill and coverage and the
paper portfolio (paper, not advice) from PostgreSQL (:mod:`mur.monitoring.store`, bounded by
:data:`DB_TIMEOUT_S`; a failure omits those series and sets ``mur_metrics_db_up 0``, it never fails the scrape).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

if TYPE_CHECKING:
    from mur.db import Database
    from serve_app.service import ApiService, RegistryView

log = logging.getLogger("ray.serve")
T = TypeVar("T")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format 0.0.4."""
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Upper bounds (seconds) of the latency histogram's buckets; ``+Inf`` comes on top."""
UNMATCHED = "unmatched"
"""The ``route`` of a request that matches no route (any path: the label's values stay bounded)."""
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
CLIENT_GONE = 499
"""The ``status`` of a request that ended without an answer (the client went away)."""
DB_TIMEOUT_S = 3.0
REGISTRY_TIMEOUT_S = 2.0
EXPORT_TIMEOUT_S = 2.0
PAPER_BUDGET_S = 1.0
"""Time a scrape spends on the paper portfolios (about 15 ms a pair); the pairs after it are left out."""
RAY_PREFIX = "ray_"
"""Ray's prefix on application metrics in its export."""
KEPT_LABELS = frozenset({"route", "method", "status", "source", "le", "replica"})
"""The labels kept from Ray's export (its own: node, worker, session, version, deployment... are dropped)."""

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
RAY_UP = "mur_metrics_ray_up"
REPLICAS = "mur_metrics_replicas"
PAPER = {k: f"mur_paper_{k}" for k in ("equity", "drawdown", "exposure")}
FAMILIES = {
    **dict.fromkeys((REQUESTS, QUOTA, ANSWERS, RECORDED, RESOLVED), "counter"),
    DURATION: "histogram",
    **dict.fromkeys((SERVED_VERSION, SKILL, COVERAGE, DB_UP, RAY_UP, REPLICAS, *PAPER.values()), "gauge"),
}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def sample_names() -> set[str]:
    """Every sample name ``/metrics`` can show (``mur_http_requests_total``, ``..._bucket``, ...)."""
    return {name + suffix for name, kind in FAMILIES.items() for suffix in SUFFIXES[kind]}


# --- counting on one replica (Ray metrics) -----------------------------------------------------------------
class RequestMeters:
    """This replica's Ray metrics; in a Serve replica Ray adds the ``deployment``, ``replica`` and
    ``application`` tags (outside Ray, in-process tests, recording is a no-op)."""

    def __init__(self) -> None:
        from ray.serve import metrics as serve_metrics  # Ray only where counting happens (not for the tests)

        self.requests = serve_metrics.Counter(
            REQUESTS,
            "HTTP requests answered, by route template, method and status",
            tag_keys=("route", "method", "status"),  # type: ignore[arg-type]  # Ray types it tuple[str]
        )
        self.duration = serve_metrics.Histogram(
            DURATION,
            "time from request to the end of its answer, by route template and method",
            boundaries=list(BUCKETS),
            tag_keys=("route", "method"),  # type: ignore[arg-type]
        )
        self.quota = serve_metrics.Counter(
            QUOTA, "429 answers: the monthly quota was used up", tag_keys=("route",)
        )
        self.answers = serve_metrics.Counter(
            ANSWERS,
            "latest-candle forecasts the API obtained, by source: its answer cache, a call already in flight "
            "(shared), or a Forecaster call",
            tag_keys=("source",),
        )

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """One request: ``status`` 0 for one that ended without an answer, an unknown ``method`` is ``other``."""
        method = method if method in METHODS else "other"
        status = status or CLIENT_GONE
        self.requests.inc(1, tags={"route": route, "method": method, "status": str(status)})
        self.duration.observe(seconds, tags={"route": route, "method": method})
        if status == 429:  # the API's only 429 is the exhausted monthly quota
            self.quota.inc(1, tags={"route": route})


class AnswerCounts(dict[str, int]):
    """``ApiService.answer_counts`` (source -> forecasts) whose increments also go to the Ray counter."""

    def __init__(self, counts: Mapping[str, int], meters: RequestMeters) -> None:
        super().__init__(counts)
        self.meters = meters

    def __setitem__(self, source: str, n: int) -> None:
        if (added := n - self.get(source, 0)) > 0:
            self.meters.answers.inc(added, tags={"source": source})
        super().__setitem__(source, n)


def route_template(routes: Iterable[BaseRoute], scope: Scope) -> tuple[str, bool]:
    """The path template of the route a request is for (``/v1/forecast/{pair}``), and whether it matches the
    method too: a route that matches the path but not the method (405) names it as well; no route at all is
    :data:`UNMATCHED`."""
    partial: str | None = None
    for route in routes:
        match, _ = route.matches(scope)
        path = getattr(route, "path", None)
        if match == Match.FULL:
            return (path, True) if isinstance(path, str) else (UNMATCHED, True)
        if match == Match.PARTIAL and partial is None and isinstance(path, str):
            partial = path
    return partial or UNMATCHED, False


# --- every replica's counts: Ray's metrics exports ---------------------------------------------------------
def export_urls() -> list[str]:
    """The metrics export of every alive Ray node (blocking: a GCS call); none outside Ray."""
    import ray

    if not ray.is_initialized():
        return []
    urls = []
    for node in ray.nodes():
        host, port = node.get("NodeManagerAddress"), node.get("MetricsExportPort")
        if node.get("Alive") and host and port:
            urls.append(f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics")
    return urls


async def read_ray_exports() -> tuple[list[str], bool]:
    """The text of every alive node's metrics export, and whether every one answered (a node that exports
    no metrics, e.g. a local worker node, does not)."""
    urls = await asyncio.to_thread(export_urls)
    async with httpx.AsyncClient(timeout=EXPORT_TIMEOUT_S, trust_env=False) as client:
        answers = await asyncio.gather(*(client.get(url) for url in urls), return_exceptions=True)
    texts = [a.text for a in answers if isinstance(a, httpx.Response) and a.status_code == 200]
    return texts, len(texts) == len(urls)


def ray_series(texts: Iterable[str], app: str | None) -> tuple[list[Metric], int]:
    """Application ``app``'s ``ray_mur_*`` families of Ray's exports (every application's when None), renamed
    ``mur_*`` with one series per replica (Ray's other labels dropped, so a series several workers or nodes
    export is summed); and how many replicas they come from."""
    found: dict[str, Metric] = {}
    values: dict[tuple[str, str, tuple[tuple[str, str], ...]], float] = {}
    replicas: set[str] = set()
    known = sample_names()
    for text in texts:
        for family in text_string_to_metric_families(text):
            name = family.name.removeprefix(RAY_PREFIX)
            if name == family.name or name not in FAMILIES:
                continue
            found.setdefault(name, Metric(name, family.documentation, family.type))
            for sample in family.samples:
                labels = sample.labels
                sample_name = sample.name.removeprefix(RAY_PREFIX)
                if sample_name not in known or (app is not None and labels.get("application") != app):
                    continue
                kept = tuple(sorted((k, v) for k, v in labels.items() if k in KEPT_LABELS))
                key = (name, sample_name, kept)  # first seen first: the buckets keep their order
                values[key] = values.get(key, 0.0) + sample.value
                replicas.add(labels.get("replica", ""))
    for (name, sample_name, labelled), value in values.items():
        found[name].add_sample(sample_name, dict(labelled), value)
    return list(found.values()), len(replicas)


# --- what is read at scrape time ---------------------------------------------------------------------------
@dataclass(frozen=True)
class DbSeries:
    """Per pair: forecasts recorded and resolved (every horizon), the latest rolling skill and coverage."""

    counts: Mapping[str, tuple[int, int]]
    skill: Mapping[str, float]
    coverage: Mapping[str, float]
    paper: Mapping[str, Mapping[str, Mapping[str, Any] | None]] = field(default_factory=dict)
    """Per pair: the paper portfolio's strategies now (:mod:`mur.monitoring.paper`, without the EWMA rule)."""


def read_db_series(db: Database) -> DbSeries:
    """The PostgreSQL-derived series (blocking: run on the service's database threads)."""
    from mur.clock import market_clock
    from mur.errors import MurError
    from mur.evaluation.sizing import SizingRule
    from mur.monitoring.paper import paper_portfolio
    from mur.monitoring.store import forecast_counts, latest_reports

    counts = forecast_counts(db)
    reports = latest_reports(db)
    hour, rule, paper = market_clock(db.settings).hour(), SizingRule.from_settings(db.settings), {}
    deadline = time.monotonic() + PAPER_BUDGET_S
    for pair in (p for p in counts if time.monotonic() < deadline):
        with contextlib.suppress(MurError):  # none yet
            paper[pair] = paper_portfolio(db, pair, market_hour=hour, rule=rule)["strategies"]
    return DbSeries(
        counts=counts,
        skill={p: r.skill for p, r in reports.items() if r.skill is not None},
        coverage={p: r.coverage for p, r in reports.items() if r.coverage is not None},
        paper=paper,
    )


async def served_versions(registry: RegistryView) -> dict[str, float]:
    """Each pair's champion version, from the registry watcher's snapshot (``{"targets": {pair: {"version"}}}``)."""
    targets = (await registry.snapshot())["targets"]
    return {str(pair): float(target["version"]) for pair, target in targets.items()}


def _by_pair(
    kind: type[GaugeMetricFamily | CounterMetricFamily], name: str, doc: str, values: Mapping[str, float]
) -> Metric:
    family = kind(name, doc, labels=["pair"])
    for pair, value in sorted(values.items()):
        family.add_metric([pair], value)
    return family


def families(
    traffic: list[Metric],
    *,
    replicas: int,
    ray_ok: bool,
    versions: Mapping[str, float] | None,
    db: DbSeries | None,
) -> list[Metric]:
    """Every metric family of a scrape (``traffic``: :func:`ray_series`; ``versions``/``db``: None when they
    could not be read)."""
    out = list(traffic)
    out.append(GaugeMetricFamily(REPLICAS, "ingress replicas whose series this scrape shows", value=replicas))
    out.append(GaugeMetricFamily(RAY_UP, "1: every Ray node's metrics export answered", value=int(ray_ok)))
    if versions is not None:
        out.append(
            _by_pair(GaugeMetricFamily, SERVED_VERSION, "registry version of the pair's champion", versions)
        )
    ok = int(db is not None)
    out.append(GaugeMetricFamily(DB_UP, "1: the PostgreSQL-derived series below could be read", value=ok))
    if db is not None:
        recorded = {pair: n for pair, (n, _) in db.counts.items()}
        resolved = {pair: done for pair, (_, done) in db.counts.items()}
        skill_doc = "latest monitoring report: 1 - MAE_model / MAE_persistence"
        coverage_doc = "latest monitoring report: share of closes inside the range"
        out += [
            _by_pair(CounterMetricFamily, RECORDED, "forecast rows recorded (every horizon)", recorded),
            _by_pair(CounterMetricFamily, RESOLVED, "forecast rows whose actual close is known", resolved),
            _by_pair(GaugeMetricFamily, SKILL, skill_doc, db.skill),
            _by_pair(GaugeMetricFamily, COVERAGE, coverage_doc, db.coverage),
        ]
        paper = {
            k: GaugeMetricFamily(n, f"paper, not advice: {k} now", labels=["pair", "strategy"])
            for k, n in PAPER.items()
        }
        for pair, strategies in sorted(db.paper.items()):
            for name, s in strategies.items():
                values = (1 + s["total_return"], s["drawdown_now"], s["exposure_now"]) if s else ()
                for gauge, value in zip(paper.values(), values, strict=False):
                    gauge.add_metric([pair, name], value)
        out += paper.values()
    return out


def render(metrics: list[Metric]) -> bytes:
    """The text exposition (format 0.0.4) of ``metrics``."""
    return generate_latest(SimpleNamespace(collect=lambda: metrics))


# --- one replica's view ------------------------------------------------------------------------------------
class ApiMetrics:
    """This replica's Ray metrics and the scrape (``GET /metrics``) of application ``app``'s series."""

    def __init__(
        self,
        meters: RequestMeters | None = None,
        *,
        app: str | None = None,
        exports: Callable[[], Awaitable[tuple[list[str], bool]]] = read_ray_exports,
        db_reader: Callable[[Database], DbSeries] = read_db_series,
    ) -> None:
        self.meters = meters or RequestMeters()
        self.app = app
        self.exports = exports
        self.db_reader = db_reader

    async def exposition(self, service: ApiService) -> bytes:
        """The scrape: every replica's traffic series, the served versions and the PostgreSQL series."""
        exports, versions_now, db = await asyncio.gather(
            _or_none("Ray's metrics exports", self.exports(), 2 * EXPORT_TIMEOUT_S),
            _or_none("the registry snapshot", served_versions(service.registry), REGISTRY_TIMEOUT_S),
            _or_none("the PostgreSQL series", service.query(self.db_reader), DB_TIMEOUT_S),
        )
        texts, ray_ok = exports or ([], False)  # unread: still answered, marked mur_metrics_ray_up 0
        traffic, replicas = ray_series(texts, self.app)
        return render(families(traffic, replicas=replicas, ray_ok=ray_ok, versions=versions_now, db=db))


async def _or_none(what: str, call: Awaitable[T], timeout_s: float) -> T | None:
    """``call``'s result within ``timeout_s``, or None (logged): a part that fails never fails the scrape."""
    try:
        return await asyncio.wait_for(call, timeout_s)
    except Exception as exc:
        log.warning("metrics: %s could not be read (%s)", what, exc)
        return None
