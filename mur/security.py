"""Passwords and API tokens: hashing, verification, strength rules and token generation.

Password strength is zxcvbn's estimate (the ``zxcvbn`` package: common passwords, words, names, dates,
keyboard patterns, l33t substitutions), not a hand-made list: :data:`PASSWORD_RULE` says it in words.

Passwords are low-entropy and chosen by people, so they are hashed with argon2id (slow, salted, memory-hard).
API tokens are 256-bit random strings made here, so a single SHA-256 is enough to store them: nobody can
brute-force 2**256 guesses however fast the hash, and a fast hash lets every API request be checked with one
indexed lookup (``WHERE token_hash = %s``) instead of an argon2 verification per stored token.

Each argon2id computation takes 64 MiB and tens of milliseconds of a core, so a server bounds how many run at
once with a :class:`HashingGate`; requests beyond it are refused at once instead of queueing memory.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from zxcvbn import zxcvbn

from mur.errors import MurError, WeakPasswordError

TOKEN_PREFIX = "mur_"
TOKEN_RANDOM_BYTES = 32
INVITE_RANDOM_BYTES = 24
TOKEN_DISPLAY_CHARS = 12  # "mur_" + 8 random chars: enough to tell tokens apart, ~48 of 256 bits shown
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024  # argon2 would accept more; refusing megabyte "passwords" avoids a cheap DoS

MIN_PASSWORD_SCORE = 3
"""zxcvbn's score (0-4) a password needs: 3 is "safely unguessable", about 10**8 guesses or more."""
STRENGTH_MAX_LENGTH = 72  # zxcvbn's own limit; a longer password is scored piece by piece
PASSWORD_RULE = (
    f"at least {MIN_PASSWORD_LENGTH} characters and hard to guess (a zxcvbn strength score of at least "
    f"{MIN_PASSWORD_SCORE} of 4): a few uncommon words work well; common passwords, words with a digit or "
    "a year added, keyboard patterns and your username do not"
)
"""The rule in words, for the forms that set a password."""
_HASHER = PasswordHasher()  # argon2id with the library's current recommended parameters
_API_TOKEN_SHAPE = re.compile(rf"{TOKEN_PREFIX}[A-Za-z0-9_-]{{16,196}}")  # 20 to 200 characters in all


def hash_password(password: str) -> str:
    """Return an argon2id hash (salt and parameters included) of ``password``."""
    return _HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True if ``password`` matches ``password_hash``; False on mismatch or an unreadable hash."""
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):  # a mismatch is a VerificationError too
        return False


def needs_rehash(password_hash: str) -> bool:
    """True if the hash was made with weaker parameters than today's (rehash it after a good login)."""
    try:
        return _HASHER.check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError):
        return True


class HashingBusyError(MurError):
    """Every password-hashing slot is taken: answer "busy, try again" instead of waiting."""


class HashingGate:
    """At most ``limit`` password hashes/verifications at once; callers beyond it are refused, not queued.

    Thread-safe; one per server process (a threaded server would otherwise run one argon2id, 64 MiB, per
    concurrent login).
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a HashingGate needs at least one slot")
        self._slots = threading.BoundedSemaphore(limit)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot for the block; raises :class:`HashingBusyError` at once if none is free."""
        if not self._slots.acquire(blocking=False):
            raise HashingBusyError("too many password checks at once; try again in a moment")
        try:
            yield
        finally:
            self._slots.release()


@lru_cache(maxsize=1)
def dummy_password_hash() -> str:
    """A valid hash of a random password, verified against when a user does not exist (timing parity)."""
    return hash_password(secrets.token_urlsafe(16))


def strength_score(password: str, *, username: str | None = None) -> tuple[int, str]:
    """zxcvbn's score (0-4) of ``password`` and its warning ('' if none), the username as a known word.

    zxcvbn takes at most 72 characters: a longer password gets the best score of its 72-character pieces.
    """
    size = STRENGTH_MAX_LENGTH
    pieces = [password[i : i + size] for i in range(0, len(password), size)] or [""]
    if len(password) > size:
        pieces.append(password[-size:])
    results = [zxcvbn(piece, user_inputs=[username] if username else []) for piece in pieces]
    best = max(results, key=lambda result: float(result["guesses"]))
    return int(best["score"]), str(best["feedback"].get("warning") or "")


def password_problems(password: str, *, username: str | None = None) -> list[str]:
    """Every rule ``password`` breaks, as short phrases (empty list: acceptable).

    Length, no single repeated character, not the username, and zxcvbn's strength estimate (dictionaries of
    common passwords, words, names, dates, keyboard patterns and substitutions) of at least
    :data:`MIN_PASSWORD_SCORE`.
    """
    problems: list[str] = []
    if len(password) < MIN_PASSWORD_LENGTH:
        problems.append(f"must be at least {MIN_PASSWORD_LENGTH} characters long (got {len(password)})")
    if len(password) > MAX_PASSWORD_LENGTH:
        problems.append(f"must be at most {MAX_PASSWORD_LENGTH} characters long")
        return problems  # not worth estimating
    if password and len(set(password)) == 1:
        problems.append("must not repeat a single character")
    lowered = password.lower()
    if username:
        name = username.strip().lower()
        if lowered == name:
            problems.append("must not be the same as the username")
        elif len(name) >= 4 and name in lowered:
            problems.append("must not contain the username")
    if password:
        score, warning = strength_score(password, username=username)
        if score < MIN_PASSWORD_SCORE:
            why = f" ({warning[0].lower()}{warning[1:].rstrip('.')})" if warning else ""
            problems.append(
                f"is too easy to guess{why}: strength {score} of 4, at least {MIN_PASSWORD_SCORE} needed "
                "(add a few uncommon words)"
            )
    return problems


def check_password_strength(password: str, *, username: str | None = None) -> None:
    """Raise :class:`~mur.errors.WeakPasswordError` listing every rule ``password`` breaks."""
    problems = password_problems(password, username=username)
    if problems:
        raise WeakPasswordError("password " + "; ".join(problems))


def generate_password() -> str:
    """A random password that passes :func:`check_password_strength` (for ``mur users create``)."""
    while True:
        candidate = secrets.token_urlsafe(18)
        if not password_problems(candidate):
            return candidate


def generate_api_token() -> str:
    """A new API token: ``mur_`` followed by 32 random bytes, URL-safe base64 (43 characters)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_RANDOM_BYTES)


def generate_invite_code() -> str:
    """A single-use registration invite code (192 random bits, URL-safe; stored as its SHA-256)."""
    return secrets.token_urlsafe(INVITE_RANDOM_BYTES)


def derive_api_token(secret: str, context: str) -> str:
    """A token shaped like :func:`generate_api_token` but computed as HMAC-SHA256(secret, context).

    For tokens a server must be able to re-create instead of storing (the dashboard's per-user token): it is
    as secret as ``secret`` itself, and a different ``context`` gives an unrelated token.
    """
    if not secret:
        raise ValueError("derive_api_token needs a non-empty secret")
    digest = hmac.new(secret.encode("utf-8"), context.encode("utf-8"), hashlib.sha256).digest()
    return TOKEN_PREFIX + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def looks_like_api_token(token: str) -> bool:
    """Cheap shape check, so malformed ``Authorization`` headers never reach the database."""
    return _API_TOKEN_SHAPE.fullmatch(token) is not None


def hash_token(token: str) -> str:
    """SHA-256 hex digest of ``token``: what the database stores and looks tokens up by."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_prefix(token: str) -> str:
    """The first characters of ``token``, stored in clear so people can recognise their tokens."""
    return token[:TOKEN_DISPLAY_CHARS]
