"""API tokens: created, listed, revoked, rotated and looked up by their SHA-256 (the plaintext is never
stored; see ``docs/database.md`` for why SHA-256 and not argon2)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg.errors
from psycopg.rows import class_row

from mur.db.pool import Database, DictCursor, fetch_one
from mur.db.users import CONTROL_CHARS, lock_user
from mur.errors import ConflictError, InvalidInputError, NotFoundError, TokenExpiredError
from mur.security import generate_api_token, hash_token, looks_like_api_token, token_prefix

TOKEN_TOUCH_INTERVAL_S = 60  # last_used_at is written at most once a minute per token
MAX_TOKEN_LIFETIME = timedelta(days=3650)
"""The longest expiry a token can be given (``expires_in``); no expiry at all is allowed too."""


@dataclass(frozen=True)
class Token:
    """An API token's metadata; the plaintext exists only in :func:`create_token`'s return value."""

    id: int
    user_id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    expires_at: datetime | None = None

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= datetime.now(UTC)

    @property
    def is_active(self) -> bool:
        """Usable now: neither revoked nor expired."""
        return self.revoked_at is None and not self.is_expired

    @property
    def status(self) -> tuple[str, datetime | None]:
        """``("revoked", when)``, ``("expired", when)`` or ``("active", None)``, for lists."""
        if self.revoked_at is not None:
            return "revoked", self.revoked_at
        return ("expired", self.expires_at) if self.is_expired else ("active", None)


@dataclass(frozen=True)
class TokenOwner:
    """Who an API request belongs to (always an enabled user), as found by :func:`lookup_token`."""

    token_id: int
    user_id: int
    username: str
    roles: tuple[str, ...]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


def _validate_token_name(name: str) -> str:
    name = (name or "").strip()
    if not 1 <= len(name) <= 64 or CONTROL_CHARS.search(name):
        raise InvalidInputError("token name must be 1-64 printable characters")
    return name


_LIFETIME = re.compile(r"^\s*(\d{1,6})\s*([mhdw])\s*$")
_LIFETIME_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_lifetime(text: str) -> timedelta:
    """A token lifetime such as ``90d``, ``12h``, ``2w`` or ``30m`` (validated like :func:`create_token`'s)."""
    match = _LIFETIME.match(text or "")
    if match is None:
        raise InvalidInputError(
            f"a token lifetime is a number and a unit (m, h, d or w), such as 90d (got {text!r})"
        )
    lifetime = timedelta(**{_LIFETIME_UNITS[match[2]]: int(match[1])})
    validate_expires_in(lifetime)
    return lifetime


def validate_expires_in(expires_in: timedelta | None) -> timedelta | None:
    """``expires_in`` if it is None (no expiry) or between one minute and :data:`MAX_TOKEN_LIFETIME`."""
    if expires_in is None:
        return None
    if not isinstance(expires_in, timedelta) or not timedelta(minutes=1) <= expires_in <= MAX_TOKEN_LIFETIME:
        raise InvalidInputError(
            f"a token's lifetime must be between 1 minute and {MAX_TOKEN_LIFETIME.days} days (got {expires_in})"
        )
    return expires_in


def _insert_token(
    cur: DictCursor, user_id: int, name: str, expires_in: timedelta | None = None, token: str | None = None
) -> tuple[str, Token]:
    """Store ``token`` (default: a new random one) as the user's token ``name``; returns it and its row."""
    token = token or generate_api_token()
    lifetime_s = None if expires_in is None else expires_in.total_seconds()
    try:
        cur.execute(
            "INSERT INTO api_tokens (user_id, token_hash, prefix, name, expires_at) "
            "VALUES (%s, %s, %s, %s, now() + make_interval(secs => %s)) "
            "RETURNING id, user_id, name, prefix, created_at, last_used_at, revoked_at, expires_at",
            (user_id, hash_token(token), token_prefix(token), name, lifetime_s),
        )
    except psycopg.errors.ForeignKeyViolation as exc:
        raise NotFoundError(f"unknown user id {user_id}") from exc
    return token, Token(**fetch_one(cur))


def create_token(
    db: Database, *, user_id: int, name: str = "default", expires_in: timedelta | None = None
) -> tuple[str, Token]:
    """Create an API token; returns ``(plaintext, row)``. Only its SHA-256 is stored: show it once.

    ``expires_in``: the token stops working that long after its creation (None: never)."""
    name = _validate_token_name(name)
    expires_in = validate_expires_in(expires_in)
    with db.cursor() as cur:
        return _insert_token(cur, user_id, name, expires_in)


def list_tokens(db: Database, *, user_id: int, include_revoked: bool = True) -> list[Token]:
    """The user's tokens, oldest first (``include_revoked=False``: only the usable ones, not revoked or expired)."""
    with db.cursor(class_row(Token)) as cur:
        return cur.execute(
            "SELECT id, user_id, name, prefix, created_at, last_used_at, revoked_at, expires_at "
            "FROM api_tokens WHERE user_id = %s "
            "AND (%s OR (revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()))) "
            "ORDER BY created_at, id",
            (user_id, include_revoked),
        ).fetchall()


def revoke_token(db: Database, *, user_id: int, token_id: int) -> Token:
    """Revoke one of the user's tokens (idempotent: the first revocation time is kept)."""
    with db.cursor(class_row(Token)) as cur:
        token = cur.execute(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, now()) WHERE id = %s AND user_id = %s "
            "RETURNING id, user_id, name, prefix, created_at, last_used_at, revoked_at, expires_at",
            (token_id, user_id),
        ).fetchone()
    if token is None:
        raise NotFoundError(f"user has no token with id {token_id}")
    return token


