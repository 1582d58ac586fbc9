"""Limits on accounts under load and abuse: atomic login limits under parallel requests, the bound on
concurrent password hashing, X-Forwarded-For only from trusted proxies, and registration (rate limit,
open / invite / closed)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from dash import Dash
from dash_helpers import (
    PASSWORD,
    callback_json,
    dash_update,
    form_csrf,
    logged_in,
    login,
    make_user,
    random_ip,
    random_name,
    register,
    text_of,
)
from flask.testing import FlaskClient

from dash_app.app import create_app
from dash_app.auth import REGISTRATION_FAILED
from dash_app.context import EXTENSION_KEY
from mur.db import Database, create_invite, get_user_by_username, logins
from mur.settings import Settings


def _clients(app: Dash, count: int, *, ip: str) -> list[FlaskClient]:
    clients = []
    for _ in range(count):
        test_client = app.server.test_client()
        test_client.environ_base["REMOTE_ADDR"] = ip
        clients.append(test_client)
    return clients


def _app_client(settings: Settings, db: Database) -> FlaskClient:
    (client,) = _clients(create_app(settings, db=db), 1, ip=random_ip())
    return client


def _find(tree: Any, component_id: str) -> Any:
    """The props of the component with this id in a serialised Dash tree, or None."""
    if isinstance(tree, dict):
        props = tree.get("props")
        if isinstance(props, dict) and props.get("id") == component_id:
            return props
        return _find(list(tree.values()), component_id)
    if isinstance(tree, list):
        return next((found for item in tree if (found := _find(item, component_id)) is not None), None)
    return None


def _failures(db: Database, username: str, ip: str) -> logins.LoginFailures:
    """The recent failures the login limits count (within 300 s), as ``begin_login_attempt`` reads them."""
    with db.cursor() as cur:
        return logins._recent_failures(cur, username, ip, 300)


def _parallel_logins(clients: list[FlaskClient], username: str, password: str) -> list[int]:
    """Every client posts the login form at the same moment; their status codes."""
    tokens = [form_csrf(c, "/login") for c in clients]
    start = threading.Barrier(len(clients))

    def attempt(index: int) -> int:
        start.wait()
        response = clients[index].post(
            "/login", data={"csrf_token": tokens[index], "username": username, "password": password}
        )
        return response.status_code

    with ThreadPoolExecutor(len(clients)) as pool:
        return list(pool.map(attempt, range(len(clients))))


def test_parallel_wrong_logins_cannot_pass_the_limit(
    dash_settings: Settings, dash_database: Database
) -> None:
    """20 parallel wrong passwords with a limit of 5: exactly 5 reach the password check, 15 get 429."""
    settings = dash_settings.replace(login_max_attempts=5, hashing_concurrency=20)
    member, ip = make_user(dash_database), random_ip()
    clients = _clients(create_app(settings, db=dash_database), 20, ip=ip)
    statuses = _parallel_logins(clients, member.username, "Wrong-pw-42")
    assert Counter(statuses) == {401: 5, 429: 15}
    failures = _failures(dash_database, member.username, ip)
    assert failures.per_user_ip == 5


def test_concurrent_password_checks_are_bounded(
    dash_settings: Settings, dash_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With hashing_concurrency=2, at most two password checks run at once; the others get 503 at once."""
    import mur.db.users

    real_verify = mur.db.users.verify_password
    lock, running, peak = threading.Lock(), [0], [0]

    def slow_verify(password_hash: str, password: str) -> bool:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            time.sleep(0.2)
            return real_verify(password_hash, password)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(mur.db.users, "verify_password", slow_verify)
    settings = dash_settings.replace(
        hashing_concurrency=2, login_max_attempts=100, login_ip_max_attempts=100, login_user_max_attempts=100
    )
    member = make_user(dash_database)
    clients = _clients(create_app(settings, db=dash_database), 12, ip=random_ip())
    statuses = _parallel_logins(clients, member.username, "Wrong-pw-42")
    assert peak[0] <= 2
    assert set(statuses) <= {401, 503} and 503 in statuses and 401 in statuses


def test_busy_hashing_gives_503_and_counts_no_failure(
    dash_settings: Settings, dash_database: Database
) -> None:
    member, ip = make_user(dash_database), random_ip()
    app = create_app(dash_settings.replace(hashing_concurrency=1), db=dash_database)
    (client,) = _clients(app, 1, ip=ip)
    with app.server.extensions[EXTENSION_KEY].hashing.slot():  # every slot taken
        response = login(client, member.username)
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert b"try again in a moment" in response.data
    assert _failures(dash_database, member.username, ip).per_user_ip == 0
    assert login(client, member.username).status_code == 302  # free again


# ------------------------------------------------------------------------------------------------
# X-Forwarded-For
# ------------------------------------------------------------------------------------------------


def _login_from(client: FlaskClient, forwarded_for: str, username: str, password: str = PASSWORD) -> int:
    token = form_csrf(client, "/login")
    return client.post(
        "/login",
        data={"csrf_token": token, "username": username, "password": password},
        headers={"X-Forwarded-For": forwarded_for},
    ).status_code


def test_forwarded_for_is_ignored_without_trusted_proxies(
    client: FlaskClient, dash_database: Database, dash_settings: Settings
) -> None:
    """Without MUR_TRUSTED_PROXY_HOPS, a client cannot dodge its (username, IP) limit with a fake header."""
    member = make_user(dash_database)
    for _ in range(dash_settings.dashboard.login_max_attempts):
        assert _login_from(client, random_ip(), member.username, "Wrong-password-1") == 401
    assert _login_from(client, random_ip(), member.username) == 429


