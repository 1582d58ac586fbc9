"""User accounts and roles: argon2id passwords, case-insensitive usernames, role grants, listing with quotas,
session generations (server-side logout) and single-use registration invites.

Public functions take a :class:`~mur.db.pool.Database` first and keyword-only arguments after it; each call
is one transaction.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import psycopg.errors
from psycopg import sql
from psycopg.rows import scalar_row

from mur.db.pool import Database, DictCursor, fetch_one
from mur.db.quotas import month_start, store_quota, validate_quota
from mur.errors import ConflictError, InvalidInputError, NotFoundError
from mur.security import (
    check_password_strength,
    dummy_password_hash,
    generate_invite_code,
    hash_password,
    hash_token,
    needs_rehash,
    verify_password,
)
from mur.usernames import USERNAME_ALPHABET, is_allowed_username, normalize_username, username_skeleton

ROLES = ("admin", "member")
MAX_USERNAME_LENGTH = 64
MAX_EMAIL_LENGTH = 254
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
INVITE_LIFETIME = timedelta(days=7)
USERNAME_LOCK_KEY = 0x6D75725F75736572  # "mur_user": pg advisory lock, one look-alike check at a time


@dataclass(frozen=True)
class User:
    """A user account (never carries the password hash)."""

    id: int
    username: str
    email: str | None
    created_at: datetime
    disabled: bool
    roles: tuple[str, ...]
    session_generation: int = 0
    """Bumped by :func:`end_sessions` (logout) and :func:`set_password`: older sessions stop working."""

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


U = TypeVar("U", bound=User)


@dataclass(frozen=True)
class UserSummary(User):
    """A user with their effective quota and this month's usage (for ``mur users list`` and admin pages)."""

    monthly_limit: int = 0
    quota_is_default: bool = True
    used_this_month: int = 0


def _user(row: dict[str, Any], record: type[U]) -> U:
    """A ``record`` (:class:`User` or :class:`UserSummary`) from a row of its fields (roles: an array)."""
    fields = {name: row[name] for name in record.__dataclass_fields__ if name != "roles"}
    return record(**fields, roles=tuple(row["roles"]))


def validate_username(username: str) -> str:
    """Return ``username`` in NFKC form if acceptable: 1-64 characters of :data:`USERNAME_ALPHABET`.

    Look-alikes of existing names are refused by :func:`create_user` (:mod:`mur.usernames`).
    """
    if not isinstance(username, str) or not username or username.strip() != username:
        raise InvalidInputError("username must be non-empty, without leading or trailing spaces")
    username = normalize_username(username)
    if len(username) > MAX_USERNAME_LENGTH:
        raise InvalidInputError(f"username must be at most {MAX_USERNAME_LENGTH} characters")
    if CONTROL_CHARS.search(username):
        raise InvalidInputError("username must not contain control characters")
    if not is_allowed_username(username):
        raise InvalidInputError(f"username must use only {USERNAME_ALPHABET}")
    return username


def validate_email(email: str | None) -> str | None:
    """Return ``email`` (or None) if it looks like an address; deliverability is not checked."""
    if email is None or email == "":
        return None
    if len(email) > MAX_EMAIL_LENGTH or "@" not in email.strip("@") or CONTROL_CHARS.search(email):
        raise InvalidInputError(f"invalid email address {email!r}")
    return email


def _validate_roles(roles: Iterable[str]) -> tuple[str, ...]:
    wanted = tuple(sorted(set(roles)))
    unknown = [r for r in wanted if r not in ROLES]
    if unknown:
        raise InvalidInputError(f"unknown role(s) {', '.join(unknown)} (known: {', '.join(ROLES)})")
    return wanted


_SELECT_USER = sql.SQL("""
SELECT u.id, u.username, u.email, u.created_at, u.disabled, u.session_generation, u.password_hash,
       ARRAY(SELECT r.role FROM user_roles r WHERE r.user_id = u.id ORDER BY r.role) AS roles
FROM users u WHERE {}
""")
_SELECT_USER_BY_ID = _SELECT_USER.format(sql.SQL("u.id = %s"))
_SELECT_USER_BY_NAME = _SELECT_USER.format(sql.SQL("lower(u.username) = lower(%s)"))


def _refuse_lookalike(cur: DictCursor, username: str) -> None:
    """ConflictError if an account's name looks like ``username`` (same skeleton); serialised between
    transactions by an advisory lock held until this one ends, so two look-alikes cannot both get in."""
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (USERNAME_LOCK_KEY,))
    wanted = username_skeleton(username)
    cur.execute("SELECT username FROM users")
    for row in cur.fetchall():
        if username_skeleton(row["username"]) == wanted:
            taken = row["username"]
            same = taken.casefold() == username.casefold()
            detail = "" if same else f" (it looks like the existing {taken!r})"
            raise ConflictError(f"username {username!r} is already taken{detail}")


