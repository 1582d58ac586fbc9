"""Login and registration attempts, for the dashboard's rate limits.

Failed logins count three ways within a window: per (username, client IP), per client IP (any usernames)
and per username (every IP). Only the last locks an account for everyone, so its limit is much higher.

Counting and recording happen together: :func:`begin_login_attempt` takes a transaction-scoped advisory lock
per key (username+IP, IP, username; always in the same order), counts, and records the attempt as a failure
in the same transaction, so parallel attempts see each other and at most the limit get through to the
password check. A successful login then turns its row into a success (:func:`mark_login_succeeded`).

Recording an attempt also deletes old ones (:func:`_prune`), so the tables hold about one window of attempts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from psycopg import sql

from mur.db.pool import Database, DictCursor, fetch_one

MAX_USERNAME_CHARS = 256  # usernames here are untrusted input: stored truncated
MAX_IP_CHARS = 64
PRUNE_BATCH = 100
"""Old attempts deleted per recorded one, at most: a backlog shrinks without one long statement."""


@dataclass(frozen=True)
class LoginLimits:
    """Failed logins allowed within ``window_s`` seconds, per key."""

    per_user_ip: int
    per_ip: int
    per_user: int
    window_s: int


@dataclass(frozen=True)
class LoginFailures:
    """Recent failed logins for one attempt's keys (per (username, IP), per IP and per username)."""

    per_user_ip: int
    per_ip: int
    per_user: int

    def reached(self, limits: LoginLimits) -> str | None:
        """The first limit reached (``"user_ip"``, ``"ip"``, ``"user"``), or None."""
        if self.per_user_ip >= limits.per_user_ip:
            return "user_ip"
        if self.per_ip >= limits.per_ip:
            return "ip"
        if self.per_user >= limits.per_user:
            return "user"
        return None


def _prune(cur: DictCursor, table: str, window_s: int) -> None:
    """Delete up to :data:`PRUNE_BATCH` of ``table``'s attempts older than ``window_s`` seconds, skipping rows
    another transaction holds. No count misses them: the counts read failures inside the window only, and a
    success before the window forgives none of those (they all came after it)."""
    cur.execute(
        sql.SQL(
            "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} "
            "WHERE attempted_at < now() - make_interval(secs => %s) LIMIT %s FOR UPDATE SKIP LOCKED)"
        ).format(table=sql.Identifier(table)),
        (window_s, PRUNE_BATCH),
    )


def _lock_keys(cur: DictCursor, keys: Iterable[str]) -> None:
    """Transaction-scoped advisory locks on ``keys``, taken in sorted order (no deadlock between callers)."""
    for key in sorted(set(keys)):
        cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))


# Failures before the username's latest success (from the same IP for the pair count, from any IP for the
# username count) are forgiven: a user who mistyped and then got in starts afresh. The per-IP count is
# never forgiven, so one valid account does not reset an IP that tries many usernames.
_RECENT_FAILURES = """
WITH ok AS (
    SELECT COALESCE(max(attempted_at) FILTER (WHERE ip IS NOT DISTINCT FROM %(ip)s), '-infinity') AS pair_ok,
           COALESCE(max(attempted_at), '-infinity') AS user_ok
    FROM login_attempts WHERE success AND lower(username) = lower(%(username)s)
)
SELECT
    count(*) FILTER (WHERE lower(a.username) = lower(%(username)s) AND a.ip IS NOT DISTINCT FROM %(ip)s
                       AND a.attempted_at > ok.pair_ok) AS per_user_ip,
    count(*) FILTER (WHERE a.ip = %(ip)s) AS per_ip,
    count(*) FILTER (WHERE lower(a.username) = lower(%(username)s) AND a.attempted_at > ok.user_ok)
        AS per_user
FROM login_attempts a CROSS JOIN ok
WHERE NOT a.success
  AND a.attempted_at > now() - make_interval(secs => %(window_s)s)
  AND (lower(a.username) = lower(%(username)s) OR a.ip = %(ip)s)
"""


def _recent_failures(cur: DictCursor, username: str, ip: str | None, window_s: int) -> LoginFailures:
    cur.execute(_RECENT_FAILURES, {"username": username, "ip": ip, "window_s": window_s})
    return LoginFailures(**fetch_one(cur))


def begin_login_attempt(db: Database, *, username: str, ip: str | None, limits: LoginLimits) -> int | None:
    """Check the limits and, if none is reached, record this attempt as a failure; returns its id.

    None: a limit is reached; nothing is recorded (a refused attempt never checks a password, so it
    neither counts nor extends the lock). Atomic: parallel attempts on a key wait for each other's count and
    insert, so at most ``limit`` attempts per key and window ever reach the password check.
    """
    username, ip = username[:MAX_USERNAME_CHARS], ip[:MAX_IP_CHARS] if ip else None
    keys = [f"login-user:{username.lower()}"]
    if ip is not None:
        keys += [f"login-ip:{ip}", f"login-user-ip:{username.lower()}\n{ip}"]
    with db.cursor() as cur:
        _lock_keys(cur, keys)
        if _recent_failures(cur, username, ip, limits.window_s).reached(limits):
            return None
        cur.execute(
            "INSERT INTO login_attempts (username, ip, success) VALUES (%s, %s, false) RETURNING id",
            (username, ip),
        )
        attempt_id = int(fetch_one(cur)["id"])
        _prune(cur, "login_attempts", limits.window_s)
        return attempt_id


def mark_login_succeeded(db: Database, *, attempt_id: int) -> None:
    """The attempt from :func:`begin_login_attempt` was a good password: it forgives earlier failures."""
    with db.cursor() as cur:
        cur.execute("UPDATE login_attempts SET success = true WHERE id = %s", (attempt_id,))


def cancel_login_attempt(db: Database, *, attempt_id: int) -> None:
    """Forget an attempt whose password was never checked (the server was too busy)."""
    with db.cursor() as cur:
        cur.execute("DELETE FROM login_attempts WHERE id = %s", (attempt_id,))


def begin_registration_attempt(db: Database, *, ip: str | None, limit: int, window_s: int) -> bool:
    """Record a registration attempt from ``ip`` unless ``limit`` were made within ``window_s``; atomic.

    False: the limit is reached (nothing recorded). Attempts without an IP share one count.
    """
    ip = ip[:MAX_IP_CHARS] if ip else None
    with db.cursor() as cur:
        _lock_keys(cur, [f"register-ip:{ip}"])
        cur.execute(
            "SELECT count(*) AS n FROM registration_attempts WHERE ip IS NOT DISTINCT FROM %s "
            "AND attempted_at > now() - make_interval(secs => %s)",
            (ip, window_s),
        )
        if fetch_one(cur)["n"] >= limit:
            return False
        cur.execute("INSERT INTO registration_attempts (ip) VALUES (%s)", (ip,))
        _prune(cur, "registration_attempts", window_s)
        return True
