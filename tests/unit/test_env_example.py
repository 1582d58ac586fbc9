""".env.example documents every Settings field (and nothing else under MUR_) and every compose variable.

A line ``MUR_X=value`` sets a field; ``# MUR_X=…`` documents one left at its default (None, or a value that
must not be set locally). Set values are the Settings defaults, so a copied .env changes nothing locally.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from dotenv import dotenv_values
from pydantic import AliasChoices

from mur.settings import GROUP_TYPES, Settings

ROOT = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = ROOT / ".env.example"
COMPOSE = ROOT / "docker-compose.yml"

ASSIGNMENT = re.compile(r"^(?P<commented>#\s*)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")  # $${X} is the container's own
SECRET_NAME = re.compile(r"PASSWORD|SECRET|_KEY$|TOKEN|WEBHOOK")


def entries() -> list[tuple[str, bool, int]]:
    """(name, commented out, line number) of every assignment line."""
    found = []
    for number, line in enumerate(ENV_EXAMPLE.read_text().splitlines(), start=1):
        m = ASSIGNMENT.match(line.strip())
        if m:
            found.append((m.group("name"), bool(m.group("commented")), number))
    return found


def field_names() -> set[str]:
    """Each field's variable: ``MUR_<NAME>``, or the first of its aliases (``RAY_AUTH_TOKEN``: Ray's own)."""
    names = set()
    for name, info in ((n, i) for group in GROUP_TYPES.values() for n, i in group.model_fields.items()):
        alias = info.validation_alias
        names.add(str(alias.choices[0]) if isinstance(alias, AliasChoices) else "MUR_" + name.upper())
    return names


def test_every_settings_field_is_documented() -> None:
    documented = {name for name, _, _ in entries()}
    missing = sorted(field_names() - documented)
    assert not missing, f"add to .env.example (with a comment and the default): {missing}"


def test_every_mur_variable_is_a_settings_field() -> None:
    unknown = sorted({name for name, _, _ in entries() if name.startswith("MUR_")} - field_names())
    assert not unknown, f"not fields of mur.settings.Settings (removed or misspelt?): {unknown}"


def test_no_variable_twice() -> None:
    names = [name for name, _, _ in entries()]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})


def test_every_variable_has_a_comment() -> None:
    """Each assignment sits in a block (lines between blank lines) that has an explanatory comment."""
    explained = False
    for number, line in enumerate(ENV_EXAMPLE.read_text().splitlines(), start=1):
        text = line.strip()
        if not text:
            explained = False
        elif text.startswith("#") and not ASSIGNMENT.match(text):
            explained = True
        elif ASSIGNMENT.match(text):
            assert explained, f".env.example line {number} ({text}) has no comment above it"


def test_set_values_are_the_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {k: v for k, v in dotenv_values(ENV_EXAMPLE).items() if k.startswith("MUR_")}
    for key in list(os.environ):
        if key.startswith("MUR_"):
            monkeypatch.delenv(key)
    defaults = Settings(_env_file=None).flat()
    example = Settings(_env_file=ENV_EXAMPLE).flat()  # the file must also load as it is
    for key in values:
        field = key.removeprefix("MUR_").lower()
        got, want = example[field], defaults[field]
        if want is None and got == "":  # an empty optional string means unset to the code, too
            continue
        assert got == want, f"{key} in .env.example gives {got!r}; the Settings default is {want!r}"


def test_compose_variables_are_documented() -> None:
    code = "\n".join(
        line.split(" #")[0] for line in COMPOSE.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    used = set(INTERPOLATION.findall(code))
    documented = {name for name, _, _ in entries()}
    missing = sorted(used - documented)
    assert not missing, f"docker-compose.yml reads {missing}: document them in .env.example"
    stale = sorted(n for n in documented - used if not n.startswith(("MUR_", "COMPOSE_")))
    assert not stale, f".env.example documents {stale}, which docker-compose.yml does not use"


def test_secrets_are_not_filled_in() -> None:
    """The example holds no secret: compose secrets are empty, MUR_ secrets empty or commented out."""
    values = dotenv_values(ENV_EXAMPLE)
    for name, commented, number in entries():
        if SECRET_NAME.search(name) and not commented:
            assert values.get(name) in ("", None), f".env.example line {number}: {name} must be empty"
