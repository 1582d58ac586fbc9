"""``GET /metrics`` in-process (fast tier): the API over an ``ApiService`` with fake forecasters, a stub database
(auth and quota replaced by fakes) and fake PostgreSQL series; Ray's metrics exports stood in for by
``api_fakes.ExportedMeters`` (the replicas' series as Ray's agent exports them). What an operator's Prometheus
scrapes, parsed with prometheus_client's text parser. The real PostgreSQL series:
tests/serve/test_metrics_pg.py; Ray's real metrics through the Serve stack: tests/serve/test_api_metrics_serve.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from api_fakes import PAIR, VERSION, ExportedMeters, FakeForecaster, FakeRegistry, exported_metrics, rows
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

import mur.db
import serve_app.service
from mur.db import QuotaResult, TokenOwner
from mur.errors import AuthError
from mur.serving.http import QuotaExhaustedError, bearer_token
from serve_app.api import MAX_BODY_BYTES, create_api
from serve_app.metrics import BUCKETS, ApiMetrics, DbSeries, ray_series, sample_names
from serve_app.service import ApiService

BROKEN = "btc_usdt"  # its forecaster raises: a JSON 500
FORECAST = "/v1/forecast/{pair}"
OWNERS = {
    "good": TokenOwner(token_id=1, user_id=1, username="alice", roles=("member",)),
    "broke": TokenOwner(token_id=2, user_id=2, username="bob", roles=("member",)),
}
DB = DbSeries(counts={PAIR: (12, 9)}, skill={PAIR: 0.125}, coverage={PAIR: 0.875})


class StubDb:
    """The database the service holds; auth, quota and recording are replaced below."""

    def close(self) -> None:
        pass


def fake_authenticate(_: Any, authorization: str | None) -> TokenOwner:
    token = bearer_token(authorization)
    if token not in OWNERS:
        raise AuthError("invalid or revoked API token")
    return OWNERS[token]


def fake_charge(_: Any, owner: TokenOwner, commit_if: Any = None) -> QuotaResult:
    allowed = owner.username == "alice"
    quota = QuotaResult(
        allowed=allowed, used=1 if allowed else 10, limit=10, reset_at=datetime(2030, 1, 1, tzinfo=UTC)
    )
    if not allowed:
        raise QuotaExhaustedError(quota)
    return quota


def failing_reader(_: Any) -> DbSeries:
    raise RuntimeError("PostgreSQL is down")


@dataclass
class App:
    client: TestClient
    service: ApiService
    metrics: ApiMetrics
    registry: FakeRegistry


@pytest.fixture(autouse=True)
def _fake_db_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serve_app.service, "authenticate", fake_authenticate)
    monkeypatch.setattr(serve_app.service, "charge", fake_charge)
    monkeypatch.setattr(serve_app.service, "check_quota", fake_charge)
    monkeypatch.setattr(mur.db, "record_forecast_body", lambda *_: None)


def make_app(metrics: ApiMetrics) -> Iterator[App]:
    registry = FakeRegistry()
    service = ApiService(
        db=StubDb(),  # type: ignore[arg-type]
        forecasters={PAIR: FakeForecaster(PAIR), BROKEN: FakeForecaster(BROKEN, broken=True)},
        registry=registry,
        db_threads=2,
    )
    try:
        with TestClient(create_api(service, metrics=metrics), raise_server_exceptions=False) as client:
            yield App(client, service, metrics, registry)
    finally:
        service.close()


@pytest.fixture
def app() -> Iterator[App]:
    yield from make_app(exported_metrics(db_reader=lambda _: DB))


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def scrape(client: TestClient) -> dict[str, Any]:
    """``/metrics`` parsed: {sample name: {frozenset(labels): value}} and the families' types."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(response.text):
        types[family.name] = family.type
        for sample in family.samples:
            samples.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return {"samples": samples, "types": types}


def value(scraped: dict[str, Any], name: str, **labels: str) -> float | None:
    """The sum of ``name``'s samples that carry ``labels`` (over replicas), None when there is none."""
    found = [v for k, v in scraped["samples"].get(name, {}).items() if set(labels.items()) <= k]
    return sum(found) if found else None


def requests_of(scraped: dict[str, Any]) -> dict[tuple[str, str, str], float]:
    """``sum by (route, method, status) (mur_http_requests_total)``: the totals over every replica."""
    totals: dict[tuple[str, str, str], float] = {}
    for k, v in scraped["samples"].get("mur_http_requests_total", {}).items():
        key = (dict(k)["route"], dict(k)["method"], dict(k)["status"])
        totals[key] = totals.get(key, 0) + v
    return totals


