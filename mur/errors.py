"""Exceptions with messages meant for users: the CLI prints them as one line, the API as JSON."""

from datetime import UTC, datetime
from typing import Any


class MurError(Exception):
    """Base class for expected, user-facing errors."""


class ConfigError(MurError):
    """Bad or missing configuration."""


class MarketDataError(MurError):
    """Market data could not be fetched or is unusable."""


class UnknownPairError(MarketDataError):
    """The pair/symbol is not known to the data source."""


class DataValidationError(MarketDataError):
    """Candles failed validation (NaN/inf, too few rows, non-positive prices, bad timestamps)."""


class ModelError(MurError):
    """A model file is missing, unreadable or fails validation."""


class ServiceError(MurError):
    """A local service did not start, answer or stop."""


class ServiceUnavailable(ServiceError):
    """Nothing answered at a service's URL (refused, timed out, DNS): the HTTP clients of Airflow and Serve."""


class ServiceAnswerError(ServiceError):
    """A service answered with an error status or an unreadable body (``status``: its HTTP status)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RegistryUnavailableError(ServiceError):
    """The MLflow registry (or the S3 store behind it) did not answer."""


class JobError(MurError):
    """A Ray job failed or could not be submitted."""


class DatabaseError(MurError):
    """PostgreSQL is unreachable, or the schema is missing/outdated."""


class MigrationError(DatabaseError):
    """A schema migration could not be applied (or an applied one was edited)."""


class NotFoundError(MurError):
    """A user, token or other record does not exist."""


class ConflictError(MurError):
    """The record already exists (e.g. a taken username)."""


class InvalidInputError(MurError):
    """A value (username, email, quota, ...) was rejected before reaching the database."""


class WeakPasswordError(InvalidInputError):
    """A password breaks the strength rules; the message lists which."""


class AuthError(MurError):
    """Missing, invalid or revoked credentials."""


class TokenExpiredError(AuthError):
    """An API token past its expiry (``expires_at``): the API answers 401 ``token_expired``."""

    def __init__(self, expired_at: datetime) -> None:
        super().__init__(
            f"API token expired at {expired_at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}; create a new one "
            "(`mur tokens create`, or the dashboard's API page)"
        )
        self.expired_at = expired_at


class QuotaExceededError(MurError):
    """The monthly API quota is used up."""


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of ``exc``'s message (its type's name when it has none), cut to ``limit`` characters."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


class ForbiddenError(AuthError):
    """Valid credentials without the right role (e.g. an admin-only call)."""


class ModelNotLoadedError(ModelError):
    """No model is loaded (yet) for the requested pair."""


class NoChampionError(ModelNotLoadedError):
    """A configured pair has no champion: no registered version passed the promotion gate (or none exists)."""


def error_detail(response: Any) -> str:
    """A service's own message from an HTTP error answer (an ``httpx.Response``): the JSON ``message``
    (this API), ``detail`` (FastAPI, Airflow) or ``error``, else the start of the text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason_phrase
    if isinstance(body, dict):
        for key in ("message", "detail", "error"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value[:300]
            if isinstance(value, list) and value:  # FastAPI validation errors
                first = value[0]
                return str(first.get("msg", first) if isinstance(first, dict) else first)[:300]
    return str(body)[:200]
