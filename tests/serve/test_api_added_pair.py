"""A pair an admin uploaded, served by the deployed app (issue 25): no model yet is a JSON 503 ``no_champion``
(a pair nobody added a 404 ``unknown_pair``), never another pair's model; once the pair has a champion the app serves it without a redeploy, forecasting from the
pair's own uploaded candles (read by the replicas from PostgreSQL), not another pair's."""

from __future__ import annotations

import io
import secrets
from datetime import timedelta

import pytest
from api_fakes import assert_error
from pair_csv import START, pair_csv_text
from serve_helpers import ServeStack, copy_version, promote, wait_until

from mur.data.catalogue import add_csv_pair
from mur.db import Database
from mur.timeutil import iso

pytestmark = pytest.mark.serve

HOURS = 300


def test_an_uploaded_pair_is_served_from_its_own_candles(serve_stack: ServeStack) -> None:
    stack = serve_stack
    pair = f"t{secrets.token_hex(3)}_usdt"
    settings = stack.direct.replace(pair_min_history_hours=200)
    with Database(settings, maxconn=1) as db:
        add_csv_pair(
            settings, db, pair, io.BytesIO(pair_csv_text(HOURS).encode()), name="up.csv", added_by="t"
        )
    last_close = float(pair_csv_text(HOURS).strip().splitlines()[-1].split(",")[4])

    _, token = stack.make_user()
    _, admin = stack.make_user(admin=True)
    never_added = f"t{secrets.token_hex(3)}_usdt"
    with stack.client(token) as client:
        # each API replica re-reads the catalogue at least every 30 s (ApiService.refresh_catalogue)
        wait_until(
            lambda: all(client.get(f"/v1/forecast/{pair}").status_code == 503 for _ in range(4)),
            120,
            "the added pair known to every API replica",
        )
        error = assert_error(client.get(f"/v1/forecast/{never_added}"), 404, "unknown_pair")
        assert (
            never_added in error["message"] and pair in error["message"]
        )  # the catalogue lists the added one
        for call in (
            lambda: client.get(f"/v1/forecast/{pair}"),
            lambda: client.post(f"/v1/forecast/{pair}", json={"candles": []}),
        ):
            error = assert_error(call(), 503, "no_champion")  # added, no model yet: never another pair's
            assert pair in error["message"]

        version = copy_version(stack.direct, stack.pair, stack.versions[stack.pair], to_pair=pair)
        promote(stack.direct, pair, version)
        with stack.client(admin) as admin_client:
            admin_client.post("/v1/admin/reload", params={"wait_s": 30}, timeout=90)
        wait_until(
            lambda: client.get(f"/v1/forecast/{pair}").status_code == 200, 240, "the uploaded pair served"
        )
        body = client.get(f"/v1/forecast/{pair}").json()
    assert body["pair"] == pair and body["model_version"] == version
    assert body["candle_time"] == iso(START + timedelta(hours=HOURS - 1))  # its own last uploaded candle
    assert body["last_close"] == pytest.approx(last_close)
