"""The Serve application over real HTTP, on the real Ray head, MLflow, S3 and PostgreSQL.

Module order matters only for speed: every test leaves the app serving its champion and ready.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from serve_helpers import ServeStack, copy_version, promote, register_broken_version, wait_until

from mur.db import Database, get_usage, revoke_token
from mur.registry.download import model_bytes
from mur.serving.payload import candles_to_payload

pytestmark = [pytest.mark.services, pytest.mark.serve]


def _candles_until(pair: str, candle_time: str, seq_len: int) -> pd.DataFrame:
    """The bundled candles ending at ``candle_time`` (what the app's cache used)."""
    from mur.data import BundledMarketData

    end = pd.Timestamp(candle_time) + pd.Timedelta(hours=1)
    frame = BundledMarketData().klines(pair, start=end - pd.Timedelta(hours=seq_len + 48), end=end)
    return frame.iloc[-seq_len:].reset_index(drop=True)


def _ready(stack: ServeStack) -> dict[str, Any] | None:
    body = httpx.get(f"{stack.url}/readyz", timeout=30).json()
    return body if body["status"] == "ready" else None


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code and body["message"], body
    return body


# --------------------------------------------------------------------------------------------------


@pytest.mark.service_start
def test_probes_docs_pairs_and_models(serve_stack: ServeStack) -> None:
    stack = serve_stack
    assert httpx.get(f"{stack.url}/healthz").json() == {"status": "ok"}
    ready = wait_until(lambda: _ready(stack), 120, "/readyz ready")
    assert ready["pairs"][stack.pair]["loaded"] and ready["registry"]["registry_ok"] is True
    assert httpx.get(f"{stack.url}/docs").status_code == 200
    spec = httpx.get(f"{stack.url}/openapi.json").json()
    assert {"/v1/pairs", "/v1/models", "/v1/forecast/{pair}", "/v1/admin/reload"} <= set(spec["paths"])

    _, token = stack.make_user()
    with stack.client(token) as client:
        assert client.get("/v1/pairs").json() == {
            "pairs": [stack.pair],
            "details": [{"pair": stack.pair, "synthetic": False}],
        }
        (model,) = client.get("/v1/models").json()["models"]
    assert model["pair"] == stack.pair and model["version"] == stack.versions[stack.pair]
    assert model["alias"] == "champion" and model["loaded"] is True
    assert model["trained_window"]["start"] < model["trained_window"]["end"]
    assert isinstance(model["metrics"]["skill"], float) and model["metrics"]["mae"] > 0
    assert model["test_window"]["start"] and model["seq_len"] == stack.settings.model.context_len


def test_forecast_equals_onnxruntime_on_the_same_candles(serve_stack: ServeStack) -> None:
    from mur.model.export import load_session
    from mur.model.inference import forecast_from_candles

    stack = serve_stack
    user_id, token = stack.make_user()
    with stack.client(token) as client:
        response = client.get(f"/v1/forecast/{stack.pair}")
        assert response.status_code == 200, response.text
        got = response.json()
        candles = _candles_until(stack.pair, got["candle_time"], stack.settings.model.context_len)
        posted = client.post(
            f"/v1/forecast/{stack.pair.upper()}", json={"candles": candles_to_payload(candles)}
        )
        assert posted.status_code == 200, posted.text
    session = load_session(model_bytes(stack.direct, stack.pair, got["model_version"]))
    expected_body = forecast_from_candles(session, candles, pair=stack.pair)
    expected = expected_body["forecast"]

    assert got["model_version"] == stack.versions[stack.pair]
    assert got["candle_time"] == candles["timestamp"].iloc[-1].strftime("%Y-%m-%dT%H:%M:%SZ")
    assert got["last_close"] == float(candles["close"].iloc[-1])
    assert np.isclose(got["forecast"], expected, rtol=1e-6, atol=0), (got["forecast"], expected)
    assert (
        [h["hours"] for h in got["horizons"]] == [h["hours"] for h in expected_body["horizons"]] == [1, 4, 24]
    )
    for served, direct in zip(got["horizons"], expected_body["horizons"], strict=True):
        assert served["target_time"] == direct["target_time"] and served["level"] == direct["level"]
        assert np.allclose(
            [served[k] for k in ("lower", "median", "upper")],
            [direct[k] for k in ("lower", "median", "upper")],
            rtol=1e-6,
        )
    assert posted.json() == got
    assert response.headers["X-RateLimit-Remaining"] == str(stack.settings.serving.default_monthly_quota - 1)
    assert get_usage(Database(stack.settings, maxconn=1), user_id=user_id)[0] == 2


def test_served_forecasts_join_the_track_record_once(serve_stack: ServeStack) -> None:
    """A GET forecast is stored for the dashboard's track record, once: three GETs for the same hour leave one
    row. (That repeated GETs do not *rewrite* it is checked in-process, where the pending writes can be
    awaited: test_api_inprocess.py::test_a_served_forecast_is_recorded_once.)"""
    from datetime import UTC

    from mur.db import list_forecasts

    stack = serve_stack
    _, token = stack.make_user()
    with stack.client(token) as client:
        bodies = [client.get(f"/v1/forecast/{stack.pair}").json() for _ in range(3)]
    got = bodies[0]
    assert all(b == got for b in bodies)

    def stored() -> list[Any]:
        with Database(stack.settings, maxconn=1) as db:
            rows = list_forecasts(db, pair=stack.pair)
        return [
            r
            for r in rows
            if r.model_version == str(got["model_version"])
            and r.target_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") == got["target_time"]
        ]

    rows = wait_until(stored, 30, "the forecast in the forecasts table")
    assert len(rows) == 1
    assert np.isclose(rows[0].predicted, got["forecast"]) and rows[0].last_close == got["last_close"]


def test_error_answers_are_json(serve_stack: ServeStack) -> None:
    stack = serve_stack
    url = f"/v1/forecast/{stack.pair}"
    _, member = stack.make_user()
    _, admin = stack.make_user(admin=True)
    revoked_user, revoked = stack.make_user()
    with Database(stack.settings, maxconn=1) as db:
        from mur.db import list_tokens

        (tok,) = list_tokens(db, user_id=revoked_user)
        revoke_token(db, user_id=revoked_user, token_id=tok.id)

    with stack.client() as anon:
        assert_error(anon.get(url), 401, "unauthorized")
        assert anon.get(url).headers["WWW-Authenticate"] == "Bearer"
        assert_error(
            anon.get(url, headers={"Authorization": "Bearer mur_not-a-real-token-at-all"}),
            401,
            "unauthorized",
        )
        assert_error(anon.get(url, headers={"Authorization": "Basic dXNlcjpwdw=="}), 401, "unauthorized")
        assert_error(anon.get(url, headers={"Authorization": f"Bearer {revoked}"}), 401, "unauthorized")
        assert_error(anon.get("/v1/pairs"), 401, "unauthorized")
        assert_error(anon.post("/v1/admin/reload"), 401, "unauthorized")
    with stack.client(member) as client:
        assert_error(client.post("/v1/admin/reload"), 403, "forbidden")
        assert_error(client.get("/v1/forecast/doge_usdt"), 404, "unknown_pair")
        assert_error(client.get("/v1/forecast/not-a-pair!"), 404, "unknown_pair")
        assert_error(client.get("/v2/nothing"), 404, "not_found")
        good = candles_to_payload(
            _candles_until(stack.pair, "2025-06-01T00:00:00Z", stack.settings.model.context_len)
        )
        bad_cases = {
            "too few": good[:-1],
            "unsorted": [good[1], good[0], *good[2:]],
            "gap": [*good[:5], *[{**r, "timestamp": r["timestamp"] + 3_600_000} for r in good[5:]]],
            "zero price": [*good[:-1], {**good[-1], "low": 0}],
            "negative": [*good[:-1], {**good[-1], "close": -5}],
        }
        for name, rows in bad_cases.items():
            body = assert_error(client.post(url, json={"candles": rows}), 422, "invalid_candles")
            assert "candle" in body["message"], (name, body)
        nan_body = (
            '{"candles": ['
            + ",".join(
                f'{{"timestamp": {r["timestamp"]}, "open": {r["open"]}, "high": {r["high"]}, '
                f'"low": {r["low"]}, "close": {"NaN" if i == 3 else r["close"]}}}'
                for i, r in enumerate(good)
            )
            + "]}"
        )
        nan = client.post(url, content=nan_body, headers={"content-type": "application/json"})
        assert "finite" in assert_error(nan, 422, "invalid_candles")["message"]
        assert_error(client.post(url, json={"rows": good}), 422, "invalid_request")
        assert_error(client.post(url, json={"candles": [{"timestamp": 1}]}), 422, "invalid_candles")
    with stack.client(admin) as client:
        reload = client.post("/v1/admin/reload", timeout=90)
        assert reload.status_code == 200 and reload.json()["reloaded"] is True, reload.text

    _, last_unit = stack.make_user(quota=1)
    with stack.client(last_unit) as client:
        assert client.get(url).status_code == 200
        body = assert_error(client.get(url), 429, "quota_exhausted")
        assert body["limit"] == 1 and body["used"] == 1 and body["reset_at"].endswith("T00:00:00Z")
        assert int(client.get(url).headers["Retry-After"]) > 0
        assert_error(client.post(url, json={"candles": good}), 429, "quota_exhausted")


def test_quota_race_exactly_the_quota_succeeds(serve_stack: ServeStack) -> None:
    stack = serve_stack
    user_id, token = stack.make_user(quota=50)

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(
            base_url=stack.url, headers={"Authorization": f"Bearer {token}"}, limits=limits, timeout=120
        ) as client:
            return await asyncio.gather(*(client.get(f"/v1/forecast/{stack.pair}") for _ in range(200)))

    responses = asyncio.run(burst())
    codes = [r.status_code for r in responses]
    assert codes.count(200) == 50 and codes.count(429) == 150, {c: codes.count(c) for c in set(codes)}
    assert all(r.json()["error"] == "quota_exhausted" for r in responses if r.status_code == 429)
    with Database(stack.settings, maxconn=1) as db:
        assert get_usage(db, user_id=user_id) == (50, 50)


class Hammer:
    """Background clients sending forecasts continuously (GET, or POST of ``candles``); records every answer."""

    def __init__(
        self, stack: ServeStack, token: str, workers: int = 4, candles: list[dict[str, Any]] | None = None
    ) -> None:
        self.stack, self.token, self.workers, self.candles = stack, token, workers, candles
        self.results: list[tuple[float, int, int | None, str]] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _run(self) -> None:
        with self.stack.client(self.token, timeout=60) as client:
            while not self._stop.is_set():
                try:
                    url = f"/v1/forecast/{self.stack.pair}"
                    if self.candles is None:
                        r = client.get(url)
                    else:
                        r = client.post(url, json={"candles": self.candles})
                    version = r.json().get("model_version") if r.status_code == 200 else None
                    self.results.append((time.monotonic(), r.status_code, version, r.text[:200]))
                except httpx.HTTPError as exc:
                    self.results.append((time.monotonic(), 0, None, repr(exc)))

    def __enter__(self) -> Hammer:
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.workers)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def failures(self) -> list[tuple[float, int, int | None, str]]:
        return [r for r in self.results if r[1] != 200]


