"""Username rules (mur.usernames): NFKC, a small ASCII alphabet, and look-alikes equal under the skeleton.

Issue 22: open registration accepted ``аdmin`` (Cyrillic а) and ``admin`` + a zero-width space.
"""

from __future__ import annotations

import pytest

from mur.db.users import validate_username
from mur.errors import InvalidInputError
from mur.usernames import is_allowed_username, normalize_username, username_skeleton

LOOKALIKES_OF_ADMIN = [
    "\u0430dmin",  # Cyrillic а
    "admin\u200b",  # zero-width space
    "\u200badmin",
    "adm\u0456n",  # Cyrillic і
    "\u0391DMIN",  # Greek Α
    "ａｄｍｉｎ",  # fullwidth
    "ADMIN",
    "Admin",
    "adm1n",
    "admln",
    "AdmIn",
    "adrnin",  # rn for m
    "a\u0301dmin",  # combining accent
]


@pytest.mark.parametrize("name", LOOKALIKES_OF_ADMIN)
def test_lookalikes_share_the_skeleton(name: str) -> None:
    assert username_skeleton(name) == username_skeleton("admin")


@pytest.mark.parametrize("name", ["alice", "admins", "ad-min", "adm", "bob", "admin2", "root"])
def test_different_names_do_not(name: str) -> None:
    assert username_skeleton(name) != username_skeleton("admin")


@pytest.mark.parametrize(
    "name",
    ["\u0430dmin", "admin\u200b", "adm\u0456n", "\u0391DMIN", "a\u0301dmin", "bob smith", "[/x]", "x<y"],
)
def test_names_outside_the_alphabet_are_refused(name: str) -> None:
    with pytest.raises(InvalidInputError, match="username must"):
        validate_username(name)


@pytest.mark.parametrize("name", ["alice", "Bob_2", "carol.d-e", "x", "user_0a1b2c3d"])
def test_names_in_the_alphabet_pass(name: str) -> None:
    assert validate_username(name) == name and is_allowed_username(name)


def test_fullwidth_letters_are_normalized_not_refused() -> None:
    assert normalize_username("ａｌｉｃｅ") == "alice"
    assert validate_username("ａｌｉｃｅ") == "alice"


@pytest.mark.parametrize("name", ["-lead", ".dot", "_under"])
def test_a_name_starts_with_a_letter_or_digit(name: str) -> None:
    assert not is_allowed_username(name)
