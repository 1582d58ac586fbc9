"""CLI tables on a narrow terminal keep their key columns (id and name, pair and state) whole; the rest wraps."""

from __future__ import annotations

import re

import pytest
from rich.table import Table

from mur.commands.db import print_table


def test_key_columns_stay_whole_on_a_narrow_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")  # a terminal, as rich sees it
    monkeypatch.setenv("COLUMNS", "60")
    monkeypatch.delenv("NO_COLOR", raising=False)
    table = Table(title="tokens of alice")
    for column in ("id", "name", "prefix", "created", "last used", "expires", "status"):
        table.add_column(column)
    table.add_row(
        "1234", "laptop-at-home", "mur_AbCdEfGh…", "2026-11-25 08:00", "2026-11-25 09:00", "never", "active"
    )
    print_table(table)
    text = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)
    assert max(len(line) for line in text.splitlines()) <= 60  # it did have to squeeze
    assert re.search(r"│ 1234 │ laptop-at-home │", text), text