def test_hot_reload_without_dropping_requests(serve_stack: ServeStack) -> None:
    stack = serve_stack
    _, token = stack.make_user(quota=1_000_000)
    _, admin = stack.make_user(admin=True)
    old = stack.versions[stack.pair]
    with Hammer(stack, token) as hammer:
        wait_until(lambda: len(hammer.results) >= 20, 60, "traffic before the promotion")
        new = copy_version(stack.direct, stack.pair, old)
        promote(stack.direct, stack.pair, new)
        with stack.client(admin) as client:
            reload = client.post("/v1/admin/reload", params={"wait_s": 60}, timeout=120).json()
        assert reload["reloaded"] is True and reload["serving"] == {stack.pair: new}, reload
        switched = time.monotonic()
        wait_until(lambda: sum(1 for r in hammer.results if r[0] > switched + 1) >= 20, 60, "traffic after")
    stack.versions[stack.pair] = new
    assert not hammer.failures(), hammer.failures()[:5]
    versions = [r[2] for r in hammer.results]
    assert versions[0] == old and {old, new} == set(versions)
    assert all(r[2] == new for r in hammer.results if r[0] > switched + 1)


def test_poll_picks_up_a_new_champion_without_admin_call(serve_stack: ServeStack) -> None:
    stack = serve_stack
    _, token = stack.make_user()
    new = copy_version(stack.direct, stack.pair, stack.versions[stack.pair])
    promote(stack.direct, stack.pair, new)
    with stack.client(token) as client:
        wait_until(
            lambda: client.get(f"/v1/forecast/{stack.pair}").json()["model_version"] == new,
            30,
            "the registry poll to load the new champion",
        )
    stack.versions[stack.pair] = new