def rotate_token(db: Database, *, user_id: int, token_id: int) -> tuple[str, Token]:
    """Revoke a token (expired or not) and create its replacement in one transaction: same name and, for a
    token created with an expiry, the same lifetime counted from now."""
    with db.cursor() as cur:
        cur.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE id = %s AND user_id = %s AND revoked_at IS NULL "
            "RETURNING name, expires_at - created_at AS lifetime",
            (token_id, user_id),
        )
        row = cur.fetchone()
        if row is None:
            raise NotFoundError(f"user has no active token with id {token_id}")
        return _insert_token(cur, user_id, row["name"], row["lifetime"])


def ensure_managed_token(
    db: Database, *, user_id: int, name: str, derive: Callable[[int], str], max_generations: int = 1000
) -> tuple[str, Token]:
    """The user's active token named ``name`` whose plaintext is ``derive(n)``, created if needed.

    For tokens a server re-creates instead of storing (the dashboard's per-user Serve token, derived from
    its secret key): generation ``n`` is the lowest one not revoked, so revoking the token makes the next
    call derive a fresh one. Other active tokens with this name that match no generation (say, after the
    secret key changed) are revoked. Serialised per user by locking the user's row.
    """
    name = _validate_token_name(name)
    with db.cursor() as cur:
        lock_user(cur, user_id)
        cur.execute(
            "SELECT id, user_id, name, prefix, created_at, last_used_at, revoked_at, expires_at, token_hash "
            "FROM api_tokens WHERE user_id = %s AND name = %s",
            (user_id, name),
        )
        rows = {row.pop("token_hash"): row for row in cur.fetchall()}
        for generation in range(min(len(rows), max_generations) + 1):
            token = derive(generation)
            if not looks_like_api_token(token):
                raise InvalidInputError("derive() must return a well-formed API token")
            row = rows.get(hash_token(token))
            if row is not None and row["revoked_at"] is not None:
                continue  # this generation was revoked: try the next one
            cur.execute(
                "UPDATE api_tokens SET revoked_at = now() "
                "WHERE user_id = %s AND name = %s AND revoked_at IS NULL AND token_hash <> %s",
                (user_id, name, hash_token(token)),
            )
            if row is None:
                return _insert_token(cur, user_id, name, token=token)
            return token, Token(**row)
    raise ConflictError(f"no free generation for token {name!r} of user {user_id} (all revoked)")


_LOOKUP_TOKEN = """
WITH hit AS (
    SELECT t.id AS token_id, t.user_id, u.username, t.expires_at,
           t.expires_at IS NOT NULL AND t.expires_at <= now() AS expired
    FROM api_tokens t JOIN users u ON u.id = t.user_id
    WHERE t.token_hash = %(token_hash)s AND t.revoked_at IS NULL AND NOT u.disabled
), touch AS (
    UPDATE api_tokens SET last_used_at = now()
    WHERE id = (SELECT token_id FROM hit WHERE NOT expired)
      AND (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => %(touch_s)s))
)
SELECT hit.token_id, hit.user_id, hit.username, hit.expires_at, hit.expired,
       ARRAY(SELECT r.role FROM user_roles r WHERE r.user_id = hit.user_id ORDER BY r.role) AS roles
FROM hit
"""


def lookup_token(db: Database, *, token: str) -> TokenOwner | None:
    """The owner of an active token of an enabled user, else None; one statement by SHA-256.

    A token past its ``expires_at`` raises :class:`~mur.errors.TokenExpiredError` (the API says why it
    refuses it). ``last_used_at`` is refreshed in the same statement, at most once per minute per token, so
    busy tokens do not rewrite their row on every request.
    """
    if not isinstance(token, str) or not looks_like_api_token(token):
        return None
    with db.cursor() as cur:
        cur.execute(_LOOKUP_TOKEN, {"token_hash": hash_token(token), "touch_s": TOKEN_TOUCH_INTERVAL_S})
        row = cur.fetchone()
    if row is None:
        return None
    if row["expired"]:
        raise TokenExpiredError(row["expires_at"])
    return TokenOwner(
        token_id=row["token_id"],
        user_id=row["user_id"],
        username=row["username"],
        roles=tuple(row["roles"]),
    )
