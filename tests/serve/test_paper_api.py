"""``GET /v1/paper/{pair}`` in-process (fake forecasters, the real PostgreSQL, the bundled candles): a track
record of real closes; the sizing rule's exposure from the served 24 h range by hand, the EWMA-sized rule from
the bundled candles, the portfolio filling as the market clock turns, CSV, JSON errors, no quota used; and the
paper gauges of ``/metrics``. Paper, not advice."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from api_fakes import Api, assert_error, auth, running_api
from paper_record import paper_record
from prometheus_client.parser import text_string_to_metric_families

from mur.clock import MarketClock
from mur.evaluation.sizing import HOURS_PER_YEAR
from mur.serving.contract import PaperOut
from mur.settings import Settings

PAIR = "btc_usdt"
C0 = datetime(2024, 9, 2, tzinfo=UTC)  # the first of three days of bundled candles in the track record
H = timedelta(hours=1)
DAYS = 3
Z90 = 2 * 1.6448536269514722
"""The normal span of a 90 % range (z_0.95 - z_0.05)."""


@pytest.fixture
def api(pg_database_factory: Callable[..., Settings]) -> Iterator[Api]:
    # /metrics reads the settings' market clock: the record's last hour
    settings = pg_database_factory().replace(clock_start=C0 + DAYS * 24 * H, clock_speed=0.0)
    with running_api(settings, configured_pairs=[PAIR]) as api:
        yield api


def at(api: Api, hour: datetime) -> None:
    api.service.clock = MarketClock(start=hour, origin=time.time(), speed=0.0)


def test_paper_portfolio_fills_as_the_market_clock_turns(api: Api) -> None:
    closes = paper_record(api.db, PAIR, C0, DAYS)
    user_id, token = api.user(quota=1)
    at(api, C0 + 30 * H)
    first = api.client.get(f"/v1/paper/{PAIR}", headers=auth(token))
    assert first.status_code == 200, first.text
    at(api, C0 + DAYS * 24 * H)
    for _ in range(3):  # more calls than the quota allows forecasts
        later = api.client.get(f"/v1/paper/{PAIR}", headers=auth(token))
        assert later.status_code == 200, later.text
        assert "X-RateLimit-Remaining" not in later.headers
    assert api.usage(user_id) == 0 and api.forecaster.calls == 0
    body, before = later.json(), first.json()
    PaperOut.model_validate(body)
    assert body["label"] == before["label"] == "paper, not advice" and body["rule"]["horizon"] == 24
    assert (before["from"], before["to"]) == ("2024-09-02T01:00:00Z", "2024-09-03T06:00:00Z")
    assert len(before["points"]) == 29 and before["decisions"] == 2
    assert body["to"] == "2024-09-05T00:00:00Z" and len(body["points"]) == DAYS * 24 - 1
    assert body["decisions"] == DAYS and body["points"][:29] == before["points"]
    assert [p["close"] for p in body["points"]] == closes[1 : DAYS * 24]
    for day in range(DAYS):  # min(cap, target vol / annualised vol of the day's range)
        vol = 0.04 * (day + 1) / (Z90 * math.sqrt(24)) * math.sqrt(HOURS_PER_YEAR)
        exposure = [p["model_exposure"] for p in body["points"][day * 24 : day * 24 + 24]]
        assert exposure == pytest.approx([min(1.0, 0.4 / vol)] * len(exposure), rel=1e-9)
    assert {p["buy_hold_exposure"] for p in body["points"]} == {1.0}
    ewma = body["strategies"]["ewma"]  # sized from the bundled candles before each decision
    assert ewma is not None and ewma["hours"] == DAYS * 24 - 1 and 0 < ewma["mean_exposure"] <= 1
    assert body["strategies"]["model"]["fees"] > 0 and "(paper, not advice)" in body["verdict"]

    csv = api.client.get(f"/v1/paper/{PAIR}?format=csv", headers=auth(token))
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert "paper-not-advice" in csv.headers["content-disposition"]
    rows = csv.text.splitlines()
    assert rows[0].startswith("label,time,close,model_exposure") and len(rows) == DAYS * 24
    assert all(r.startswith('"paper, not advice",') for r in rows[1:])
    accepted = api.client.get(f"/v1/paper/{PAIR}", headers=auth(token) | {"Accept": "text/csv"})
    assert accepted.text == csv.text

    scraped = {
        (s.name, s.labels.get("strategy")): s.value
        for f in text_string_to_metric_families(api.client.get("/metrics").text)
        for s in f.samples
        if s.labels.get("pair") == PAIR
    }
    model = body["strategies"]["model"]
    assert scraped[("mur_paper_equity", "model")] == pytest.approx(1 + model["total_return"])
    assert scraped[("mur_paper_exposure", "model")] == pytest.approx(model["exposure_now"])
    assert scraped[("mur_paper_drawdown", "buy_hold")] == pytest.approx(
        body["strategies"]["buy_hold"]["drawdown_now"]
    )


def test_paper_errors_are_json(api: Api) -> None:
    _, token = api.user()
    at(api, C0 + 30 * H)
    empty = assert_error(api.client.get(f"/v1/paper/{PAIR}", headers=auth(token)), 404, "not_found")
    assert "fills as forecasts of the 24 h horizon are served" in empty["message"]
    assert_error(api.client.get(f"/v1/paper/{PAIR}"), 401, "unauthorized")
    for query in ("days=0", "days=366", "format=xml"):
        assert api.client.get(f"/v1/paper/{PAIR}?{query}", headers=auth(token)).status_code == 422
    unknown = api.client.get("/v1/paper/doge_usdt", headers=auth(token))
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_pair"
