"""Usernames: NFKC-normalised, one small ASCII alphabet, and a skeleton under which look-alikes are equal.

A username is shown everywhere (admin pages, ``mur users list``, logs), so two accounts must never *look*
the same. Three rules, applied by :func:`mur.db.create_user` (so by every way an account is made: the
dashboard's registration, ``mur users create``, the first-run admin):

1. :func:`normalize_username`: Unicode NFKC (fullwidth ``ａｄｍｉｎ`` becomes ``admin``);
2. :data:`USERNAME_PATTERN`: ASCII letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit
   (no Cyrillic ``а``, no zero-width or other invisible characters);
3. :func:`username_skeleton`: a name whose skeleton equals an existing account's is refused like a taken one.
   The skeleton folds case and the confusable characters of Unicode's ``confusables.txt`` (UTS #39): ``0``
   and ``O``, ``1``, ``i``, ``I``, ``l`` and ``|``, ``rn`` and ``m``; letters of other scripts that look like Latin
   ones (from the ``confusable-homoglyphs`` package's copy of that table) fold to the Latin letter, and
   invisible characters are dropped, so accounts made before these rules are compared correctly too.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from confusable_homoglyphs import confusables

USERNAME_ALPHABET = "ASCII letters, digits, '.', '_' and '-', starting with a letter or digit"
USERNAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

# The ASCII rows of confusables.txt (UTS #39): 0 → O, 1 → l, I → l, | → l, m → rn. Applied after the case
# fold (usernames are case-insensitive, so ``I`` is ``i`` and both fold to ``l``), with ``m`` kept as the one
# form of ``m``/``rn``.
_ASCII_FOLD = str.maketrans({"0": "o", "1": "l", "|": "l", "i": "l"})


def normalize_username(username: str) -> str:
    """``username`` in Unicode NFKC form (what is validated and stored)."""
    return unicodedata.normalize("NFKC", username)


def is_allowed_username(username: str) -> bool:
    """True if every character of ``username`` is in the allowed alphabet (length is checked elsewhere)."""
    return USERNAME_PATTERN.fullmatch(username) is not None


@lru_cache(maxsize=4096)
def _latin_lookalike(char: str) -> str:
    """A non-ASCII character that looks like a Latin one → that Latin character; invisible ones → ''."""
    if char.isascii():
        return char
    if unicodedata.category(char) in ("Cf", "Mn", "Me", "Zs", "Zl", "Zp", "Cc"):
        return ""  # zero-width/format characters, combining marks, spaces: invisible or nearly
    found = confusables.is_confusable(char, greedy=True, preferred_aliases=["latin", "common"])
    for entry in found or ():
        for glyph in entry["homoglyphs"]:
            if glyph["c"].isascii() and glyph["c"].isalnum():
                return str(glyph["c"])
    return char


@lru_cache(maxsize=65536)
def username_skeleton(username: str) -> str:
    """The form under which two usernames that look alike are equal (``аdmin``, ``ADMIN``, ``adm1n``…)."""
    text = normalize_username(username)
    text = "".join(_latin_lookalike(c) for c in unicodedata.normalize("NFD", text))
    text = text.casefold().translate(_ASCII_FOLD)
    return text.replace("rn", "m")