def drive(client: TestClient) -> None:
    """Two 200s, then a 401, 404 (unknown pair), 429 (quota), 500, 413, 405 and a path no route has."""
    url = f"/v1/forecast/{PAIR}"
    assert client.get(url, headers=auth("good")).status_code == 200
    assert client.post(url, json={"candles": rows()}, headers=auth("good")).status_code == 200
    assert client.get(url).status_code == 401
    assert client.get("/v1/forecast/xrp_usdt", headers=auth("good")).status_code == 404
    assert client.get(url, headers=auth("broke")).status_code == 429
    assert client.get(f"/v1/forecast/{BROKEN}", headers=auth("good")).status_code == 500
    too_big = client.post(url, content=b"x" * (MAX_BODY_BYTES + 1), headers=auth("good"))
    assert too_big.status_code == 413
    assert client.delete("/v1/pairs", headers=auth("good")).status_code == 405
    assert client.get("/no/such/path/12345").status_code == 404


# --------------------------------------------------------------------------------------------------------
def test_requests_are_counted_by_route_template_method_and_status(app: App) -> None:
    drive(app.client)
    scraped = scrape(app.client)  # no token needed
    assert requests_of(scraped) == {
        (FORECAST, "GET", "200"): 1,
        (FORECAST, "POST", "200"): 1,
        (FORECAST, "GET", "401"): 1,
        (FORECAST, "GET", "404"): 1,
        (FORECAST, "GET", "429"): 1,
        (FORECAST, "GET", "500"): 1,
        (FORECAST, "POST", "413"): 1,
        ("/v1/pairs", "DELETE", "405"): 1,
        ("unmatched", "GET", "404"): 1,
    }
    assert scraped["types"]["mur_http_requests"] == "counter"
    assert value(scraped, "mur_quota_rejections_total", route=FORECAST) == 1
    assert value(scraped, "mur_metrics_ray_up") == 1 and value(scraped, "mur_metrics_replicas") == 1
    assert value(scraped, "mur_forecast_answers_total", source="forecaster") == 2  # GET and POST above

    again = scrape(app.client)  # the first scrape is counted by the second one
    assert requests_of(again)[("/metrics", "GET", "200")] == 1
    assert requests_of(again)[(FORECAST, "GET", "200")] == 1


def test_latency_histogram_has_every_bucket(app: App) -> None:
    drive(app.client)
    scraped = scrape(app.client)
    assert scraped["types"]["mur_http_request_duration_seconds"] == "histogram"
    buckets = {
        dict(k)["le"]: v
        for k, v in scraped["samples"]["mur_http_request_duration_seconds_bucket"].items()
        if dict(k)["route"] == FORECAST and dict(k)["method"] == "GET"
    }
    assert len(buckets) == len(BUCKETS) + 1 and buckets["+Inf"] == 5  # 200, 401, 404, 429, 500
    assert list(buckets.values()) == sorted(buckets.values()), "cumulative buckets"
    assert value(scraped, "mur_http_request_duration_seconds_count", route=FORECAST, method="GET") == 5
    total = value(scraped, "mur_http_request_duration_seconds_sum", route=FORECAST, method="GET")
    assert total is not None and 0 < total < 60


def test_served_versions_and_the_database_series(app: App) -> None:
    app.registry.targets = {PAIR: VERSION, "sol_usdt": 3}
    scraped = scrape(app.client)
    assert value(scraped, "mur_served_model_version", pair=PAIR) == VERSION
    assert value(scraped, "mur_served_model_version", pair="sol_usdt") == 3
    assert value(scraped, "mur_metrics_db_up") == 1
    assert value(scraped, "mur_forecasts_recorded_total", pair=PAIR) == 12
    assert value(scraped, "mur_forecasts_resolved_total", pair=PAIR) == 9
    assert value(scraped, "mur_rolling_skill", pair=PAIR) == 0.125
    assert value(scraped, "mur_rolling_coverage", pair=PAIR) == 0.875
    assert set(scraped["samples"]) <= sample_names()


def test_a_database_or_registry_failure_only_drops_those_series() -> None:
    for app in make_app(exported_metrics(db_reader=failing_reader)):

        async def no_registry() -> dict[str, Any]:
            raise RuntimeError("watcher gone")

        app.registry.snapshot = no_registry  # type: ignore[method-assign]
        app.client.get(f"/v1/forecast/{PAIR}", headers=auth("good"))
        scraped = scrape(app.client)
        assert value(scraped, "mur_metrics_db_up") == 0
        for name in ("mur_forecasts_recorded_total", "mur_rolling_skill", "mur_served_model_version"):
            assert name not in scraped["samples"], name
        assert requests_of(scraped) == {(FORECAST, "GET", "200"): 1}


def test_metrics_is_not_in_the_openapi_schema_and_needs_no_token(app: App) -> None:
    assert "/metrics" not in app.client.get("/openapi.json").json()["paths"]
    assert app.client.get("/metrics", headers=auth("not-a-token")).status_code == 200