def test_a_known_champion_costs_no_request_beyond_the_search(serve_stack: ServeStack) -> None:
    """The watcher's poll: the search answers every model's aliases, so a champion already read is taken from
    ``known``; one not known is read from MLflow."""
    from mur.serving.champions import champions, registry_client

    stack = serve_stack
    client = registry_client(stack.direct)
    prefix, experiment = stack.direct.registry.registry_prefix, stack.direct.registry.mlflow_experiment
    fresh = champions(client, prefix=prefix, experiment=experiment)
    version = fresh[stack.pair]["version"]
    assert version == stack.versions[stack.pair] and fresh[stack.pair]["data_window"]["end"]
    cached = {"version": version, "from": "the cache"}
    again = champions(client, prefix=prefix, experiment=experiment, known={(stack.pair, version): cached})
    assert again[stack.pair] == {**cached, "shadows": []}  # no look-up of the unchanged champion
    stale = champions(client, prefix=prefix, experiment=experiment, known={(stack.pair, version - 1): cached})
    assert stale[stack.pair] == fresh[stack.pair]  # another version number: read from the registry


def test_registry_unreachable_keeps_serving_and_reports_degraded(serve_stack: ServeStack) -> None:
    stack = serve_stack
    _, token = stack.make_user()
    wait_until(lambda: _ready(stack), 60, "ready before the outage")
    stack.proxy.stop()  # the app's only way to MLflow (and S3 behind it)
    try:

        def degraded() -> dict[str, Any] | None:
            body = httpx.get(f"{stack.url}/readyz", timeout=30).json()
            return body if body["status"] == "degraded" else None

        body = wait_until(degraded, 60, "/readyz degraded")
        assert body["registry"]["registry_ok"] is False and "unreachable" in body["registry"]["error"]
        assert any("registry" in p for p in body["problems"])
        with stack.client(token) as client:
            for _ in range(10):
                r = client.get(f"/v1/forecast/{stack.pair}")
                assert r.status_code == 200 and r.json()["model_version"] == stack.versions[stack.pair], (
                    r.text
                )
    finally:
        stack.proxy.start()
    wait_until(lambda: _ready(stack), 60, "/readyz ready again after MLflow came back")