def test_forwarded_for_from_a_trusted_proxy_is_the_client_ip(
    dash_settings: Settings, dash_database: Database
) -> None:
    """Behind one trusted proxy, two clients of that proxy have their own limits (not one global count)."""
    proxy = random_ip()
    settings = dash_settings.replace(trusted_proxy_hops=1)
    (client,) = _clients(create_app(settings, db=dash_database), 1, ip=proxy)
    member, attacker, owner = make_user(dash_database), random_ip(), random_ip()
    for _ in range(settings.dashboard.login_max_attempts):
        assert _login_from(client, attacker, member.username, "Wrong-password-1") == 401
    assert _login_from(client, attacker, member.username) == 429
    assert _failures(dash_database, "-", attacker).per_ip == 3
    assert _failures(dash_database, "-", proxy).per_ip == 0
    assert _login_from(client, f"{attacker}, {owner}", member.username) == 302  # the last hop is the proxy's


# ------------------------------------------------------------------------------------------------
# Registration
# ------------------------------------------------------------------------------------------------


def test_registration_is_rate_limited_per_ip(dash_settings: Settings, dash_database: Database) -> None:
    client = _app_client(dash_settings.replace(registration_max_per_ip=2), dash_database)
    for _ in range(2):
        assert register(client, random_name()).status_code == 302
    refused_name = random_name()
    response = register(client, refused_name)
    assert response.status_code == 429 and b"Too many registration attempts" in response.data
    assert get_user_by_username(dash_database, username=refused_name) is None


def test_closed_registration(dash_settings: Settings, dash_database: Database) -> None:
    client = _app_client(dash_settings.replace(registration="closed"), dash_database)
    page = client.get("/register")
    assert page.status_code == 200 and b"Registration is closed" in page.data and b"<form" not in page.data
    username = random_name()
    token = form_csrf(client, "/login")
    data = {"csrf_token": token, "username": username, "password": PASSWORD, "confirm": PASSWORD}
    assert client.post("/register", data=data).status_code == 403
    assert get_user_by_username(dash_database, username=username) is None


def test_invite_only_registration(dash_settings: Settings, dash_database: Database) -> None:
    client = _app_client(dash_settings.replace(registration="invite"), dash_database)
    taken = make_user(dash_database)

    def register_with(username: str, invite: str) -> Any:
        token = form_csrf(client, "/register")
        data = {"csrf_token": token, "username": username, "password": PASSWORD, "confirm": PASSWORD}
        return client.post("/register", data={**data, "invite": invite})

    missing = register_with(random_name(), "")
    assert missing.status_code == 400 and b"An invite code is required" in missing.data
    # without a valid invite, a taken username says nothing about the username
    bogus = register_with(taken.username, "not-an-invite")
    assert bogus.status_code == 400 and b"Invite code is unknown, used or expired." in bogus.data
    assert REGISTRATION_FAILED.encode() not in bogus.data

    invite = create_invite(dash_database, created_by=None)
    assert invite.code.encode() in client.get(f"/register?invite={invite.code}").data  # the link fills it in
    username = random_name()
    assert register_with(username, invite.code).status_code == 302
    user = get_user_by_username(dash_database, username=username)
    assert user is not None and user.roles == ("member",)
    reused = register_with(random_name(), invite.code)
    assert reused.status_code == 400 and b"Invite code is unknown, used or expired." in reused.data


def test_a_taken_username_does_not_use_up_the_invite(
    dash_settings: Settings, dash_database: Database
) -> None:
    client = _app_client(dash_settings.replace(registration="invite"), dash_database)
    taken, invite = make_user(dash_database), create_invite(dash_database, created_by=None)
    token = form_csrf(client, "/register")
    data = {"csrf_token": token, "password": PASSWORD, "confirm": PASSWORD, "invite": invite.code}
    response = client.post("/register", data={**data, "username": taken.username})
    assert response.status_code == 400 and REGISTRATION_FAILED.encode() in response.data
    assert client.post("/register", data={**data, "username": random_name()}).status_code == 302


def test_admin_makes_invite_links(
    client: FlaskClient,
    make_client: Callable[[], FlaskClient],
    dash_database: Database,
    dash_settings: Settings,
) -> None:
    admin = make_user(dash_database, admin=True)
    logged_in(client, admin)
    out = callback_json(
        dash_update(
            client,
            "admin-invite-result.children",
            inputs=[{"id": "admin-invite", "property": "n_clicks", "value": 1}],
            changed=["admin-invite.n_clicks"],
        )
    )
    link = _find(out["admin-invite-result"], "admin-invite-link")["children"]
    assert link.startswith("http://localhost/register?invite=") and "single use" in text_of(out)
    invited = _app_client(dash_settings.replace(registration="invite"), dash_database)
    code = link.split("invite=", 1)[1]
    token = form_csrf(invited, "/register")
    username = random_name()
    data = {"csrf_token": token, "username": username, "password": PASSWORD, "confirm": PASSWORD}
    assert invited.post("/register", data={**data, "invite": code}).status_code == 302
    # members cannot make invites (the guard refuses admin-… callbacks)
    member_client = make_client()
    logged_in(member_client, make_user(dash_database))
    refused = dash_update(
        member_client,
        "admin-invite-result.children",
        inputs=[{"id": "admin-invite", "property": "n_clicks", "value": 1}],
        changed=["admin-invite.n_clicks"],
    )
    assert refused.status_code == 403


def test_registration_default_is_invite_in_production() -> None:
    assert Settings(env="development").registration_mode == "open"
    assert Settings(env="test").registration_mode == "open"
    production = Settings.defaults(env="production", registration=None)
    assert production.registration_mode == "invite"
    assert Settings(env="test", registration="closed").registration_mode == "closed"
