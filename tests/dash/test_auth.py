"""Accounts and access control through Flask's test client: register → login → pages → logout, guard, CSRF,
rate limiting, cookie flags and the secret key rules."""

from __future__ import annotations

import re

import pytest
from dash import Dash
from dash_helpers import (
    PASSWORD,
    dash_update,
    form_csrf,
    logged_in,
    login,
    make_user,
    page,
    random_name,
    register,
    text_of,
)
from flask.testing import FlaskClient

from dash_app.app import create_app, resolve_secret_key
from dash_app.auth import REGISTRATION_FAILED
from mur.db import Database, get_user_by_username
from mur.errors import ConfigError
from mur.settings import Settings

PAGE_OUTPUT = "..navbar.children...page-content.children.."


def test_register_login_pages_logout(client: FlaskClient, dash_database: Database) -> None:
    username = random_name()
    response = register(client, username, email=f"{username}@example.org")
    assert response.status_code == 302 and response.headers["Location"].endswith("/login")
    user = get_user_by_username(dash_database, username=username)
    assert user is not None and user.roles == ("member",) and user.email == f"{username}@example.org"

    response = login(client, username, next_page="/api")
    assert response.status_code == 302 and response.headers["Location"] == "/api"
    for path in ("/forecast", "/api"):
        response = client.get(path)
        assert response.status_code == 200 and b"_dash-config" in response.data
        assert response.headers["Cache-Control"] == "no-store"
    assert client.get("/").headers["Location"] == "/forecast"
    assert client.get("/_dash-layout").status_code == 200
    assert client.get("/_dash-dependencies").status_code == 200
    rendered = page(client, "/api")
    assert username in text_of(rendered["navbar"]) and "Admin" not in text_of(rendered["navbar"])
    assert "API tokens" in text_of(rendered["page-content"])

    # logout is a CSRF-protected POST; afterwards every page needs a login again
    response = client.post("/logout", data={"csrf_token": form_csrf(client, "/login")})
    assert response.status_code == 302 and response.headers["Location"].endswith("/login")
    assert client.get("/forecast").status_code == 302
    assert client.get("/_dash-layout").status_code == 401


