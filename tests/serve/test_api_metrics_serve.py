"""``GET /metrics`` through the real Serve HTTP port (HAProxy in front of the ingress replicas): requests are
counted with Ray's metrics API, exported by the node's Ray metrics agent, and read back by whichever replica
answers the scrape, one series per replica; the sum over replicas counts every request."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from serve_helpers import ServeStack, wait_until

pytestmark = [pytest.mark.services, pytest.mark.serve]

EXPORT_S = 60
"""How long a count may take to show: a worker reports to its node's metrics agent every few seconds."""


def _samples(stack: ServeStack, name: str) -> list[Sample]:
    response = httpx.get(f"{stack.url}/metrics", timeout=30)  # no token: the operators' scrape
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return [s for f in text_string_to_metric_families(response.text) for s in f.samples if s.name == name]


def _requests(stack: ServeStack, route: str, method: str, status: str) -> float:
    """``sum(mur_http_requests_total{route, method, status})``: over every replica."""
    wanted = {"route": route, "method": method, "status": status}
    found = _samples(stack, "mur_http_requests_total")
    assert all(s.labels.get("replica") for s in found), found  # one series per replica
    return sum(s.value for s in found if wanted.items() <= s.labels.items())


def _answers(stack: ServeStack) -> dict[str, float]:
    answers: dict[str, float] = {}
    for s in _samples(stack, "mur_forecast_answers_total"):
        answers[s.labels["source"]] = answers.get(s.labels["source"], 0) + s.value
    return answers


def test_metrics_count_every_request_by_route(serve_stack: ServeStack) -> None:
    _, token = serve_stack.make_user()
    before = _requests(serve_stack, "/v1/forecast/{pair}", "GET", "200")
    with serve_stack.client(token) as client:
        response = client.get(f"/v1/forecast/{serve_stack.pair}")
        assert response.status_code == 200, response.text
        for _ in range(3):  # a route, method and status no other test sends: exactly 3
            assert client.patch("/v1/pairs").status_code == 405
    wait_until(
        lambda: _requests(serve_stack, "/v1/pairs", "PATCH", "405") >= 3, EXPORT_S, "3 PATCHes in /metrics"
    )
    assert _requests(serve_stack, "/v1/pairs", "PATCH", "405") == 3
    wait_until(
        lambda: _requests(serve_stack, "/v1/forecast/{pair}", "GET", "200") >= before + 1,
        EXPORT_S,
        "the forecast in /metrics",
    )
    answers = wait_until(lambda: _answers(serve_stack) or None, EXPORT_S, "forecast answers by source")
    assert set(answers) <= {"cache", "shared", "forecaster"} and answers.get("forecaster", 0) >= 1, answers
    # 1 unless a node exports no metrics (a local worker node that another module started)
    assert [s.value in (0, 1) for s in _samples(serve_stack, "mur_metrics_ray_up")] == [True]
    assert _samples(serve_stack, "mur_metrics_replicas")[0].value >= 1
