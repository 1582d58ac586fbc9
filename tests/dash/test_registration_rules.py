"""Issue 22 through the dashboard's registration: look-alikes of existing names and guessable passwords are
refused (a look-alike exactly like a taken name), good ones accepted, and the form says the rules."""

from __future__ import annotations

import html
from collections.abc import Callable

import pytest
from dash_helpers import PASSWORD, make_user, random_name, register
from flask.testing import FlaskClient

from dash_app.auth import REGISTRATION_FAILED
from mur.db import Database, get_user_by_username
from mur.security import PASSWORD_RULE
from mur.usernames import USERNAME_ALPHABET


def users(db: Database) -> list[str]:
    with db.cursor() as cur:
        cur.execute("SELECT username FROM users ORDER BY id")
        return [row["username"] for row in cur.fetchall()]


def test_the_form_says_the_rules(client: FlaskClient) -> None:
    page = html.unescape(client.get("/register").get_data(as_text=True))
    assert PASSWORD_RULE[1:] in page and USERNAME_ALPHABET in page


def test_lookalikes_of_an_existing_name_are_refused_like_a_taken_one(
    make_client: Callable[[], FlaskClient], dash_database: Database
) -> None:
    taken = make_user(dash_database).username  # member_<hex>
    lookalikes = [
        taken.replace("e", "\u0435"),  # Cyrillic е
        taken + "\u200b",  # zero-width space
        taken.upper(),
        taken.replace("m", "rn"),
        "".join(chr(ord(c) + 0xFEE0) for c in taken),  # fullwidth
    ]
    before = users(dash_database)
    for name in lookalikes:
        response = register(make_client(), name)
        assert response.status_code == 400 and REGISTRATION_FAILED.encode() in response.data, name
    assert users(dash_database) == before
    good = random_name()
    assert register(make_client(), good).status_code == 302
    assert get_user_by_username(dash_database, username=good) is not None


@pytest.mark.parametrize("password", ["Password1!", "qwerty123456", "Summer2024!", "admin123456"])
def test_guessable_passwords_are_refused(
    make_client: Callable[[], FlaskClient], dash_database: Database, password: str
) -> None:
    name = random_name()
    response = register(make_client(), name, password=password)
    assert response.status_code == 400 and b"too easy to guess" in response.data
    assert get_user_by_username(dash_database, username=name) is None
    assert register(make_client(), name, password=PASSWORD).status_code == 302
