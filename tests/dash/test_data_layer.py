"""The data access the dashboard relies on, against the real PostgreSQL: users, roles, token hash lookup,
quota edits, and the dashboard's managed (derived) Serve token."""

from __future__ import annotations

import pytest
from dash_helpers import PASSWORD, make_user, random_name

from mur.db import (
    Database,
    add_role,
    authenticate,
    create_token,
    create_user,
    ensure_managed_token,
    get_usage,
    list_tokens,
    list_users,
    lookup_token,
    revoke_token,
    set_quota,
)
from mur.errors import ConflictError, InvalidInputError, NotFoundError
from mur.security import derive_api_token, hash_token, looks_like_api_token


def test_create_user_roles_and_authenticate(dash_database: Database) -> None:
    username = random_name()
    user = create_user(dash_database, username=username, email="a@b.io", password=PASSWORD)
    assert user.roles == ("member",) and not user.is_admin
    assert authenticate(dash_database, username=username.upper(), password=PASSWORD) == user
    assert authenticate(dash_database, username=username, password=PASSWORD + "x") is None
    assert add_role(dash_database, user_id=user.id, role="admin") == ("admin", "member")
    with pytest.raises(InvalidInputError):
        add_role(dash_database, user_id=user.id, role="root")
    with pytest.raises(ConflictError):
        create_user(dash_database, username=username.upper(), password=PASSWORD)


def test_token_is_found_by_its_hash_only(dash_database: Database) -> None:
    user = make_user(dash_database)
    plaintext, row = create_token(dash_database, user_id=user.id, name="laptop")
    with dash_database.cursor() as cur:
        cur.execute("SELECT token_hash, prefix FROM api_tokens WHERE id = %s", (row.id,))
        stored = cur.fetchone()
    assert stored["token_hash"] == hash_token(plaintext) and plaintext not in str(stored)
    assert plaintext.startswith(stored["prefix"])
    owner = lookup_token(dash_database, token=plaintext)
    assert owner is not None and owner.user_id == user.id and owner.username == user.username
    revoke_token(dash_database, user_id=user.id, token_id=row.id)
    assert lookup_token(dash_database, token=plaintext) is None


def test_quota_edit(dash_database: Database) -> None:
    user = make_user(dash_database)
    default = dash_database.settings.serving.default_monthly_quota
    assert get_usage(dash_database, user_id=user.id) == (0, default)
    assert set_quota(dash_database, user_id=user.id, monthly_limit=42) == 42
    summary = next(u for u in list_users(dash_database) if u.id == user.id)
    assert summary.monthly_limit == 42 and not summary.quota_is_default
    assert set_quota(dash_database, user_id=user.id, monthly_limit=None) == default
    assert get_usage(dash_database, user_id=user.id) == (0, default)
    with pytest.raises(InvalidInputError):
        set_quota(dash_database, user_id=user.id, monthly_limit=-1)


def test_derive_api_token_is_deterministic_and_well_formed() -> None:
    token = derive_api_token("k" * 32, "ctx/1")
    assert looks_like_api_token(token) and len(token) == 47
    assert token == derive_api_token("k" * 32, "ctx/1")
    assert token != derive_api_token("k" * 32, "ctx/2") != derive_api_token("j" * 32, "ctx/1")
    with pytest.raises(ValueError):
        derive_api_token("", "ctx")


def test_managed_token_generations(dash_database: Database) -> None:
    user = make_user(dash_database)

    def derive(generation: int, key: str = "first-secret-key-0123") -> str:
        return derive_api_token(key, f"test/{user.id}/{generation}")

    first, row = ensure_managed_token(dash_database, user_id=user.id, name="managed", derive=derive)
    assert first == derive(0) and lookup_token(dash_database, token=first).user_id == user.id  # type: ignore[union-attr]
    again, same = ensure_managed_token(dash_database, user_id=user.id, name="managed", derive=derive)
    assert (again, same.id) == (first, row.id)

    # revoked by the user: the next call derives generation 1
    revoke_token(dash_database, user_id=user.id, token_id=row.id)
    second, row2 = ensure_managed_token(dash_database, user_id=user.id, name="managed", derive=derive)
    assert second == derive(1) and row2.id != row.id and lookup_token(dash_database, token=first) is None

    # a new secret key: a fresh token, and the one nobody can re-create any more is revoked
    def new_key(generation: int) -> str:
        return derive(generation, "second-secret-key-456")

    third, _row3 = ensure_managed_token(dash_database, user_id=user.id, name="managed", derive=new_key)
    assert third == new_key(0) and lookup_token(dash_database, token=second) is None
    active = [t for t in list_tokens(dash_database, user_id=user.id) if t.is_active]
    assert [t.prefix for t in active] == [third[:12]]

    with pytest.raises(NotFoundError):
        ensure_managed_token(dash_database, user_id=10**12, name="managed", derive=derive)
    with pytest.raises(InvalidInputError):
        ensure_managed_token(dash_database, user_id=user.id, name="bad", derive=lambda n: "not a token")