def lock_user(cur: DictCursor, user_id: int) -> None:
    """Lock the user's row until the transaction ends (:class:`~mur.errors.NotFoundError` if there is none)."""
    if cur.execute("SELECT 1 FROM users WHERE id = %s FOR UPDATE", (user_id,)).fetchone() is None:
        raise NotFoundError(f"unknown user id {user_id}")


def set_quota(db: Database, *, user_id: int, monthly_limit: int | None) -> int:
    """Give the user their own monthly limit (None: back to the default); returns the effective limit."""
    if monthly_limit is not None:
        validate_quota(monthly_limit)
    with db.cursor() as cur:
        lock_user(cur, user_id)
        store_quota(cur, user_id, monthly_limit)
    return db.settings.serving.default_monthly_quota if monthly_limit is None else monthly_limit


def _replace_roles(cur: DictCursor, user_id: int, roles: tuple[str, ...]) -> None:
    cur.execute("DELETE FROM user_roles WHERE user_id = %s", (user_id,))
    cur.execute(
        "INSERT INTO user_roles (user_id, role) SELECT %s, name FROM roles WHERE name = ANY(%s)",
        (user_id, list(roles)),
    )


def create_user(
    db: Database,
    *,
    username: str,
    email: str | None = None,
    password: str,
    roles: Sequence[str] = ("member",),
    monthly_quota: int | None = None,
    invite_code: str | None = None,
) -> User:
    """Create a user with an argon2id password hash, roles and optionally their own monthly quota.

    With ``invite_code``, the invite is used up in the same transaction (no user without a valid invite,
    no invite used twice). Raises :class:`~mur.errors.ConflictError` if the username is taken
    (case-insensitively) or looks like a taken one (:mod:`mur.usernames`),
    :class:`~mur.errors.WeakPasswordError` / :class:`~mur.errors.InvalidInputError`
    for bad input or an unknown, used or expired invite.
    """
    username = validate_username(username)
    email = validate_email(email)
    wanted_roles = _validate_roles(roles)
    if monthly_quota is not None:
        validate_quota(monthly_quota)
    check_password_strength(password, username=username)
    password_hash = hash_password(password)  # slow: done before taking a connection
    with db.cursor() as cur:
        invite_id = None if invite_code is None else _claim_invite(cur, invite_code)
        _refuse_lookalike(cur, username)
        try:
            cur.execute(
                "INSERT INTO users (username, email, password_hash) VALUES (%s, %s, %s) RETURNING id",
                (username, email, password_hash),
            )
        except psycopg.errors.UniqueViolation as exc:
            raise ConflictError(f"username {username!r} is already taken") from exc
        user_id = fetch_one(cur)["id"]
        if invite_id is not None:
            cur.execute(
                "UPDATE invites SET used_by = %s, used_at = now() WHERE id = %s", (user_id, invite_id)
            )
        _replace_roles(cur, user_id, wanted_roles)
        store_quota(cur, user_id, monthly_quota)
        cur.execute(_SELECT_USER_BY_ID, (user_id,))
        return _user(fetch_one(cur), User)


def get_user_by_id(db: Database, *, user_id: int) -> User | None:
    """The user with this id, or None."""
    with db.cursor() as cur:
        row = cur.execute(_SELECT_USER_BY_ID, (user_id,)).fetchone()
    return _user(row, User) if row else None


def get_user_by_username(db: Database, *, username: str) -> User | None:
    """The user with this username (case-insensitive), or None."""
    with db.cursor() as cur:
        row = cur.execute(_SELECT_USER_BY_NAME, (username,)).fetchone()
    return _user(row, User) if row else None


def require_user(db: Database, *, username: str) -> User:
    """Like :func:`get_user_by_username` but raises :class:`~mur.errors.NotFoundError`."""
    user = get_user_by_username(db, username=username)
    if user is None:
        raise NotFoundError(f"unknown user {username!r}")
    return user


def authenticate(db: Database, *, username: str, password: str) -> User | None:
    """The enabled user whose password matches, else None.

    An unknown username still costs one argon2 verification (against a dummy hash), so response time does
    not reveal which usernames exist. A hash made with outdated parameters is upgraded on success.
    """
    with db.cursor() as cur:
        row = cur.execute(_SELECT_USER_BY_NAME, (username,)).fetchone()
    if row is None:
        verify_password(dummy_password_hash(), password)
        return None
    if not verify_password(row["password_hash"], password) or row["disabled"]:
        return None
    if needs_rehash(row["password_hash"]):
        with db.cursor() as cur:
            cur.execute(
                "UPDATE users SET password_hash = %s WHERE id = %s", (hash_password(password), row["id"])
            )
    return _user(row, User)


def set_password(db: Database, *, user_id: int, password: str) -> None:
    """Replace a user's password (strength-checked)."""
    user = get_user_by_id(db, user_id=user_id)
    if user is None:
        raise NotFoundError(f"unknown user id {user_id}")
    check_password_strength(password, username=user.username)
    with db.cursor() as cur:
        cur.execute(
            "UPDATE users SET password_hash = %s, session_generation = session_generation + 1 WHERE id = %s",
            (hash_password(password), user_id),
        )


