"""Shadows at the API, in-process (fake forecasters, real PostgreSQL): a shadow version's forecast is computed
beside the served one and recorded in ``shadow_forecasts``, never returned, never charged, once per target;
a shadow that fails changes nothing for the caller."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from api_fakes import CANDLE_TIME, PAIR, VERSION, Api, FakeForecaster, auth, running_api

from mur.db.pool import fetch_one
from mur.model.inference import forecast_body, horizon_rows
from mur.serving.contract import ForecastOut
from mur.settings import Settings
from mur.waiting import wait_until

SHADOW = 9


@dataclass
class ShadowedForecaster(FakeForecaster):
    shadow_calls: int = 0
    shadow_broken: bool = False

    async def shadow_forecasts(self) -> list[ForecastOut]:
        self.shadow_calls += 1
        if self.shadow_broken:
            raise RuntimeError("the shadow replica died")
        bands = horizon_rows(np.array([[99.0, 100.5, 102.0]]), [1], [0.05, 0.5, 0.95], CANDLE_TIME)
        body = forecast_body(
            PAIR,
            prediction=100.5,
            last_close=100.0,
            candle_time=CANDLE_TIME,
            model_version=SHADOW,
            horizons=bands,
        )
        return [ForecastOut.model_validate(body)]


@pytest.fixture
def api(pg_settings: Settings) -> Iterator[Api]:
    with running_api(pg_settings) as api:
        api.forecaster = api.service.forecasters[PAIR] = ShadowedForecaster(PAIR)
        yield api


VERSIONS = {  # fixed queries, the pair a parameter
    "forecasts": "SELECT DISTINCT model_version::text AS v FROM forecasts WHERE pair = %s",
    "shadow_forecasts": "SELECT DISTINCT model_version::text AS v FROM shadow_forecasts WHERE pair = %s",
}


def _versions(api: Api, table: str) -> list[str]:
    with api.db.cursor() as cur:
        cur.execute(VERSIONS[table], (PAIR,))
        return sorted(r["v"] for r in cur.fetchall())


def _shadow_rows(api: Api) -> int:
    with api.db.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM shadow_forecasts WHERE pair = %s", (PAIR,))
        return int(fetch_one(cur)["n"])


def test_a_shadow_is_recorded_never_returned_never_charged(api: Api) -> None:
    forecaster = api.forecaster
    assert isinstance(forecaster, ShadowedForecaster)
    user_id, token = api.user(quota=5)
    first = api.client.get(f"/v1/forecast/{PAIR}", headers=auth(token))
    assert first.status_code == 200, first.text
    assert first.json()["model_version"] == VERSION and str(SHADOW) not in first.headers.get("X-Model", "")
    assert api.usage(user_id) == 1
    wait_until(lambda: str(SHADOW) in _versions(api, "shadow_forecasts"), timeout_s=10, what="shadow row")
    wait_until(lambda: str(VERSION) in _versions(api, "forecasts"), timeout_s=10, what="served row")
    assert str(SHADOW) not in _versions(api, "forecasts")  # never in the served track record
    again = api.client.get(f"/v1/forecast/{PAIR}", headers=auth(token))
    assert again.json()["model_version"] == VERSION and api.usage(user_id) == 2
    assert forecaster.shadow_calls == 1  # the candle was recorded once: its shadows computed once


def test_a_failing_shadow_changes_nothing_for_the_caller(api: Api) -> None:
    forecaster = api.forecaster
    assert isinstance(forecaster, ShadowedForecaster)
    forecaster.shadow_broken = True
    before = _shadow_rows(api)
    user_id, token = api.user(quota=5)
    answer = api.client.get(f"/v1/forecast/{PAIR}", headers=auth(token))
    assert answer.status_code == 200 and answer.json()["model_version"] == VERSION
    assert api.usage(user_id) == 1
    wait_until(lambda: forecaster.shadow_calls == 1, timeout_s=10, what="the shadow call")
    wait_until(lambda: str(VERSION) in _versions(api, "forecasts"), timeout_s=10, what="served row")
    assert _shadow_rows(api) == before
