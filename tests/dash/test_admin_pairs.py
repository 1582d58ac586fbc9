"""The admin page's Pairs card through Dash callbacks as the renderer sends them (issue 25): a member's upload
is refused (403) before it runs; an admin's upload with a bad column is refused in one line and adds nothing;
a good one adds the pair to the training catalogue; removing it keeps its candles."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from typing import Any

import pytest
from dash import Dash
from dash_helpers import callback_json, dash_update, logged_in, make_user, text_of
from flask.testing import FlaskClient
from pair_csv import pair_csv_text

from mur.data.catalogue import pair_catalogue
from mur.db import Database
from mur.db.pairs import get_pair_record, pair_candle_rows
from mur.settings import Settings

ADD = "..admin-pair-result.children...admin-pairs.children...admin-pair-remove-pair.options.."


@pytest.fixture(scope="module")
def dash_db_settings(pg_database_factory: Callable[..., Settings]) -> Settings:
    """A database of this module's own (the catalogue it changes is nobody else's), a short minimum history."""
    return pg_database_factory().replace(pair_min_history_hours=200)


def add(client: FlaskClient, symbol: str, csv_text: str, filename: str = "up.csv") -> Any:
    contents = "data:text/csv;base64," + base64.b64encode(csv_text.encode()).decode()
    return dash_update(
        client,
        ADD,
        inputs=[{"id": "admin-pair-add", "property": "n_clicks", "value": 1}],
        state=[
            {"id": "admin-pair-symbol", "property": "value", "value": symbol},
            {"id": "admin-pair-upload", "property": "contents", "value": contents},
            {"id": "admin-pair-upload", "property": "filename", "value": filename},
        ],
        changed=["admin-pair-add.n_clicks"],
    )


def test_the_pairs_card_adds_refuses_and_removes(
    client: FlaskClient,
    make_client: Callable[[], FlaskClient],
    dash_app: Dash,
    dash_database: Database,
    dash_settings: Settings,
) -> None:
    pair = f"t{secrets.token_hex(3)}_usdt"
    symbol = pair.replace("_", "").upper()
    good = pair_csv_text(300)

    member = logged_in(make_client(), make_user(dash_database))
    assert add(member, symbol, good).status_code == 403  # the guard, before the callback runs
    assert get_pair_record(dash_database, pair=pair) is None

    admin_user = make_user(dash_database, admin=True)
    admin = logged_in(client, admin_user)
    out = callback_json(add(admin, symbol, good.replace("close", "last", 1), "bad.csv"))
    message = text_of(out["admin-pair-result"])
    assert message.startswith("Not added: candles CSV bad.csv is missing column(s): close"), message
    assert get_pair_record(dash_database, pair=pair) is None

    out = callback_json(add(admin, symbol, good))
    assert f"Added {pair.upper()}: 300 hourly candles from up.csv" in text_of(out["admin-pair-result"])
    assert pair in text_of(out["admin-pairs"])
    assert {"label": pair.upper(), "value": pair} in out["admin-pair-remove-pair"]["options"]
    assert pair_catalogue(dash_settings, dash_database)[-1] == pair

    again = callback_json(add(admin, symbol, good))  # the same pair twice
    assert "in the catalogue already" in text_of(again["admin-pair-result"])

    remove_key = next(k for k in dash_app.callback_map if "admin-pair-remove-result" in k)  # "@hash" suffixes
    removed = dash_update(
        admin,
        remove_key,
        inputs=[{"id": "admin-pair-remove", "property": "n_clicks", "value": 1}],
        state=[{"id": "admin-pair-remove-pair", "property": "value", "value": pair}],
        changed=["admin-pair-remove.n_clicks"],
    )
    out = callback_json(removed)
    assert f"Removed {pair.upper()} from training" in text_of(out["admin-pair-remove-result"])
    assert pair not in [o["value"] for o in out["admin-pair-remove-pair"]["options"]]
    record = get_pair_record(dash_database, pair=pair)
    assert record is not None and not record.active and record.removed_by == admin_user.username
    assert len(pair_candle_rows(dash_database, pair=pair)) == 300  # the history stays
