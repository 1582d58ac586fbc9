"""Monthly API quotas: each user's limit (their ``quotas`` row, else the default) and one atomic
statement that spends it (see ``docs/database.md``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

import psycopg.errors

from mur.db.pool import Database, DictCursor, fetch_one
from mur.errors import DatabaseError, InvalidInputError, NotFoundError

MAX_QUOTA = 2**31 - 1


@dataclass(frozen=True)
class QuotaResult:
    """Outcome of :func:`consume_quota`: whether the call is allowed and the month's counters."""

    allowed: bool
    used: int
    limit: int
    reset_at: datetime

    @property
    def remaining(self) -> int:
        return max(self.limit - self.used, 0)


def month_start(at: datetime | None = None) -> date:
    """First day of the UTC calendar month containing ``at`` (default: now); naive times are UTC."""
    at = at or datetime.now(UTC)
    if at.tzinfo is not None:
        at = at.astimezone(UTC)
    return date(at.year, at.month, 1)


def next_month_start(month: date) -> datetime:
    """The first instant (UTC) of the month after ``month``: when its quota resets."""
    return datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=UTC)


def validate_quota(monthly_limit: int) -> int:
    """Return ``monthly_limit`` if it is an integer in ``0..MAX_QUOTA``."""
    if isinstance(monthly_limit, bool) or not isinstance(monthly_limit, int):
        raise InvalidInputError("monthly quota must be an integer")
    if not 0 <= monthly_limit <= MAX_QUOTA:
        raise InvalidInputError(f"monthly quota must be between 0 and {MAX_QUOTA} (got {monthly_limit})")
    return monthly_limit


def store_quota(cur: DictCursor, user_id: int, monthly_limit: int | None) -> None:
    """Set the user's own monthly limit in ``cur``'s transaction (None: delete it, back to the default)."""
    if monthly_limit is None:
        cur.execute("DELETE FROM quotas WHERE user_id = %s", (user_id,))
    else:
        cur.execute(
            "INSERT INTO quotas (user_id, monthly_limit) VALUES (%s, %s) ON CONFLICT (user_id) "
            "DO UPDATE SET monthly_limit = EXCLUDED.monthly_limit, updated_at = now()",
            (user_id, monthly_limit),
        )


def get_usage(db: Database, *, user_id: int, month: date | None = None) -> tuple[int, int]:
    """``(used, limit)`` for the user in ``month`` (default: this UTC month)."""
    month = month or month_start()
    with db.cursor() as cur:
        cur.execute(
            """
            SELECT COALESCE(a.count, 0) AS used, COALESCE(q.monthly_limit, %s) AS monthly_limit
            FROM users u
            LEFT JOIN quotas q ON q.user_id = u.id
            LEFT JOIN api_usage a ON a.user_id = u.id AND a.month = %s
            WHERE u.id = %s
            """,
            (db.settings.serving.default_monthly_quota, month, user_id),
        )
        row = cur.fetchone()
    if row is None:
        raise NotFoundError(f"unknown user id {user_id}")
    return row["used"], row["monthly_limit"]


# One statement: read the limit, then insert the month's first unit or increment, but only while the
# result stays within the limit. Concurrent callers serialise on the usage row (ON CONFLICT locks it and
# re-checks the WHERE against the latest version), so no interleaving can exceed the limit. The insert arm
# has its own `WHERE units <= limit` because ON CONFLICT's WHERE only guards the update arm (limit 0).
_CONSUME_QUOTA = """
WITH lim AS (
    SELECT COALESCE((SELECT q.monthly_limit FROM quotas q WHERE q.user_id = %(user_id)s), %(default)s) AS n
), bumped AS (
    INSERT INTO api_usage AS a (user_id, month, count)
    SELECT %(user_id)s, %(month)s, %(units)s FROM lim WHERE %(units)s <= lim.n
    ON CONFLICT (user_id, month) DO UPDATE
        SET count = a.count + EXCLUDED.count
        WHERE a.count + EXCLUDED.count <= (SELECT n FROM lim)
    RETURNING a.count
)
SELECT (SELECT count FROM bumped) AS used, (SELECT n FROM lim) AS monthly_limit
"""