def test_redeploy_with_mlflow_down_serves_the_last_known_champions(serve_stack: ServeStack) -> None:
    """Item 20 of issue 16: `mur serve` during an MLflow outage builds the app from the champions (and model
    files) the watcher kept on disk, instead of failing; it is degraded, not down."""
    from serve_app.args import AppArgs, settings_overrides
    from serve_app.deploy import deploy

    stack = serve_stack
    _, token = stack.make_user()
    wait_until(lambda: _ready(stack), 60, "ready before the outage")
    stack.proxy.stop()
    try:
        deploy(
            stack.settings, AppArgs(settings=settings_overrides(stack.settings)), force=True, timeout_s=300
        )
        with stack.client(token) as client:

            def served() -> bool:
                r = client.get(f"/v1/forecast/{stack.pair}")
                return r.status_code == 200 and r.json()["model_version"] == stack.versions[stack.pair]

            wait_until(served, 90, "a forecast from the stored champion")
        body = httpx.get(f"{stack.url}/readyz", timeout=30).json()
        assert body["status"] == "degraded" and body["registry"]["registry_ok"] is False, body
    finally:
        stack.proxy.start()
    wait_until(lambda: _ready(stack), 90, "/readyz ready again after MLflow came back")


def test_autoscaling_config_and_scale_up_under_load(serve_stack: ServeStack) -> None:
    from ray import serve

    from serve_app.deploy import app_details, connect_ray

    stack = serve_stack
    config = app_details(stack.settings)["deployments"]["forecaster"]["deployment_config"][
        "autoscaling_config"
    ]
    assert config["min_replicas"] == stack.settings.serving.serve_min_replicas == 1
    assert config["max_replicas"] == stack.settings.serving.serve_max_replicas == 2
    assert config["target_ongoing_requests"] == stack.settings.serving.serve_target_ongoing_requests

    import ray

    was_connected = ray.is_initialized()
    connect_ray(stack.settings)

    def running() -> int:
        status = serve.status().applications[stack.settings.serving.serve_app_name].deployments["forecaster"]
        return int(status.replica_states.get("RUNNING", 0))

    try:  # earlier bursts (the quota race) may have scaled up: start from min_replicas
        wait_until(lambda: running() == 1, 120, "min_replicas before the load", interval_s=1.0)
        _, token = stack.make_user(quota=1_000_000)
        # POSTs: concurrent GETs of one pair share a single Forecaster call in the ingress (single-flight),
        # client candles each need their own inference, so they load the Forecaster
        candles = candles_to_payload(
            _candles_until(stack.pair, "2025-06-01T00:00:00Z", stack.settings.model.context_len)
        )
        with Hammer(stack, token, workers=16, candles=candles) as hammer:
            wait_until(lambda: running() >= 2, 120, "a second replica under load", interval_s=1.0)
        assert not hammer.failures(), hammer.failures()[:5]
        wait_until(lambda: running() == 1, 120, "scale back down to min_replicas", interval_s=2.0)
    finally:
        if not was_connected:
            ray.shutdown()


