"""The HTTP API in-process: ``create_api`` over an ``ApiService`` with fake forecasters (no Ray, no MLflow)
and the real PostgreSQL for tokens, quotas and the track record.

What is checked here is what the API does around a forecast (auth, quota, JSON errors, routes, OpenAPI);
tests/serve/test_api.py checks the forecasts themselves on a real Serve deployment.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from api_fakes import (
    CANDLE_TIME,
    PAIR,
    SEQ,
    VERSION,
    Api,
    FakeRegistry,
    assert_error,
    auth,
    plus_one_percent,
    rows,
    running_api,
)
from fastapi.testclient import TestClient
from psycopg import sql
from serve_helpers import TcpProxy

from mur.db import Database, create_token, list_forecasts, list_tokens, revoke_token
from mur.settings import Settings
from mur.waiting import wait_until
from serve_app.api import MAX_BODY_BYTES, create_api
from serve_app.service import ApiService

ROUTER = SimpleNamespace(current={PAIR: f"{PAIR}@{VERSION}"}, errors={}, shadows={})
"""A ChampionRouter's view of the pair for a ForecasterHandle: its champion loaded."""


@pytest.fixture
def api(pg_settings: Settings) -> Iterator[Api]:
    with running_api(pg_settings) as api:
        yield api


# --------------------------------------------------------------------------------------------------


