"""A forecast for a pair without a model is a clear JSON 404, never another pair's model (issue 25 #6):
POSTed candles of a pair the API does not serve are refused before the body is read, uncharged, and no
forecaster is called; a forecaster that answers with another pair's model is a 503, uncharged."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from api_fakes import PAIR, Api, FakeForecaster, assert_error, auth, rows, running_api

from mur.settings import Settings


@pytest.fixture
def api(pg_database_factory: Callable[..., Settings]) -> Iterator[Api]:
    with running_api(pg_database_factory(), configured_pairs=["sol_usdt"]) as api:
        yield api


def test_a_post_for_a_pair_without_a_model_is_a_404(api: Api) -> None:
    user_id, token = api.user()
    for body in ({"candles": rows()}, {"candles": rows(3)}, {"candles": "not candles"}):
        answer = api.client.post("/v1/forecast/doge_usdt", json=body, headers=auth(token))
        error = assert_error(answer, 404, "unknown_pair")
        assert "doge_usdt" in error["message"] and PAIR in error["message"]  # names what is served
    # a configured pair with no champion yet says so, also before the body
    assert_error(
        api.client.post("/v1/forecast/sol_usdt", json={"candles": []}, headers=auth(token)),
        503,
        "no_champion",
    )
    assert api.forecaster.calls == 0 and api.usage(user_id) == 0
    # without a token it is still a 401 first
    assert_error(api.client.post("/v1/forecast/doge_usdt", json={"candles": rows()}), 401, "unauthorized")
    # the served pair answers with its own model
    ok = api.client.post(f"/v1/forecast/{PAIR}", json={"candles": rows()}, headers=auth(token))
    assert ok.status_code == 200 and ok.json()["pair"] == PAIR and api.usage(user_id) == 1


def test_an_answer_from_another_pairs_model_is_refused(api: Api) -> None:
    user_id, token = api.user()
    api.service.forecasters[PAIR] = FakeForecaster("doge_usdt")  # a mis-routed forecaster
    for call in (
        lambda: api.client.get(f"/v1/forecast/{PAIR}", headers=auth(token)),
        lambda: api.client.post(f"/v1/forecast/{PAIR}", json={"candles": rows()}, headers=auth(token)),
    ):
        error = assert_error(call(), 503, "model_error")
        assert "doge_usdt" in error["message"]
    assert api.usage(user_id) == 0