@pytest.mark.parametrize("path", ["/forecast", "/api", "/admin"])
def test_pages_redirect_to_login_without_session(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"] == f"/login?next={path}"


@pytest.mark.parametrize("path", ["/_dash-layout", "/_dash-dependencies"])
def test_dash_endpoints_are_401_without_session(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 401 and response.get_json() == {"error": "login required"}


def test_dash_callback_is_401_without_session(client: FlaskClient) -> None:
    response = client.post(
        "/_dash-update-component",
        json={
            "output": PAGE_OUTPUT,
            "outputs": [],
            "inputs": [{"id": "url", "property": "pathname", "value": "/admin"}],
            "changedPropIds": ["url.pathname"],
        },
    )
    assert response.status_code == 401


def test_unknown_paths_are_404_and_public_assets_load(client: FlaskClient) -> None:
    assert client.get("/no-such-page").status_code == 404
    assert client.get("/login/../admin").status_code in (302, 404)
    assert client.get("/assets/style.css").status_code == 200
    assert client.get("/login").status_code == 200


def test_member_gets_403_on_admin(client: FlaskClient, dash_database: Database) -> None:
    member = make_user(dash_database)
    logged_in(client, member)
    response = client.get("/admin")
    assert response.status_code == 403 and b"mur users grant YOUR_NAME admin" in response.data
    # the page callback refuses too (a member could send pathname=/admin by hand) ...
    assert "mur users grant YOUR_NAME admin" in text_of(page(client, "/admin")["page-content"])
    # ... and so does every callback on admin components, before it runs
    response = dash_update(
        client,
        "..admin-result.children...admin-users-table.children..",
        inputs=[{"id": "admin-save", "property": "n_clicks", "value": 1}],
        state=[
            {"id": "admin-user", "property": "value", "value": member.id},
            {"id": "admin-status", "property": "value", "value": "active"},
            {"id": "admin-roles", "property": "value", "value": ["admin", "member"]},
            {"id": "admin-quota", "property": "value", "value": None},
        ],
        changed=["admin-save.n_clicks"],
    )
    assert response.status_code == 403
    refreshed = get_user_by_username(dash_database, username=member.username)
    assert refreshed is not None and refreshed.roles == ("member",)


def test_admin_sees_admin_page(client: FlaskClient, dash_database: Database) -> None:
    admin = make_user(dash_database, admin=True)
    logged_in(client, admin)
    assert client.get("/admin").status_code == 200
    rendered = page(client, "/admin")
    assert "Admin" in text_of(rendered["navbar"])
    assert admin.username in text_of(rendered["page-content"])


def test_post_without_csrf_token_is_refused(client: FlaskClient, dash_database: Database) -> None:
    username = random_name()
    data = {"username": username, "email": "", "password": PASSWORD, "confirm": PASSWORD}
    assert client.post("/register", data=data).status_code == 400
    assert client.post("/register", data={**data, "csrf_token": "forged"}).status_code == 400
    assert get_user_by_username(dash_database, username=username) is None

    member = make_user(dash_database)
    assert client.post("/login", data={"username": member.username, "password": PASSWORD}).status_code == 400
    logged_in(client, member)
    assert client.post("/logout").status_code == 400
    # Dash callbacks need the X-CSRFToken header too
    body = dict(inputs=[{"id": "url", "property": "pathname", "value": "/api"}], changed=["url.pathname"])
    assert dash_update(client, PAGE_OUTPUT, csrf=False, **body).status_code == 400
    forged = client.post(
        "/_dash-update-component",
        json={"output": PAGE_OUTPUT, "outputs": [], **body},
        headers={"X-CSRFToken": "forged"},
    )
    assert forged.status_code == 400 and "CSRF" in forged.get_json()["error"]
    assert dash_update(client, PAGE_OUTPUT, **body).status_code == 200


def test_failed_login_does_not_say_whether_the_user_exists(
    client: FlaskClient, dash_database: Database
) -> None:
    member = make_user(dash_database)
    wrong_password = login(client, member.username, "Wrong-password-1")
    unknown_user = login(client, random_name("ghost"), "Wrong-password-1")
    assert wrong_password.status_code == unknown_user.status_code == 401
    for response in (wrong_password, unknown_user):
        assert b"Invalid username or password." in response.data


def test_logins_are_rate_limited_per_username_and_ip(
    client: FlaskClient, make_client, dash_database: Database, dash_settings: Settings
) -> None:
    member = make_user(dash_database)
    for _ in range(dash_settings.dashboard.login_max_attempts):
        assert login(client, member.username, "Wrong-password-1").status_code == 401
    # the right password is now refused too, from this IP ...
    blocked = login(client, member.username)
    assert blocked.status_code == 429 and b"Too many failed login attempts" in blocked.data
    # ... but the owner logs in from another IP: a stranger cannot lock the account this cheaply
    assert login(make_client(), member.username).status_code == 302
    # another user from a third IP is not affected
    third, someone = make_client(), make_user(dash_database)
    assert login(third, someone.username).status_code == 302


def test_one_ip_trying_many_usernames_is_limited(
    client: FlaskClient, make_client, dash_database: Database, dash_settings: Settings
) -> None:
    users = [make_user(dash_database) for _ in range(dash_settings.dashboard.login_ip_max_attempts + 1)]
    for user in users[:-1]:  # one failure per username, all from one IP
        assert login(client, user.username, "Wrong-password-1").status_code == 401
    assert login(client, users[-1].username).status_code == 429
    assert login(make_client(), users[-1].username).status_code == 302  # other IPs are not affected


def test_a_username_locks_only_at_its_own_higher_limit(
    make_client, dash_database: Database, dash_settings: Settings
) -> None:
    """Failures from many IPs (below each pair's limit) lock the username at login_user_max_attempts."""
    assert dash_settings.dashboard.login_user_max_attempts > dash_settings.dashboard.login_max_attempts
    member = make_user(dash_database)
    for _ in range(dash_settings.dashboard.login_user_max_attempts):
        assert login(make_client(), member.username, "Wrong-password-1").status_code == 401
    assert login(make_client(), member.username).status_code == 429


def test_logout_ends_the_session_on_the_server(
    client: FlaskClient, make_client, dash_database: Database
) -> None:
    """A session cookie copied before logout does not work after it (no replay for the session's 12 h)."""
    member = make_user(dash_database)
    logged_in(client, member)
    cookie = client.get_cookie("mur_session")
    assert cookie is not None
    replay = make_client()
    replay.set_cookie("mur_session", cookie.value)
    assert replay.get("/forecast").status_code == 200  # the copied cookie works while logged in ...
    client.post("/logout", data={"csrf_token": form_csrf(client, "/login")})
    assert replay.get("/forecast").status_code == 302  # ... and not after the logout
    assert replay.get("/_dash-layout").status_code == 401
    logged_in(client, member)  # logging in again works, with a new session


def test_new_password_ends_existing_sessions(client: FlaskClient, dash_database: Database) -> None:
    from mur.db import set_password

    member = make_user(dash_database)
    logged_in(client, member)
    set_password(dash_database, user_id=member.id, password="Another-Horse-77")
    assert client.get("/forecast").status_code == 302
    logged_in(client, member, password="Another-Horse-77")


def test_register_messages(client: FlaskClient, dash_database: Database) -> None:
    taken = make_user(dash_database)
    response = register(client, taken.username.upper())
    # a taken username is answered exactly like a username refused for another reason (here: a leading
    # space): same status, same message, same page but for the echoed name and the CSRF token
    refused = register(client, " " + random_name())
    assert response.status_code == refused.status_code == 400
    assert REGISTRATION_FAILED.encode() in response.data and REGISTRATION_FAILED.encode() in refused.data
    assert b"taken" not in response.data.lower() and b"not available" not in response.data

    def page(body: bytes) -> bytes:
        return re.sub(rb'value="[^"]*"', b'value=""', body)

    assert page(response.data) == page(refused.data)
    weak = register(client, random_name(), password="aaaaaaaaaaaa")
    assert weak.status_code == 400 and b"must not repeat a single character" in weak.data
    mismatch = client.post(
        "/register",
        data={
            "csrf_token": form_csrf(client, "/register"),
            "username": random_name(),
            "password": PASSWORD,
            "confirm": PASSWORD + "x",
        },
    )
    assert mismatch.status_code == 400 and b"The passwords differ." in mismatch.data


def test_disabled_user_is_logged_out_and_cannot_log_in(
    client: FlaskClient, make_client, dash_database: Database
) -> None:
    from mur.db import set_user_disabled

    member = make_user(dash_database)
    logged_in(client, member)
    set_user_disabled(dash_database, user_id=member.id, disabled=True)
    assert client.get("/forecast").status_code == 302
    assert login(make_client(), member.username).status_code == 401


def test_session_cookie_flags(client: FlaskClient, dash_database: Database, dash_settings: Settings) -> None:
    member = make_user(dash_database)
    response = login(client, member.username)
    cookie = next(h for h in response.headers.getlist("Set-Cookie") if h.startswith("mur_session="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    csrf_cookie = next(
        h for h in client.get("/forecast").headers.getlist("Set-Cookie") if h.startswith("_csrf_token=")
    )
    assert "SameSite=Strict" in csrf_cookie and "HttpOnly" not in csrf_cookie
    production = create_app(
        dash_settings.replace(env="production", s3_secret_key="not-a-placeholder"),
        db=dash_database,
    )
    assert production.server.config["SESSION_COOKIE_SECURE"] is True
    assert response.headers["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize("key", ["change-me", "secret", "short", "  placeholder "])
def test_placeholder_secret_keys_are_refused(key: str) -> None:
    for env in ("development", "test"):
        with pytest.raises(ConfigError, match="MUR_SECRET_KEY"):
            resolve_secret_key(Settings(env=env, secret_key=key))


def test_secret_key_required_outside_development() -> None:
    with pytest.raises(ConfigError, match="must be set"):
        resolve_secret_key(Settings(env="test", secret_key=None))
    assert len(resolve_secret_key(Settings(env="development", secret_key=None))) >= 32
    good = "k" * 40
    assert resolve_secret_key(Settings(env="test", secret_key=good)) == good


def test_open_redirect_is_refused(client: FlaskClient, dash_database: Database, dash_app: Dash) -> None:
    member = make_user(dash_database)
    for target in ("https://evil.example/", "//evil.example/forecast", "/logout"):
        response = login(client, member.username, next_page=target)
        assert response.headers["Location"] == "/forecast"


def test_database_down_is_a_503_without_details(dash_settings: Settings) -> None:
    from dash_fakes import free_port

    down = dash_settings.replace(pg_port=free_port())
    db = Database(down, maxconn=1)
    client = create_app(down, db=db).server.test_client()
    assert client.get("/login").status_code == 200  # the form itself needs no database
    response = client.post(
        "/login", data={"csrf_token": form_csrf(client, "/login"), "username": "x", "password": "y"}
    )
    assert response.status_code == 503 and b"database is unavailable" in response.data
    assert str(down.db.pg_port).encode() not in response.data
    db.close()
