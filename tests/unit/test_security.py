"""Password hashing, strength rules and API token helpers (no services)."""

from __future__ import annotations

import hashlib
import re

import pytest
from argon2 import PasswordHasher
from hypothesis import given, settings
from hypothesis import strategies as st

from mur.errors import MurError, WeakPasswordError
from mur.security import (
    MIN_PASSWORD_LENGTH,
    MIN_PASSWORD_SCORE,
    PASSWORD_RULE,
    check_password_strength,
    dummy_password_hash,
    generate_api_token,
    generate_password,
    hash_password,
    hash_token,
    looks_like_api_token,
    needs_rehash,
    password_problems,
    strength_score,
    token_prefix,
    verify_password,
)

TOKEN_RE = re.compile(r"^mur_[A-Za-z0-9_-]{43}$")


def test_hash_and_verify_password() -> None:
    hashed = hash_password("Correct-Horse-9")
    assert hashed.startswith("$argon2id$")
    assert "Correct-Horse-9" not in hashed
    assert verify_password(hashed, "Correct-Horse-9")
    assert not verify_password(hashed, "correct-horse-9")
    assert not verify_password(hashed, "")
    assert hash_password("Correct-Horse-9") != hashed  # salted


def test_verify_password_rejects_garbage_hashes() -> None:
    assert not verify_password("not-a-hash", "whatever-123")
    assert not verify_password("", "whatever-123")


def test_needs_rehash_for_weaker_parameters() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash("Some-passw0rd")
    assert verify_password(weak, "Some-passw0rd")  # old hashes keep working...
    assert needs_rehash(weak)  # ...and are flagged for an upgrade
    assert not needs_rehash(hash_password("Some-passw0rd"))
    assert needs_rehash("garbage")


def test_dummy_hash_is_stable_and_matches_nothing_likely() -> None:
    assert dummy_password_hash() == dummy_password_hash()
    assert not verify_password(dummy_password_hash(), "Correct-Horse-9")


@pytest.mark.parametrize(
    ("password", "fragment"),
    [
        ("short1A", "at least 10 characters long (got 7)"),
        ("abcdefghijkl", "too easy to guess"),
        ("ABCDEFGHIJKL", "too easy to guess"),
        ("123456789012", "too easy to guess"),
        ("aaaaaaaaaaaa", "must not repeat a single character"),
        ("Password123", "too easy to guess"),
        ("x" * 2000 + "1", "at most 1024"),
        # accepted by the old rules (10+ characters, two kinds, not in a 16-word list): issue 22
        ("Password1!", "too easy to guess"),
        ("qwerty123456", "too easy to guess"),
        ("Summer2024!", "too easy to guess"),
        ("admin123456", "too easy to guess"),
        ("P@ssw0rd2024", "too easy to guess"),
    ],
)
def test_weak_passwords_are_explained(password: str, fragment: str) -> None:
    with pytest.raises(WeakPasswordError, match=re.escape(fragment)) as info:
        check_password_strength(password)
    assert isinstance(info.value, MurError)
    assert "\n" not in str(info.value)


def test_password_must_not_be_or_contain_username() -> None:
    with pytest.raises(WeakPasswordError, match="same as the username"):
        check_password_strength("Alice-2024!x", username="alice-2024!X")
    with pytest.raises(WeakPasswordError, match="contain the username"):
        check_password_strength("my-alice-pass-1", username="Alice")
    check_password_strength("my-al-pass-123", username="al")  # very short usernames are not searched for


def test_all_problems_are_reported_at_once() -> None:
    problems = password_problems("alice", username="alice")
    assert len(problems) >= 3
    with pytest.raises(WeakPasswordError) as info:
        check_password_strength("alice", username="alice")
    assert str(info.value).startswith("password must be at least 10")


def test_strong_passwords_pass() -> None:
    for password in (
        "correct horse battery 9",
        "Tr0ub4dor&3xx",
        "ünïcödé-pässwörd",
        "MixedCaseOnlyLetters",
        "velvet-otter-compass",  # a few uncommon words, one kind of character: fine
        "x" * 80 + "-Quartz-Fjord-7",  # longer than zxcvbn's 72: scored piece by piece, no error
    ):
        check_password_strength(password, username="bob")
    for _ in range(20):
        check_password_strength(generate_password())


def test_the_username_counts_as_a_known_word() -> None:
    """zxcvbn gets the username: a password built on it scores lower than the same shape on another word."""
    assert strength_score("zelda-bronson-42", username="zelda-bronson")[0] < MIN_PASSWORD_SCORE
    assert strength_score("zelda-bronson-42", username="bob")[0] >= MIN_PASSWORD_SCORE


def test_the_rule_in_words_names_the_minimums() -> None:
    assert str(MIN_PASSWORD_LENGTH) in PASSWORD_RULE and f"{MIN_PASSWORD_SCORE} of 4" in PASSWORD_RULE


def test_api_token_format_and_uniqueness() -> None:
    tokens = {generate_api_token() for _ in range(200)}
    assert len(tokens) == 200
    for token in tokens:
        assert TOKEN_RE.match(token)
        assert looks_like_api_token(token)


def test_hash_token_is_sha256_hex() -> None:
    token = generate_api_token()
    assert hash_token(token) == hashlib.sha256(token.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", hash_token(token))
    assert hash_token(token) != hash_token(token + "x")


def test_token_prefix_is_short_and_public() -> None:
    token = generate_api_token()
    prefix = token_prefix(token)
    assert token.startswith(prefix)
    assert prefix.startswith("mur_") and len(prefix) == 12


@pytest.mark.parametrize(
    "candidate",
    [
        "",
        "mur_",
        "Bearer mur_abc",
        "mur_short",
        "abc_" + "x" * 43,
        "mur_" + "x" * 300,
        "mur_ab'; DROP TABLE x;--x",
    ],
)
def test_malformed_tokens_are_rejected_cheaply(candidate: str) -> None:
    assert not looks_like_api_token(candidate)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=100))
def test_hash_token_total_and_deterministic(text: str) -> None:
    assert hash_token(text) == hash_token(text)
    assert len(hash_token(text)) == 64


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.one_of(st.none(), st.text(max_size=20)))
def test_strength_check_agrees_with_problem_list(password: str, username: str | None) -> None:
    problems = password_problems(password, username=username)
    if problems:
        with pytest.raises(WeakPasswordError):
            check_password_strength(password, username=username)
    else:
        check_password_strength(password, username=username)
        assert len(password) >= 10


def test_hashing_gate_refuses_beyond_its_limit_at_once() -> None:
    import time

    from mur.security import HashingBusyError, HashingGate

    gate = HashingGate(2)
    with gate.slot(), gate.slot():
        started = time.monotonic()
        with pytest.raises(HashingBusyError), gate.slot():
            pass
        assert time.monotonic() - started < 0.1  # refused, not queued
    with gate.slot():  # slots come back, also after an error inside the block
        pass
    with pytest.raises(RuntimeError), gate.slot():
        raise RuntimeError("boom")
    with gate.slot(), gate.slot():
        pass
    with pytest.raises(ValueError):
        HashingGate(0)


def test_invite_codes_are_random_and_url_safe() -> None:
    from mur.security import generate_invite_code

    codes = {generate_invite_code() for _ in range(50)}
    assert len(codes) == 50
    assert all(len(c) == 32 and c.replace("-", "").replace("_", "").isalnum() for c in codes)
