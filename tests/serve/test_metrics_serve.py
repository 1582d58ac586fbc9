"""``GET /metrics`` through the real Serve HTTP port (HAProxy in front of the ingress replicas): after a forecast,
the totals the replicas pushed to the metrics hub (a detached Ray actor) count it under its route template."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from serve_helpers import ServeStack, wait_until

pytestmark = [pytest.mark.services, pytest.mark.serve]


def _samples(stack: ServeStack, name: str) -> list[Sample]:
    response = httpx.get(f"{stack.url}/metrics", timeout=30)  # no token: the operators' scrape
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return [s for f in text_string_to_metric_families(response.text) for s in f.samples if s.name == name]


def _forecasts_counted(stack: ServeStack) -> float:
    route = {"route": "/v1/forecast/{pair}", "method": "GET", "status": "200"}
    return sum(s.value for s in _samples(stack, "mur_http_requests_total") if s.labels == route)


def _answers(stack: ServeStack) -> dict[str, float]:
    return {s.labels["source"]: s.value for s in _samples(stack, "mur_forecast_answers_total")}


def test_metrics_count_a_forecast_by_route(serve_stack: ServeStack) -> None:
    _, token = serve_stack.make_user()
    before = _forecasts_counted(serve_stack)
    with serve_stack.client(token) as client:
        response = client.get(f"/v1/forecast/{serve_stack.pair}")
    assert response.status_code == 200, response.text
    # the replica that answered pushes its counts when scraped, or within a few seconds if another one is
    wait_until(lambda: _forecasts_counted(serve_stack) >= before + 1, 30, "the forecast in /metrics")
    answers = wait_until(lambda: _answers(serve_stack) or None, 30, "forecast answers by source")
    assert set(answers) <= {"cache", "shared", "forecaster"} and answers.get("forecaster", 0) >= 1, answers