def test_openapi_lists_the_routes_and_the_bearer_scheme(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    assert {
        "/healthz",
        "/readyz",
        "/v1/pairs",
        "/v1/models",
        "/v1/forecast/{pair}",
        "/v1/admin/reload",
    } <= set(spec["paths"])
    assert set(spec["paths"]["/v1/forecast/{pair}"]) == {"get", "post"}
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "ForecastOut" in spec["components"]["schemas"] and "ErrorOut" in spec["components"]["schemas"]
    assert api.client.get("/docs").status_code == 200
    assert api.client.get("/healthz").json() == {"status": "ok"}


def test_missing_or_bad_credentials_are_401_json(api: Api) -> None:
    revoked_user, revoked = api.user()
    (tok,) = list_tokens(api.db, user_id=revoked_user)
    revoke_token(api.db, user_id=revoked_user, token_id=tok.id)
    url = f"/v1/forecast/{PAIR}"
    for headers in (
        {},
        auth("mur_not-a-real-token-at-all"),
        {"Authorization": "Basic dXNlcjpwdw=="},
        auth(revoked),
    ):
        response = api.client.get(url, headers=headers)
        assert_error(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert_error(api.client.get("/v1/pairs"), 401, "unauthorized")
    assert_error(api.client.get("/v1/models"), 401, "unauthorized")
    assert_error(api.client.post(url, json={"candles": rows()}), 401, "unauthorized")
    assert_error(api.client.post("/v1/admin/reload"), 401, "unauthorized")
    assert api.forecaster.calls == 0  # nothing reaches a model without valid credentials


def test_pairs_models_and_readiness(api: Api) -> None:
    _, token = api.user()
    assert api.client.get("/v1/pairs", headers=auth(token)).json() == {
        "pairs": [PAIR],
        "details": [{"pair": PAIR, "synthetic": False}],
    }
    (model,) = api.client.get("/v1/models", headers=auth(token)).json()["models"]
    assert model["pair"] == PAIR and model["loaded"] is True and model["version"] == VERSION
    assert model["alias"] == "champion" and model["seq_len"] == SEQ
    assert model["metrics"]["skill"] == 0.1 and model["metrics"]["model"]["mae"] == 1.5
    assert model["trained_window"] == {"start": "2025-01-01T00:00:00Z", "end": "2025-06-01T00:00:00Z"}
    ready = api.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"

    async def no_watcher() -> dict[str, Any]:
        raise TimeoutError

    api.registry.snapshot = no_watcher  # type: ignore[method-assign]
    degraded = api.client.get("/readyz")  # the watcher does not answer: serving, but degraded
    assert degraded.status_code == 200 and degraded.json()["status"] == "degraded"
    assert degraded.json()["problems"] == ["registry watcher: TimeoutError"]
    del api.registry.snapshot

    api.forecaster.loaded = False
    (model,) = api.client.get("/v1/models", headers=auth(token)).json()["models"]
    assert model["pair"] == PAIR and model["loaded"] is False and model["version"] is None
    not_ready = api.client.get("/readyz")
    assert not_ready.status_code == 503 and not_ready.json()["status"] == "not_ready"


def test_quota_charges_successful_forecasts_only(api: Api) -> None:
    user_id, token = api.user(quota=2)
    url = f"/v1/forecast/{PAIR}"
    first = api.client.get(url, headers=auth(token))
    assert first.status_code == 200, first.text
    assert first.json()["model_version"] == VERSION and first.json()["pair"] == PAIR
    assert first.headers["X-RateLimit-Limit"] == "2" and first.headers["X-RateLimit-Remaining"] == "1"

    # failed calls: bad candles, an unknown pair, a model that is not loaded, a crashed replica
    assert_error(
        api.client.post(url, json={"candles": rows(SEQ - 1)}, headers=auth(token)), 422, "invalid_candles"
    )
    assert_error(api.client.get("/v1/forecast/doge_usdt", headers=auth(token)), 404, "unknown_pair")
    api.forecaster.loaded = False
    assert_error(api.client.get(url, headers=auth(token)), 503, "model_not_loaded")
    api.forecaster.loaded, api.forecaster.broken = True, True
    assert_error(api.client.post(url, json={"candles": rows()}, headers=auth(token)), 500, "internal_error")
    api.forecaster.broken = False
    assert api.usage(user_id) == 1

    posted = api.client.post(url, json={"candles": rows()}, headers=auth(token))
    assert posted.status_code == 200 and posted.headers["X-RateLimit-Remaining"] == "0", posted.text
    assert posted.json()["candle_time"] == "2025-01-01T03:00:00Z"

    exhausted = api.client.get(url, headers=auth(token))
    body = assert_error(exhausted, 429, "quota_exhausted")
    assert body["limit"] == 2 and body["used"] == 2 and body["reset_at"].endswith("T00:00:00Z")
    assert body["message"].endswith(f"it resets at {body['reset_at']} (wall clock)")
    assert int(exhausted.headers["Retry-After"]) > 0 and exhausted.headers["X-RateLimit-Remaining"] == "0"
    assert_error(api.client.post(url, json={"candles": rows()}, headers=auth(token)), 429, "quota_exhausted")
    assert api.usage(user_id) == 2


def test_error_bodies_are_json(api: Api) -> None:
    _, member = api.user()
    _, admin = api.user(admin=True)
    url = f"/v1/forecast/{PAIR}"
    assert_error(api.client.get("/v2/nothing"), 404, "not_found")
    assert_error(api.client.delete(url, headers=auth(member)), 405, "method_not_allowed")
    assert_error(api.client.get("/v1/forecast/not-a-pair!", headers=auth(member)), 404, "unknown_pair")
    assert_error(api.client.post(url, json={"rows": rows()}, headers=auth(member)), 422, "invalid_request")
    assert_error(
        api.client.post(url, json={"candles": [{"timestamp": 1}]}, headers=auth(member)),
        422,
        "invalid_candles",
    )
    json_headers = {**auth(member), "content-type": "application/json"}
    assert_error(api.client.post(url, content=b"{not json", headers=json_headers), 422, "invalid_request")
    assert_error(
        api.client.post(url, content=b'{"candles": "\xff"}', headers=json_headers), 400, "bad_request"
    )
    unsorted = [rows()[1], rows()[0], *rows()[2:]]
    body = assert_error(
        api.client.post(url, json={"candles": unsorted}, headers=auth(member)), 422, "invalid_candles"
    )
    assert "ascending and hourly" in body["message"]
    assert_error(api.client.post("/v1/admin/reload", headers=auth(member)), 403, "forbidden")
    assert api.registry.refreshed == 0

    reload = api.client.post("/v1/admin/reload", params={"wait_s": 0}, headers=auth(admin))
    assert reload.status_code == 200 and reload.json()["reloaded"] is True, reload.text
    assert reload.json()["serving"] == {PAIR: VERSION} and api.registry.refreshed == 1


def test_a_served_forecast_is_recorded_once(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """GET forecasts join the track record once per (pair, model version, target hour); POSTed candles never."""
    import mur.db

    writes: list[dict[str, Any]] = []
    record = mur.db.record_forecast_body

    def spy(db: Database, body: dict[str, Any], **kwargs: Any) -> Any:
        writes.append(body)
        return record(db, body, **kwargs)

    monkeypatch.setattr(mur.db, "record_forecast_body", spy)
    _, token = api.user()
    bodies = [api.client.get(f"/v1/forecast/{PAIR}", headers=auth(token)).json() for _ in range(3)]
    assert (
        api.client.post(f"/v1/forecast/{PAIR}", json={"candles": rows()}, headers=auth(token)).status_code
        == 200
    )
    assert bodies[0] == bodies[1] == bodies[2]
    api.service.close()  # returns once the pending track-record writes are done
    assert [w["target_time"] for w in writes] == [
        (CANDLE_TIME + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    ]
    stored = [r for r in list_forecasts(api.db, pair=PAIR) if r.model_version == str(VERSION)]
    mine = [r for r in stored if r.target_time == CANDLE_TIME + timedelta(hours=1)]
    assert len(mine) == 1 and mine[0].predicted == pytest.approx(bodies[0]["forecast"])


# --- hardening (issue 16) ---------------------------------------------------------------------------------


def _asgi_post(api: Api, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict[str, Any], bool]:
    """POST straight to the ASGI app with a body that records whether it was read: (status, body, read)."""
    read = False
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        read = True
        return {"type": "http.request", "body": b'{"candles": []}', "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    asyncio.run(api.client.app(scope, receive, send))  # type: ignore[arg-type]
    body = json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))
    return sent[0]["status"], body, read


def test_large_bodies_are_413_json_and_unauthenticated_bodies_are_never_read(api: Api) -> None:
    """Item 4: a documented body limit (Content-Length and streamed), a candle cap, auth before the body."""
    user_id, token = api.user()
    url = f"/v1/forecast/{PAIR}"
    big = b'{"candles": [' + b" " * MAX_BODY_BYTES + b"]}"
    headers = {**auth(token), "content-type": "application/json"}
    assert_error(api.client.post(url, content=big, headers=headers), 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it streams in
        yield b'{"candles": ['
        for _ in range(MAX_BODY_BYTES // 1024 + 1):
            yield b" " * 1024
        yield b"]}"

    streamed = api.client.post(url, content=chunks(), headers=headers)
    assert_error(streamed, 413, "payload_too_large")
    many = rows(1001)
    assert_error(api.client.post(url, json={"candles": many}, headers=auth(token)), 422, "invalid_request")
    assert api.forecaster.calls == 0 and api.usage(user_id) == 0

    status, body, read = _asgi_post(api, url, [(b"authorization", b"Bearer mur_wrong")])
    assert (status, body["error"], read) == (401, "unauthorized", False)
    status, body, read = _asgi_post(api, url, [(b"authorization", f"Bearer {token}".encode())])
    assert status == 422 and read  # a valid caller's body is read and validated


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"close": 1e300, "high": 1e300}, "high"),  # inf in float32
        ({"open": 1e-50, "low": 1e-50}, "open"),  # 0 in float32
        ({"high": 100.0, "close": 101.5}, "high"),  # high below close
        ({"low": 200.0, "high": 300.0}, "low"),  # low above open and close
        ({"volume": 1e300}, "volume"),
    ],
)
def test_out_of_range_candles_are_422_and_not_charged(api: Api, change: dict[str, float], field: str) -> None:
    """Items 5 and 15: prices outside the documented range or an impossible high/low are a 422 JSON body."""
    user_id, token = api.user()
    bad = rows()
    bad[2] = {**bad[2], **change}
    response = api.client.post(f"/v1/forecast/{PAIR}", json={"candles": bad}, headers=auth(token))
    assert field in assert_error(response, 422, "invalid_candles")["message"]
    assert api.usage(user_id) == 0


@pytest.mark.parametrize("output", [float("nan"), float("inf"), 0.0, -5.0])
def test_an_unusable_forecast_is_an_error_and_not_charged(api: Api, output: float) -> None:
    """Item 5: a model output that is not a finite positive price is a 503 JSON body, never NaN, no charge."""
    user_id, token = api.user()
    api.forecaster.predict = lambda _window: output
    for response in (
        api.client.get(f"/v1/forecast/{PAIR}", headers=auth(token)),
        api.client.post(f"/v1/forecast/{PAIR}", json={"candles": rows()}, headers=auth(token)),
    ):
        assert_error(response, 503, "model_error")
    assert api.usage(user_id) == 0


@pytest.mark.parametrize(
    "raw",
    [
        b'{"candles": [{"timestamp": 100000000000000, "open": 1, "high": 1, "low": 1, "close": 1}]}',
        b'{"candles": [{"timestamp": 1' + b"0" * 400 + b', "open": 1, "high": 1, "low": 1, "close": 1}]}',
        b'{"candles": [{"timestamp": "+275760-09-13T00:00:00", "open": 1, "high": 1, "low": 1, "close": 1}]}',
        b'{"candles": [{"timestamp": "now", "open": 1, "high": 1, "low": 1, "close": 1}]}',
    ],
)
def test_timestamps_out_of_range_are_json_errors(api: Api, raw: bytes) -> None:
    """Item 6: timestamps beyond the documented range (pandas' range, int64, 10**400) are 4xx JSON."""
    user_id, token = api.user()
    headers = {**auth(token), "content-type": "application/json"}
    response = api.client.post(f"/v1/forecast/{PAIR}", content=raw, headers=headers)
    assert response.status_code in (400, 422) and response.json()["error"], response.text
    late = [{**r, "timestamp": f"2262-04-11T{20 + i:02d}:00:00Z"} for i, r in enumerate(rows())]
    response = api.client.post(f"/v1/forecast/{PAIR}", json={"candles": late}, headers=auth(token))
    assert "out of range" in assert_error(response, 422, "invalid_candles")["message"]
    assert api.usage(user_id) == 0


def test_a_ray_error_on_the_way_to_a_forecaster_is_a_503_json(api: Api) -> None:
    """Item 6: a replica that died (a Ray actor error) is a JSON 503, not Serve's plain-text 500."""
    from ray.exceptions import ActorDiedError

    from serve_app.ingress import ForecasterHandle

    class Method:
        def remote(self, *args: Any) -> Any:
            async def died() -> Any:
                raise ActorDiedError()

            return died()

    class DeadHandle:
        forecast_latest = forecast_candles = status = Method()

        def options(self, **_: Any) -> DeadHandle:
            return self

    user_id, token = api.user()
    api.service.forecasters[PAIR] = ForecasterHandle(DeadHandle(), PAIR, ROUTER)  # type: ignore[arg-type]
    body = assert_error(
        api.client.get(f"/v1/forecast/{PAIR}", headers=auth(token)), 503, "service_unavailable"
    )
    assert "try again" in body["message"]
    assert api.usage(user_id) == 0


def test_the_forecasters_own_errors_cross_the_handle_with_their_status_and_json(api: Api) -> None:
    """A MurError raised in a Forecaster replica reaches the ingress inside Ray's RayTaskError: answered with
    its own status and body (unwrapped once, ``ForecasterHandle._call``), not a 503 service_unavailable, and
    not charged."""
    from ray.exceptions import RayTaskError

    from mur.errors import DataValidationError, ModelNotLoadedError
    from serve_app.ingress import ForecasterHandle

    class Raising:
        def __init__(self, exc: Exception) -> None:
            self.exc = exc

        def remote(self, *args: Any) -> Any:
            async def fail() -> Any:
                raise RayTaskError(
                    "forecast", "Traceback (most recent call last): ...", self.exc
                ).as_instanceof_cause()

            return fail()

    class FailingHandle:
        forecast_latest = Raising(ModelNotLoadedError(f"{PAIR} version 8 is still loading"))
        forecast_candles = Raising(DataValidationError("candle 1: high below low"))

        def options(self, **_: Any) -> FailingHandle:
            return self

    user_id, token = api.user()
    api.service.forecasters[PAIR] = ForecasterHandle(FailingHandle(), PAIR, ROUTER)  # type: ignore[arg-type]
    url = f"/v1/forecast/{PAIR}"
    body = assert_error(api.client.get(url, headers=auth(token)), 503, "model_not_loaded")
    assert body["message"] == f"{PAIR} version 8 is still loading"
    posted = api.client.post(url, headers=auth(token), json={"candles": rows()})
    assert assert_error(posted, 422, "invalid_candles")["message"] == "candle 1: high below low"
    assert api.usage(user_id) == 0


def test_method_not_allowed_keeps_allow_and_the_openapi_documents_400_413_and_bounds(api: Api) -> None:
    """Item 16: 405 with ``Allow``; 400 and 413 documented; candle lengths and prices constrained."""
    _, token = api.user()
    response = api.client.delete(f"/v1/forecast/{PAIR}", headers=auth(token))
    assert_error(response, 405, "method_not_allowed")
    assert set(response.headers["Allow"].replace(" ", "").split(",")) == {"GET", "POST"}
    spec = api.client.get("/openapi.json").json()
    post = spec["paths"]["/v1/forecast/{pair}"]["post"]["responses"]
    assert {"400", "413", "422"} <= set(post)
    schemas = spec["components"]["schemas"]
    candles = schemas["CandlesIn"]["properties"]["candles"]
    assert candles["minItems"] == candles["maxItems"] == SEQ == api.service.window  # the count it accepts
    for price in ("open", "high", "low", "close"):
        assert schemas["Candle"]["properties"][price]["minimum"] > 0


def test_a_stalled_database_gives_a_bounded_generic_503_and_not_ready(pg_settings: Settings) -> None:
    """Items 7 and 13: PostgreSQL that accepts connections but stops answering (a relay that stops
    forwarding): /v1 answers 503 JSON within bounded time without naming the server, /readyz says so, and
    everything recovers when the server answers again."""
    relay = TcpProxy((pg_settings.db.pg_host, pg_settings.db.pg_port))
    relay.start()
    relayed = pg_settings.replace(pg_host="127.0.0.1", pg_port=relay.port)
    try:
        with running_api(relayed, db_timeout_s=1.0) as api:
            _, token = api.user()
            assert api.client.get("/v1/pairs", headers=auth(token)).status_code == 200
            relay.stall()
            for path in ("/v1/pairs", f"/v1/forecast/{PAIR}"):
                started = time.monotonic()
                body = assert_error(api.client.get(path, headers=auth(token)), 503, "database_unavailable")
                assert time.monotonic() - started < 5
                for secret in (relayed.db.pg_user, str(relay.port), relayed.db.pg_database, "127.0.0.1"):
                    assert secret not in body["message"], body
            started = time.monotonic()
            ready = api.client.get("/readyz")
            assert time.monotonic() - started < 5
            assert ready.status_code == 503 and ready.json()["status"] == "not_ready", ready.text
            assert "database: unavailable" in ready.json()["problems"]
            relay.resume()
            wait_until(
                lambda: api.client.get("/v1/pairs", headers=auth(token)).status_code == 200,
                what="a recovery after the database answered again",
                timeout_s=30,
                interval_s=0.2,
            )
            assert api.client.get("/readyz").json()["database_ok"] is True
    finally:
        relay.resume()
        relay.stop()


def test_a_configured_pair_without_champion_is_an_honest_503_and_not_charged(pg_settings: Settings) -> None:
    with running_api(pg_settings, configured_pairs=[PAIR, "sol_usdt"]) as api:
        user_id, token = api.user()
        body = assert_error(api.client.get("/v1/forecast/sol_usdt", headers=auth(token)), 503, "no_champion")
        assert "promotion gate" in body["message"]
        assert_error(api.client.get("/v1/forecast/doge_usdt", headers=auth(token)), 404, "unknown_pair")
        assert api.usage(user_id) == 0


# --- issue 22: nothing computed or charged that should not be ---------------------------------------------


def test_the_openapi_schema_says_the_exact_candle_count_the_server_takes() -> None:
    """The POST body's schema says the model window (``MUR_CONTEXT_LEN``, 168), not the parser's 1..1000."""
    settings = Settings(env="test")
    service = ApiService(db=Database(settings), forecasters={}, registry=FakeRegistry())  # never connects
    try:
        spec = TestClient(create_api(service)).get("/openapi.json").json()
    finally:
        service.close()
    candles = spec["components"]["schemas"]["CandlesIn"]["properties"]["candles"]
    assert candles["minItems"] == candles["maxItems"] == settings.model.context_len == 168
    assert "exactly 168" in candles["description"]


def test_over_quota_requests_do_no_model_work(api: Api) -> None:
    """A caller with no unit left is refused with a 429 before the forecaster is asked (GET and POST)."""
    user_id, token = api.user(quota=1)
    url = f"/v1/forecast/{PAIR}"
    assert api.client.get(url, headers=auth(token)).status_code == 200
    assert api.forecaster.calls == 1 and api.usage(user_id) == 1
    for _ in range(3):
        body = assert_error(api.client.get(url, headers=auth(token)), 429, "quota_exhausted")
        assert body["used"] == 1 and body["limit"] == 1
        assert_error(
            api.client.post(url, json={"candles": rows()}, headers=auth(token)), 429, "quota_exhausted"
        )
    _, none_left = api.user(quota=0)
    assert_error(api.client.get(url, headers=auth(none_left)), 429, "quota_exhausted")
    assert api.forecaster.calls == 1  # no model work for any refused call
    assert api.usage(user_id) == 1


@contextmanager
def table_lock(
    settings: Settings, table: str, mode: str = "ACCESS EXCLUSIVE"
) -> Iterator[Callable[[], None]]:
    """A connection of its own that can take ``LOCK TABLE {table} IN {mode} MODE`` (the returned callable,
    idempotent) and holds it until the block ends."""
    conn = psycopg.connect(settings.db.dsn(), autocommit=False)
    locked = False

    def lock() -> None:
        nonlocal locked
        if not locked:
            conn.execute(sql.SQL("LOCK TABLE {} IN " + mode + " MODE").format(sql.Identifier(table)))
            locked = True

    try:
        yield lock
    finally:
        conn.rollback()
        conn.close()


def _locking_model(lock: Callable[[], None]) -> Callable[[Any], float]:
    """The stand-in model, taking the lock first: the lock falls after the quota check, before the charge."""

    def predict(window: Any) -> float:
        lock()
        return plus_one_percent(window)

    return predict


def test_no_charge_for_calls_answered_503_under_a_held_lock(pg_settings: Settings) -> None:
    """``LOCK TABLE api_usage`` taken while forecasts are computed: the charge waits at most the lock timeout
    (shorter than the request's deadline), fails, rolls back; the call is a 503 and, after the lock is
    released, still not charged. Later calls fail at the quota check, before any model work."""
    with running_api(pg_settings, db_timeout_s=1.0) as api:
        user_id, token = api.user(quota=10)
        url = f"/v1/forecast/{PAIR}"
        with table_lock(pg_settings, "api_usage") as lock:
            api.forecaster.predict = _locking_model(lock)
            started = time.monotonic()
            assert_error(api.client.get(url, headers=auth(token)), 503, "database_unavailable")
            assert api.forecaster.calls == 1 and time.monotonic() - started < 3
            posted = api.client.post(url, json={"candles": rows()}, headers=auth(token))
            assert_error(posted, 503, "database_unavailable")
            assert api.forecaster.calls == 1  # refused at the quota check: no model work it could not charge
            with api.db.cursor() as cur:  # the statements gave up on the server too (lock timeout)
                cur.execute(
                    "SELECT count(*) AS n FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE NOT l.granted AND a.datname = current_database()"
                )
                assert cur.fetchone()["n"] == 0  # type: ignore[index]
        api.service.close()  # every database thread done: nothing still waiting to commit
        assert api.usage(user_id) == 0


def test_a_charge_that_completes_after_its_503_rolls_back(pg_settings: Settings) -> None:
    """Even with no server-side timeout at all (a pool without lock or statement timeouts), a charge that
    gets through only after its request was answered 503 is rolled back, not committed."""
    with running_api(pg_settings, db_timeout_s=1.0) as api:
        api.service.db.close()
        api.service.db = Database(pg_settings, maxconn=4, statement_timeout_s=60)
        user_id, token = api.user(quota=10)
        with table_lock(pg_settings, "api_usage") as lock:
            api.forecaster.predict = _locking_model(lock)
            response = api.client.get(f"/v1/forecast/{PAIR}", headers=auth(token))
            assert_error(response, 503, "database_unavailable")
            assert api.forecaster.calls == 1
        api.service.close()  # the lock is gone: the waiting charge ran its statement, then rolled back
        assert api.usage(user_id) == 0


@pytest.mark.parametrize("mode", ["ACCESS EXCLUSIVE", "EXCLUSIVE"])
@pytest.mark.parametrize("table", ["api_usage", "api_tokens"])
def test_readyz_is_not_ready_while_a_request_table_is_locked(
    pg_settings: Settings, table: str, mode: str
) -> None:
    """/readyz probes what a request touches, with its timeouts: a lock that makes /v1 calls fail (even one
    that still lets reads through, EXCLUSIVE) makes it answer a JSON 503 within the request's deadline."""
    with running_api(pg_settings, db_timeout_s=1.0) as api:
        _, token = api.user()
        assert api.client.get("/readyz").status_code == 200
        with table_lock(pg_settings, table, mode) as lock:
            lock()
            started = time.monotonic()
            ready = api.client.get("/readyz")
            assert time.monotonic() - started < 3
            assert ready.status_code == 503 and ready.headers["content-type"] == "application/json", (
                ready.text
            )
            assert (
                ready.json()["status"] == "not_ready" and "database: unavailable" in ready.json()["problems"]
            )
            assert api.client.get(f"/v1/forecast/{PAIR}", headers=auth(token)).status_code == 503
        ready = api.client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready", ready.text
        assert api.client.get(f"/v1/forecast/{PAIR}", headers=auth(token)).status_code == 200


def test_an_expired_token_is_a_401_saying_so(api: Api) -> None:
    """A token past its expiry: 401 ``token_expired`` with the time it expired; a token with time left works."""
    user_id, _ = api.user()
    live, _ = create_token(api.db, user_id=user_id, name="live", expires_in=timedelta(days=90))
    stale, row = create_token(api.db, user_id=user_id, name="stale", expires_in=timedelta(hours=1))
    with api.db.cursor() as cur:  # as if created two hours ago
        cur.execute(
            "UPDATE api_tokens SET created_at = now() - interval '2 hours', expires_at = now() - interval '1 hour' "
            "WHERE id = %s",
            (row.id,),
        )
    url = f"/v1/forecast/{PAIR}"
    assert api.client.get(url, headers=auth(live)).status_code == 200
    calls = api.forecaster.calls
    for response in (
        api.client.get(url, headers=auth(stale)),
        api.client.get("/v1/pairs", headers=auth(stale)),
        api.client.post(url, json={"candles": rows()}, headers=auth(stale)),
    ):
        body = assert_error(response, 401, "token_expired")
        assert "expired" in body["message"] and body["expired_at"].endswith("Z")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert api.forecaster.calls == calls and api.usage(user_id) == 1
