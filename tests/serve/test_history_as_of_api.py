"""``GET /v1/models/{pair}/history`` and ``GET /v1/forecast/{pair}?as_of=T`` in-process (fake forecaster, the
real PostgreSQL): bearer token required, no quota used, the forecaster never called, JSON errors (404 when
nothing was served then, 422 for a time that is not one), the as_of answer read through ForecastOut."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from api_fakes import Api, assert_error, auth, running_api

from mur.db import record_forecast_body
from mur.db.alias_history import record_move
from mur.serving.contract import ForecastOut
from mur.settings import Settings

PAIR = "btc_usdt"
CANDLE = datetime(2025, 3, 1, 11, tzinfo=UTC)
H = timedelta(hours=1)


@pytest.fixture
def api(pg_database_factory: Callable[..., Settings]) -> Iterator[Api]:
    with running_api(pg_database_factory(), configured_pairs=[PAIR]) as api:
        yield api


def served(api: Api) -> None:
    """v7's answer from the 11:00 candle, served at 12:05 (1 h and 24 h)."""
    bands = [
        {"hours": h, "target_time": (CANDLE + h * H).isoformat(), "median": 100.0 + h}
        | {"lower": 90.0, "upper": 110.0 + h, "level": 0.9}
        for h in (1, 24)
    ]
    body = {"pair": PAIR, "model_version": 7, "last_close": 100.0, "horizons": bands}
    record_forecast_body(
        api.db, body | {"target_time": bands[0]["target_time"]}, made_at=CANDLE + 65 * H / 60
    )


def test_as_of_answers_the_served_forecast_uncharged(api: Api) -> None:
    served(api)
    user_id, token = api.user(quota=1)
    for _ in range(3):  # more calls than the quota allows forecasts
        response = api.client.get(f"/v1/forecast/{PAIR}?as_of=2025-03-01T12:30:00Z", headers=auth(token))
        assert response.status_code == 200, response.text
        assert "X-RateLimit-Remaining" not in response.headers
    assert api.usage(user_id) == 0 and api.forecaster.calls == 0
    body = response.json()
    answer = ForecastOut.model_validate(body)
    assert body["source"] == "track_record" and body["as_of"] == "2025-03-01T12:05:00Z"
    assert (answer.model_version, answer.forecast, answer.last_close) == (7, 101.0, 100.0)
    assert (
        answer.candle_time == CANDLE
        and answer.target_time == CANDLE + H
        and answer.change_pct == pytest.approx(1.0)
    )
    assert [(h.hours, h.median, h.lower, h.upper) for h in answer.horizons] == [
        (1, 101.0, 90.0, 111.0),
        (24, 124.0, 90.0, 134.0),
    ]
    assert body["horizons"][1]["close_time"] == "2025-03-02T12:00:00Z"


def test_as_of_errors_are_json(api: Api) -> None:
    served(api)
    _, token = api.user()
    for at in ("2025-03-01T13:00:00Z", "2025-03-01T11:59:59"):  # the next hour's candle; the one before
        body = assert_error(
            api.client.get(f"/v1/forecast/{PAIR}?as_of={at}", headers=auth(token)), 404, "not_found"
        )
        assert "no forecast of btc_usdt was served" in body["message"]
    for at in ("yesterday", "1700000000", "0001-01-01T00:00:00"):
        assert api.client.get(f"/v1/forecast/{PAIR}?as_of={at}", headers=auth(token)).status_code == 422
    assert_error(api.client.get(f"/v1/forecast/{PAIR}?as_of=2025-03-01T12:30:00Z"), 401, "unauthorized")
    unknown = api.client.get("/v1/forecast/doge_usdt?as_of=2025-03-01T12:30:00Z", headers=auth(token))
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_pair"


def test_model_history(api: Api) -> None:
    for version, previous, action in ((1, None, "gate"), (2, 1, "gate"), (1, 2, "rollback")):
        record_move(api.db, pair=PAIR, version=version, previous_version=previous, action=action,
                    actor="me", reason=f"to v{version}", scores={"skill": 0.01}, market_time=CANDLE)  # fmt: skip
    user_id, token = api.user(quota=1)
    for _ in range(2):
        response = api.client.get(f"/v1/models/{PAIR}/history", headers=auth(token))
        assert response.status_code == 200, response.text
    assert api.usage(user_id) == 0
    body = response.json()
    assert body["pair"] == PAIR
    assert [(m["version"], m["previous_version"], m["action"]) for m in body["moves"]] == [
        (1, 2, "rollback"),
        (2, 1, "gate"),
        (1, None, "gate"),
    ]
    assert body["moves"][0]["market_time"] == "2025-03-01T11:00:00Z" and body["moves"][0]["scores"] == {
        "skill": 0.01
    }
    limited = api.client.get(f"/v1/models/{PAIR}/history?limit=1", headers=auth(token)).json()
    assert len(limited["moves"]) == 1
    assert_error(api.client.get(f"/v1/models/{PAIR}/history"), 401, "unauthorized")
    assert api.client.get("/v1/models/doge_usdt/history", headers=auth(token)).status_code == 404
    paths = api.client.get("/openapi.json").json()["paths"]
    assert "/v1/models/{pair}/history" in paths
    assert any(p["name"] == "as_of" for p in paths["/v1/forecast/{pair}"]["get"]["parameters"])
