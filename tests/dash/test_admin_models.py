"""The admin page's champion history card through Dash callbacks as the renderer sends them (issue 37): a
member is refused (403) before the callback runs; an admin sees the pair's moves newest first, and a rollback
without a reason is refused in one line (the rollback itself: tests/integration/test_alias_history.py)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from dash import Dash
from dash_helpers import callback_json, dash_update, logged_in, make_user, text_of
from flask.testing import FlaskClient

from mur.db import Database
from mur.db.alias_history import record_move

HISTORY = "admin-models-history.children"


def test_history_and_a_refused_rollback(client: FlaskClient, dash_app: Dash, dash_database: Database) -> None:
    pair = f"t{secrets.token_hex(3)}_usdt"
    for version, previous in ((1, None), (2, 1)):
        record_move(dash_database, pair=pair, version=version, previous_version=previous, action="gate",
                    actor="gate", reason=f"rule {version}", scores={"skill": 0.0125},
                    market_time=datetime(2025, 1, 6, 9, tzinfo=UTC))  # fmt: skip
    show = {"inputs": [{"id": "admin-models-pair", "property": "value", "value": pair}]}
    member = logged_in(dash_app.server.test_client(), make_user(dash_database))
    assert dash_update(member, HISTORY, **show).status_code == 403

    admin = logged_in(client, make_user(dash_database, admin=True))
    table = text_of(callback_json(dash_update(admin, HISTORY, **show))["admin-models-history"])
    assert table.index("v1 -> v2") < table.index("- -> v1") and "skill 0.0125" in table and "rule 2" in table

    key = next(k for k in dash_app.callback_map if "admin-models-result" in k)
    refused = dash_update(
        admin,
        key,
        inputs=[{"id": "admin-models-rollback", "property": "n_clicks", "value": 1}],
        state=[
            {"id": "admin-models-pair", "property": "value", "value": pair},
            {"id": "admin-models-to", "property": "value", "value": None},
            {"id": "admin-models-reason", "property": "value", "value": ""},
        ],
        changed=["admin-models-rollback.n_clicks"],
    )
    out = callback_json(refused)
    assert text_of(out["admin-models-result"]).startswith(
        "Not rolled back: a rollback needs a reason: say why"
    )
    assert "v1 -> v2" in text_of(out["admin-models-history"])
