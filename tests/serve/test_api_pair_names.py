"""The API takes a pair as users type it (in-process API, real PostgreSQL): ``eth_usdt``, ``ETH-USDT`` or the
Binance symbol ``ETHUSDT`` (as the CLI does), and answers for the canonical pair; anything else stays a 404."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_fakes import PAIR, Api, assert_error, auth, running_api

from mur.pairs import lenient_pair
from mur.settings import Settings


@pytest.fixture
def api(pg_settings: Settings) -> Iterator[Api]:
    with running_api(pg_settings) as api:
        yield api


def test_lenient_pair_reads_symbols_and_leaves_the_rest() -> None:
    assert lenient_pair("BTCUSDT") == lenient_pair("btcusdt") == lenient_pair("BTC-USDT") == "btc_usdt"
    assert lenient_pair("../etc") == "../etc" and lenient_pair("BTCXYZ") == "BTCXYZ"


def test_symbols_reach_the_pair(api: Api) -> None:
    _, token = api.user()
    symbol = PAIR.replace("_", "").upper()  # ETHUSDT
    for name in (symbol, symbol.lower(), PAIR.upper().replace("_", "-")):
        answer = api.client.get(f"/v1/forecast/{name}", headers=auth(token))
        assert answer.status_code == 200 and answer.json()["pair"] == PAIR, answer.text
        record = api.client.get(f"/v1/track-record/{name}", headers=auth(token))
        assert record.status_code == 200 and record.json()["pair"] == PAIR, record.text
    assert_error(api.client.get("/v1/forecast/DOGEUSDT", headers=auth(token)), 404, "unknown_pair")
    assert_error(api.client.get("/v1/forecast/NOTAPAIR", headers=auth(token)), 404, "unknown_pair")
