"""``--help`` reads as plain text: no type shown for a flag (Typer's rich panels printed ``--help <bool>``)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mur.cli import app


@pytest.mark.parametrize("command", [[], ["serve"], ["train"], ["ray"], ["forecast"]])
def test_flags_show_no_type(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "--help  " in result.stdout
    assert "<bool>" not in result.stdout and "╭" not in result.stdout
