"""SQL-injection strings in every form field change nothing but what the form is for (table contents asserted).

Fields: register (username, email, password, confirm), login (username, password), token name, token ids,
admin (user, status, roles, quota), training (pair, epochs) and the forecast pair.
"""

from __future__ import annotations

from typing import Any

import pytest
from dash_fakes import FakeService
from dash_helpers import (
    callback_json,
    forecast_page,
    logged_in,
    login,
    make_user,
    register,
    save_user,
    text_of,
    token_action,
    train,
)
from flask.testing import FlaskClient

from mur.db import Database, get_user_by_username

INJECTIONS = [
    "' OR '1'='1",
    "x'; DROP TABLE users; --",
    "admin'--",
    '"; DELETE FROM api_tokens; --',
    "1; UPDATE quotas SET monthly_limit = 0",
    "%(user_id)s %s",
    "$$; TRUNCATE users CASCADE; $$",
    "1 UNION SELECT password_hash FROM users",
]
TABLES = {
    "users": "SELECT id, username, email, password_hash, disabled FROM users ORDER BY id",
    "user_roles": "SELECT user_id, role FROM user_roles ORDER BY user_id, role",
    "api_tokens": "SELECT id, user_id, token_hash, name, revoked_at FROM api_tokens ORDER BY id",
    "quotas": "SELECT user_id, monthly_limit FROM quotas ORDER BY user_id",
    "api_usage": "SELECT user_id, month, count FROM api_usage ORDER BY user_id, month",
    "forecasts": "SELECT id, pair, model_version, target_time, predicted, actual FROM forecasts ORDER BY id",
}


def snapshot(db: Database) -> dict[str, list[dict[str, Any]]]:
    """Every row of the tables the forms could touch."""
    out = {}
    with db.cursor() as cur:
        for table, query in TABLES.items():
            cur.execute(query)
            out[table] = [dict(row) for row in cur.fetchall()]
    return out


def test_login_form(make_client, dash_database: Database) -> None:
    make_user(dash_database)
    before = snapshot(dash_database)
    for value in INJECTIONS:  # both fields at once: each login costs an argon2 verification
        response = login(make_client(), value, value)
        assert response.status_code in (400, 401, 429) and "Location" not in response.headers
    assert snapshot(dash_database) == before


def test_register_form(make_client, dash_database: Database) -> None:
    """A registration creates exactly one member whose fields are the strings as typed; as a username (outside
    the username alphabet) the string is refused and changes nothing."""
    from dash_helpers import random_name

    for i, value in enumerate(INJECTIONS):
        password = INJECTIONS[(i + 1) % len(INJECTIONS)] + "-Pw42"  # an injection string as password too
        before = snapshot(dash_database)
        refused = register(make_client(), value, password=password)
        assert refused.status_code == 400 and snapshot(dash_database) == before
        name = random_name()
        response = register(make_client(), name, password=password, email=f"{value}@example.org")
        assert response.status_code == 302, response.get_data(as_text=True)[:300]
        after = snapshot(dash_database)
        new_users = [u for u in after["users"] if u not in before["users"]]
        assert [(u["username"], u["email"]) for u in new_users] == [(name, f"{value}@example.org")]
        assert [r for r in after["user_roles"] if r not in before["user_roles"]] == [
            {"user_id": new_users[0]["id"], "role": "member"}
        ]
        for table in ("api_tokens", "quotas", "api_usage", "forecasts"):
            assert after[table] == before[table]
        if i == 0:  # the account works with the strings as typed
            assert login(make_client(), name, password).status_code == 302


@pytest.mark.parametrize("field", ["username", "email", "password", "confirm"])
def test_register_form_refusals_change_nothing(
    client: FlaskClient, dash_database: Database, field: str
) -> None:
    from dash_helpers import form_csrf, random_name

    before = snapshot(dash_database)
    for value in INJECTIONS:
        data = {
            "username": random_name(),
            "email": "",
            "password": "Pw-long-enough-1",
            "confirm": "Pw-long-enough-1",
        }
        data[field] = value * 30 if field in ("username", "email") else value  # too long / weak / mismatched
        response = client.post("/register", data={"csrf_token": form_csrf(client, "/register"), **data})
        assert response.status_code in (400, 409)
    assert snapshot(dash_database) == before


def test_token_fields(client: FlaskClient, dash_database: Database) -> None:
    member = make_user(dash_database)
    logged_in(client, member)
    for value in INJECTIONS:
        before = snapshot(dash_database)
        shown = text_of(token_action(client, "token-create", name=value)["token-new"])
        assert "created" in shown
        after = snapshot(dash_database)
        new_tokens = [t for t in after["api_tokens"] if t not in before["api_tokens"]]
        assert [(t["user_id"], t["name"]) for t in new_tokens] == [(member.id, value.strip())]
        assert {k: v for k, v in after.items() if k != "api_tokens"} == {
            k: v for k, v in before.items() if k != "api_tokens"
        }
    before = snapshot(dash_database)
    for value in INJECTIONS:
        for kind in ("token-rotate", "token-revoke"):
            out = token_action(client, {"index": value, "type": kind})
            assert "Nothing changed" in text_of(out["token-new"])
    assert snapshot(dash_database) == before


def test_admin_fields(client: FlaskClient, dash_database: Database, airflow_api: FakeService) -> None:
    admin, member = make_user(dash_database, admin=True), make_user(dash_database)
    logged_in(client, admin)
    before = snapshot(dash_database)
    requests_before = len(airflow_api.requests)
    for value in INJECTIONS:
        for kwargs in (
            {"user_id": value},
            {"user_id": member.id, "status": value},
            {"user_id": member.id, "roles": [value]},
            {"user_id": member.id, "roles": value},
            {"user_id": member.id, "quota": value},
        ):
            user_id = kwargs.pop("user_id")
            out = callback_json(save_user(client, user_id, **kwargs))
            assert "Nothing changed" in text_of(out["admin-result"]), (user_id, kwargs)
        assert "Pick one of the listed pairs" in train(client, value, 3)
        assert "Epochs must be a whole number" in train(client, "btc_usdt", value)
    assert snapshot(dash_database) == before
    assert len(airflow_api.requests) == requests_before
    assert get_user_by_username(dash_database, username=member.username) is not None


def test_forecast_pair(client: FlaskClient, dash_database: Database, serve_api: FakeService) -> None:
    logged_in(client, make_user(dash_database))
    forecast_page(client, "btc_usdt")  # creates the user's dashboard token first
    before = snapshot(dash_database)
    requests_before = len(serve_api.requests)
    for value in INJECTIONS:
        assert "Pick one of the listed pairs" in text_of(forecast_page(client, value)["forecast-status"])
    assert snapshot(dash_database) == before
    assert len(serve_api.requests) == requests_before