class ChargeAbandonedError(DatabaseError):
    """A charge rolled back because its caller no longer wanted it (``commit_if`` said no)."""


def peek_quota(db: Database, *, user_id: int, units: int = 1, at: datetime | None = None) -> QuotaResult:
    """Whether ``units`` more calls would fit the user's monthly quota now, spending nothing (one read).

    The API asks this before any model work, so a user over quota costs one indexed read; the charge itself
    stays :func:`consume_quota`'s (calls racing for the last unit may each pass here; one of them gets it).
    """
    month = month_start(at)
    used, limit = get_usage(db, user_id=user_id, month=month)
    return QuotaResult(
        allowed=used + units <= limit, used=used, limit=limit, reset_at=next_month_start(month)
    )


def consume_quota(
    db: Database,
    *,
    user_id: int,
    units: int = 1,
    at: datetime | None = None,
    commit_if: Callable[[], bool] | None = None,
) -> QuotaResult:
    """Atomically use ``units`` of the user's monthly quota, or refuse if that would exceed it.

    A refused call consumes nothing. ``reset_at`` is the first instant of next month (UTC). ``commit_if``:
    asked once the statement has spent the units, before the commit; False rolls the charge back and raises
    :class:`ChargeAbandonedError` (the API's request gave up waiting and answered an error).
    """
    if isinstance(units, bool) or not isinstance(units, int) or units < 1:
        raise InvalidInputError("units must be a positive integer")
    month = month_start(at)
    params = {
        "user_id": user_id,
        "month": month,
        "units": units,
        "default": db.settings.serving.default_monthly_quota,
    }
    with db.cursor() as cur:
        try:
            cur.execute(_CONSUME_QUOTA, params)
        except psycopg.errors.ForeignKeyViolation as exc:
            raise NotFoundError(f"unknown user id {user_id}") from exc
        row = fetch_one(cur)
        used, limit = row["used"], row["monthly_limit"]
        allowed = used is not None
        if allowed and commit_if is not None and not commit_if():
            raise ChargeAbandonedError("the charge was abandoned before its commit (rolled back)")
        if not allowed:  # a new statement sees the row that blocked us, even if it was created concurrently
            cur.execute("SELECT count FROM api_usage WHERE user_id = %s AND month = %s", (user_id, month))
            current = cur.fetchone()
            used = current["count"] if current else 0
    return QuotaResult(allowed=allowed, used=used, limit=limit, reset_at=next_month_start(month))


# What an API request touches, in the lock modes it takes: the token lookup updates api_tokens, the charge
# updates api_usage (ROW EXCLUSIVE, as an UPDATE), and both read users, user_roles and quotas. A table lock
# that would block a request (`LOCK TABLE api_usage`, a long ALTER TABLE) makes this wait as long as the
# connection's lock_timeout allows and fail like the request would; ordinary traffic never blocks it.
_PROBE_REQUEST_TABLES = (
    "LOCK TABLE api_tokens, api_usage IN ROW EXCLUSIVE MODE",
    "LOCK TABLE users, user_roles, quotas IN ACCESS SHARE MODE",
)


def probe_request_tables(db: Database) -> None:
    """Raise :class:`~mur.errors.DatabaseError` unless a ``/v1`` request's tables can be used now, within
    ``db``'s own statement and lock timeouts (the API's readiness probe); the transaction only takes locks."""
    try:
        with db.connection() as conn:
            for statement in _PROBE_REQUEST_TABLES:
                conn.execute(statement)
            conn.rollback()
    except psycopg.Error as exc:  # say, a role without the rights a request needs
        raise DatabaseError(f"the API's tables are not usable: {type(exc).__name__}") from exc
