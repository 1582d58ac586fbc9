"""``mur ray token``: the Ray token for the stack's owner (the Ray dashboard asks for it), one line on error."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from devstack import config
from mur.cli import app
from mur.settings import get_settings


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("MUR_RUNTIME_DIR", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("MUR_RAY_AUTH_TOKEN", raising=False)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_prints_the_stack_token_from_its_secrets_file(runtime: Path) -> None:
    token = config.ray_token(get_settings())  # what `mur up` generates into the secrets file
    assert oct((runtime / config.SECRETS_FILE).stat().st_mode)[-3:] == "600"
    result = CliRunner().invoke(app, ["ray", "token"])
    assert result.exit_code == 0 and result.stdout == token + "\n"


def test_without_a_stack_it_says_so(runtime: Path) -> None:
    result = CliRunner().invoke(app, ["ray", "token"])
    assert result.exit_code == 1 and "mur up" in str(result.exception)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_another_user_cannot_read_it(runtime: Path) -> None:
    config.ray_token(get_settings())
    (runtime / config.SECRETS_FILE).chmod(0)  # as another user sees a mode-600 file
    result = CliRunner().invoke(app, ["ray", "token"])
    assert result.exit_code == 1 and "owner" in str(result.exception)