def test_new_pair_is_added_and_503_until_its_model_loads(serve_stack: ServeStack) -> None:
    stack = serve_stack
    new_pair = "sol_usdt"
    client_settings = stack.direct
    broken = register_broken_version(client_settings, new_pair)
    promote(client_settings, new_pair, broken)

    _, token = stack.make_user()
    _, admin = stack.make_user(admin=True)
    with stack.client(admin) as client:
        client.post("/v1/admin/reload", params={"wait_s": 0}, timeout=60)
    with stack.client(token) as client:
        wait_until(
            lambda: new_pair in client.get("/v1/pairs").json()["pairs"], 240, "the app to add the new pair"
        )
        body = assert_error(client.get(f"/v1/forecast/{new_pair}"), 503, "model_not_loaded")
        assert new_pair in body["message"]
        ready = httpx.get(f"{stack.url}/readyz", timeout=30).json()
        assert ready["status"] == "degraded" and any(new_pair in p for p in ready["problems"])
        assert client.get(f"/v1/forecast/{stack.pair}").status_code == 200  # the other pair is unaffected

        good = copy_version(client_settings, stack.pair, stack.versions[stack.pair], to_pair=new_pair)
        promote(client_settings, new_pair, good)
        with stack.client(admin) as admin_client:
            admin_client.post("/v1/admin/reload", params={"wait_s": 30}, timeout=90)
        wait_until(
            lambda: client.get(f"/v1/forecast/{new_pair}").status_code == 200, 60, "the repaired model"
        )
        assert client.get(f"/v1/forecast/{new_pair}").json()["model_version"] == good
    wait_until(lambda: _ready(stack), 60, "ready with both pairs")


def test_cli_status_reports_the_running_app(serve_stack: ServeStack) -> None:
    import json

    from typer.testing import CliRunner

    from mur.commands.serve import serve_cli

    def read_status() -> dict[str, Any]:
        result = CliRunner().invoke(serve_cli, ["status", "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    # after the previous test's redeploy (a new pair), the replaced API replica drains for ~30 s
    # (direct ingress lets HAProxy stop sending it traffic first): DEPLOYING until it has stopped
    wait_until(lambda: read_status()["status"] == "RUNNING", 120, "the app RUNNING")
    status = read_status()
    assert status["status"] == "RUNNING" and status["url"] == serve_stack.url
    assert status["replicas"]["api"] == 1 and status["replicas"]["forecaster"] >= 1
    assert status["readyz"]["status"] in ("ready", "degraded")