def set_user_disabled(db: Database, *, user_id: int, disabled: bool = True) -> User:
    """Disable (or re-enable) a user: a disabled user cannot log in and their tokens stop working."""
    with db.cursor() as cur:
        cur.execute("UPDATE users SET disabled = %s WHERE id = %s", (disabled, user_id))
        if cur.rowcount == 0:
            raise NotFoundError(f"unknown user id {user_id}")
        cur.execute(_SELECT_USER_BY_ID, (user_id,))
        return _user(fetch_one(cur), User)


def end_sessions(db: Database, *, user_id: int) -> int:
    """End every dashboard session of the user (logout): returns the new session generation."""
    with db.cursor(scalar_row) as cur:
        generation = cur.execute(
            "UPDATE users SET session_generation = session_generation + 1 WHERE id = %s "
            "RETURNING session_generation",
            (user_id,),
        ).fetchone()
    if generation is None:
        raise NotFoundError(f"unknown user id {user_id}")
    return int(generation)


def update_account(
    db: Database, *, user_id: int, roles: Iterable[str], monthly_limit: int | None, disabled: bool
) -> int:
    """Set a user's roles, own monthly quota (None: the default) and status in one transaction.

    Either all three change or none does. Returns the effective monthly limit.
    """
    wanted = _validate_roles(roles)
    if monthly_limit is not None:
        validate_quota(monthly_limit)
    with db.cursor() as cur:
        lock_user(cur, user_id)
        _replace_roles(cur, user_id, wanted)
        store_quota(cur, user_id, monthly_limit)
        cur.execute("UPDATE users SET disabled = %s WHERE id = %s", (disabled, user_id))
    return db.settings.serving.default_monthly_quota if monthly_limit is None else monthly_limit


@dataclass(frozen=True)
class Invite:
    """A new registration invite: the code is shown once (only its SHA-256 is stored)."""

    code: str
    expires_at: datetime


def create_invite(db: Database, *, created_by: int | None, lifetime: timedelta = INVITE_LIFETIME) -> Invite:
    """A single-use invite to register, valid for ``lifetime`` (for ``MUR_REGISTRATION=invite``)."""
    code = generate_invite_code()
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO invites (code_hash, created_by, expires_at) VALUES (%s, %s, now() + %s) "
            "RETURNING expires_at",
            (hash_token(code), created_by, lifetime),
        )
        return Invite(code=code, expires_at=fetch_one(cur)["expires_at"])


def _claim_invite(cur: DictCursor, code: str) -> int:
    """Lock a valid invite for this transaction (checked before the username, so no invite, no probing)."""
    row = cur.execute(
        "SELECT id FROM invites WHERE code_hash = %s AND used_at IS NULL AND expires_at > now() FOR UPDATE",
        (hash_token(code),),
    ).fetchone()
    if row is None:
        raise InvalidInputError("invite code is unknown, used or expired")
    return int(row["id"])


def user_roles(db: Database, *, user_id: int) -> tuple[str, ...]:
    """The user's role names, sorted."""
    with db.cursor(scalar_row) as cur:
        return tuple(cur.execute("SELECT role FROM user_roles WHERE user_id = %s ORDER BY role", (user_id,)))


def add_role(db: Database, *, user_id: int, role: str) -> tuple[str, ...]:
    """Grant ``role`` (idempotent); returns the user's roles."""
    _validate_roles([role])
    with db.cursor() as cur:
        try:
            cur.execute(
                "INSERT INTO user_roles (user_id, role) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (user_id, role),
            )
        except psycopg.errors.ForeignKeyViolation as exc:
            raise NotFoundError(f"unknown user id {user_id}") from exc
    return user_roles(db, user_id=user_id)


def remove_role(db: Database, *, user_id: int, role: str) -> tuple[str, ...]:
    """Revoke ``role`` (idempotent); returns the user's remaining roles."""
    _validate_roles([role])
    with db.cursor() as cur:
        cur.execute("DELETE FROM user_roles WHERE user_id = %s AND role = %s", (user_id, role))
    return user_roles(db, user_id=user_id)


def list_users(db: Database, *, at: datetime | None = None) -> list[UserSummary]:
    """Every user with roles, effective monthly quota and usage in the month containing ``at`` (now)."""
    with db.cursor() as cur:
        cur.execute(
            """
            SELECT u.id, u.username, u.email, u.created_at, u.disabled, u.session_generation,
                   ARRAY(SELECT r.role FROM user_roles r WHERE r.user_id = u.id ORDER BY r.role) AS roles,
                   COALESCE(q.monthly_limit, %s) AS monthly_limit, q.monthly_limit IS NULL AS quota_is_default,
                   COALESCE(a.count, 0) AS used_this_month
            FROM users u
            LEFT JOIN quotas q ON q.user_id = u.id
            LEFT JOIN api_usage a ON a.user_id = u.id AND a.month = %s
            ORDER BY lower(u.username)
            """,
            (db.settings.serving.default_monthly_quota, month_start(at)),
        )
        return [_user(row, UserSummary) for row in cur.fetchall()]
