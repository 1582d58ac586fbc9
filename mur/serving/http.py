"""Errors as HTTP answers, bearer-token auth and the monthly quota (blocking: call from a thread pool in
async servers). No web framework here: the Serve ingress and the benchmark's reference app both use it."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mur.errors import (
    AuthError,
    DatabaseError,
    DataValidationError,
    ForbiddenError,
    InvalidInputError,
    MarketDataError,
    ModelError,
    ModelNotLoadedError,
    MurError,
    NoChampionError,
    NotFoundError,
    QuotaExceededError,
    ServiceError,
    TokenExpiredError,
    UnknownPairError,
)
from mur.timeutil import iso

if TYPE_CHECKING:
    from mur.db import Database, QuotaResult, TokenOwner

log = logging.getLogger("mur.serving")
DATABASE_UNAVAILABLE = "the database is unavailable; try again later"
"""What a client is told when PostgreSQL fails: where it lives (user, host, port, database) stays in the log."""


class QuotaExhaustedError(QuotaExceededError):
    """The user's monthly quota is used up; carries the counters for the 429 answer."""

    def __init__(self, quota: QuotaResult) -> None:
        super().__init__(
            f"monthly quota of {quota.limit} calls used up; it resets at {iso(quota.reset_at)} (wall clock)"
        )
        self.quota = quota


# (exception class, HTTP status, error code); the first match wins, so subclasses come first.
_ERROR_TABLE: tuple[tuple[type[MurError], int, str], ...] = (
    (ForbiddenError, 403, "forbidden"),
    (TokenExpiredError, 401, "token_expired"),
    (AuthError, 401, "unauthorized"),
    (QuotaExceededError, 429, "quota_exhausted"),
    (UnknownPairError, 404, "unknown_pair"),
    (NotFoundError, 404, "not_found"),
    (DataValidationError, 422, "invalid_candles"),
    (InvalidInputError, 422, "invalid_input"),
    (NoChampionError, 503, "no_champion"),
    (ModelNotLoadedError, 503, "model_not_loaded"),
    (MarketDataError, 503, "market_data_unavailable"),
    (DatabaseError, 503, "database_unavailable"),
    (ModelError, 503, "model_error"),
    (ServiceError, 503, "service_unavailable"),
    (MurError, 500, "internal_error"),
)


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The JSON body of every API error: ``{"error": code, "message": text, ...details}``."""
    return {"error": code, "message": message, **extra}


def http_error(exc: MurError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """``(status, body, headers)`` for an expected error (a 429's Retry-After counts to the quota's reset)."""
    status, code = next((st, c) for cls, st, c in _ERROR_TABLE if isinstance(exc, cls))
    if isinstance(exc, DatabaseError):
        log.warning("database error answered as %d: %s", status, exc)
        body = error_body(code, DATABASE_UNAVAILABLE)
    else:
        body = error_body(code, str(exc))
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, TokenExpiredError):
        body["expired_at"] = iso(exc.expired_at)
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token", error_description="the token expired"'
    if isinstance(exc, QuotaExhaustedError):
        quota = exc.quota
        body.update(limit=quota.limit, used=quota.used, reset_at=iso(quota.reset_at))
        headers.update(quota_headers(quota))
        headers["Retry-After"] = str(max(1, math.ceil((quota.reset_at - datetime.now(UTC)).total_seconds())))
    return status, body, headers


def expected(exc: Exception, where: str = "") -> MurError:
    """``exc`` as the error a forecaster raises to its caller (mapped to JSON once, by :func:`http_error`): an
    expected error as is, anything else an ``internal_error`` (500) whose trace goes to the log (the client
    sees only the exception type)."""
    if isinstance(exc, MurError):
        return exc
    log.error("%s: forecast failed", where or "forecast", exc_info=exc)
    return MurError(f"internal error ({type(exc).__name__})")


def quota_headers(quota: QuotaResult) -> dict[str, str]:
    """``X-RateLimit-*`` headers describing the month's quota."""
    return {
        "X-RateLimit-Limit": str(quota.limit),
        "X-RateLimit-Remaining": str(quota.remaining),
        "X-RateLimit-Reset": iso(quota.reset_at),
    }


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; a missing/other scheme is an AuthError."""
    if not authorization or not authorization.strip():
        raise AuthError("missing credentials: send 'Authorization: Bearer <token>'")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("malformed Authorization header: expected 'Bearer <token>'")
    return token.strip()


def authenticate(db: Database, authorization: str | None) -> TokenOwner:
    """The owner of the request's bearer token (one indexed query); invalid/revoked/disabled → AuthError,
    expired → :class:`~mur.errors.TokenExpiredError` (a 401 ``token_expired``)."""
    from mur.db import lookup_token

    owner = lookup_token(db, token=bearer_token(authorization))
    if owner is None:
        raise AuthError("invalid or revoked API token")
    return owner


def require_admin(owner: TokenOwner) -> None:
    """Raise :class:`ForbiddenError` unless the token belongs to an admin."""
    if not owner.is_admin:
        raise ForbiddenError(f"user {owner.username!r} is not an admin")


def check_quota(db: Database, owner: TokenOwner) -> QuotaResult:
    """Raise QuotaExhaustedError if the owner has no unit left this month (one read, nothing spent): asked
    before any model work, so a caller over quota costs no forecast."""
    from mur.db import peek_quota

    quota = peek_quota(db, user_id=owner.user_id)
    if not quota.allowed:
        raise QuotaExhaustedError(quota)
    return quota


def charge(db: Database, owner: TokenOwner, commit_if: Callable[[], bool] | None = None) -> QuotaResult:
    """Consume one unit of the owner's monthly quota (one atomic statement) or raise QuotaExhaustedError;
    ``commit_if``: asked before the commit, False rolls it back (:func:`mur.db.consume_quota`)."""
    from mur.db import consume_quota

    quota = consume_quota(db, user_id=owner.user_id, commit_if=commit_if)
    if not quota.allowed:
        raise QuotaExhaustedError(quota)
    return quota