def test_every_replicas_series_are_in_a_scrape_on_either() -> None:
    """Two replicas (two apps): a scrape on either shows both replicas' series (Prometheus sums them); a
    third application's series on the same Ray cluster are left out."""
    first, second, other = ExportedMeters("r1"), ExportedMeters("r2"), ExportedMeters("r3", app="other")
    other.observe(FORECAST, "GET", 200, 0.01)
    for a in make_app(exported_metrics(first, second, other, db_reader=lambda _: DB)):
        for b in make_app(exported_metrics(second, first, other)):
            for _ in range(3):
                assert a.client.get(f"/v1/forecast/{PAIR}", headers=auth("good")).status_code == 200
            assert b.client.get(f"/v1/forecast/{PAIR}", headers=auth("good")).status_code == 200
            assert b.client.get(f"/v1/forecast/{PAIR}", headers=auth("broke")).status_code == 429
            for client in (a.client, b.client):
                scraped = scrape(client)
                assert requests_of(scraped)[(FORECAST, "GET", "200")] == 4
                assert requests_of(scraped)[(FORECAST, "GET", "429")] == 1
                assert value(scraped, "mur_http_requests_total", replica="r1", route=FORECAST) == 3
                assert value(scraped, "mur_http_requests_total", replica="r3") is None
                assert value(scraped, "mur_quota_rejections_total", route=FORECAST) == 1
                assert (
                    value(scraped, "mur_http_request_duration_seconds_count", route=FORECAST, method="GET")
                    == 5
                )
                assert value(scraped, "mur_metrics_replicas") == 2


def test_exports_that_cannot_be_read_leave_the_state_series() -> None:
    async def unreachable() -> tuple[list[str], bool]:
        raise ConnectionError("GCS gone")

    for app in make_app(ApiMetrics(ExportedMeters(), app="mur", exports=unreachable, db_reader=lambda _: DB)):
        app.client.get(f"/v1/forecast/{PAIR}", headers=auth("good"))
        scraped = scrape(app.client)
        assert value(scraped, "mur_metrics_ray_up") == 0 and value(scraped, "mur_metrics_replicas") == 0
        assert requests_of(scraped) == {}
        assert value(scraped, "mur_forecasts_recorded_total", pair=PAIR) == 12


# --- Ray's export format ---------------------------------------------------------------------------------
RAY_LABELS = (
    'Component="core_worker",NodeAddress="10.0.0.{node}",SessionName="s",Version="2.60.0",WorkerId="{w}"'
)
SERVE = 'application="mur",deployment="api",replica="{r}"'


def ray_line(name: str, value: float, node: int, worker: str, replica: str, **tags: str) -> str:
    labels = ",".join([RAY_LABELS.format(node=node, w=worker), SERVE.format(r=replica)])
    labels += "".join(f',{k}="{v}"' for k, v in tags.items())
    return f"ray_{name}{{{labels}}} {value}"


def test_ray_series_keep_the_replica_and_sum_what_several_workers_export() -> None:
    """Ray's own labels are dropped; a replica's series that two exports carry (its worker restarted under
    the same replica id, or two nodes) add up; buckets keep Ray's order; other families are ignored."""
    route = {"route": FORECAST, "method": "GET"}
    node1 = "\n".join(
        [
            "# TYPE ray_mur_http_requests_total counter",
            ray_line("mur_http_requests_total", 3, 1, "w1", "r1", **route, status="200"),
            ray_line("mur_http_requests_total", 2, 1, "w2", "r2", **route, status="200"),
            "# TYPE ray_mur_http_request_duration_seconds histogram",
            *(
                ray_line("mur_http_request_duration_seconds_bucket", n, 1, "w1", "r1", **route, le=le)
                for le, n in (("0.1", 1), ("1.0", 3), ("+Inf", 3))
            ),
            ray_line("mur_http_request_duration_seconds_count", 3, 1, "w1", "r1", **route),
            ray_line("mur_http_request_duration_seconds_sum", 1.65, 1, "w1", "r1", **route),
            "# TYPE ray_serve_num_http_requests_total counter",
            ray_line("serve_num_http_requests_total", 9, 1, "w1", "r1"),
        ]
    )
    node2 = "\n".join(
        [
            "# TYPE ray_mur_http_requests_total counter",
            ray_line("mur_http_requests_total", 4, 2, "w9", "r1", **route, status="200"),
        ]
    )
    series, replicas = ray_series([node1, node2], "mur")
    assert replicas == 2
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for family in series for s in family.samples
    }
    r1 = {**route, "status": "200", "replica": "r1"}
    assert samples[("mur_http_requests_total", tuple(sorted(r1.items())))] == 7
    assert {n for n, _ in samples} == {
        "mur_http_requests_total",
        "mur_http_request_duration_seconds_bucket",
        "mur_http_request_duration_seconds_count",
        "mur_http_request_duration_seconds_sum",
    }
    buckets = [s.labels["le"] for f in series for s in f.samples if s.name.endswith("_bucket")]
    assert buckets == ["0.1", "1.0", "+Inf"]
    assert all(
        {k for k, _ in labels} <= {"route", "method", "status", "le", "replica"} for _, labels in samples
    )
    others, none = ray_series([node1], "another app")
    assert none == 0 and not any(family.samples for family in others)
