"""A shell beside the local stack: `mur` commands use the stack's secret files (issue 41's MLflow accounts)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mur.commands import local
from mur.settings import get_settings

pytestmark = pytest.mark.fast


@pytest.fixture
def shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A new shell: no MUR_SECRETS_DIR, the runtime dir at ``tmp_path``."""
    monkeypatch.delenv("MUR_SECRETS_DIR", raising=False)
    monkeypatch.delenv("MUR_MLFLOW_USERNAME", raising=False)
    monkeypatch.setenv("MUR_RUNTIME_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_the_stacks_secret_files_are_used_when_none_are_named(shell: Path) -> None:
    (shell / "secrets").mkdir()
    (shell / "secrets" / "mur_mlflow_username").write_text("mur-trainer")
    local.use_stack_secrets()
    assert os.environ["MUR_SECRETS_DIR"] == str(shell / "secrets")
    assert get_settings().registry.mlflow_username == "mur-trainer"


def test_without_a_stack_or_with_secrets_named_nothing_changes(
    shell: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local.use_stack_secrets()  # no stack in this runtime dir
    assert "MUR_SECRETS_DIR" not in os.environ
    (shell / "secrets").mkdir()
    monkeypatch.setenv("MUR_SECRETS_DIR", str(shell / "elsewhere"))
    local.use_stack_secrets()
    assert os.environ["MUR_SECRETS_DIR"] == str(shell / "elsewhere")


def test_the_stacks_ray_token_reaches_a_new_shell(shell: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`mur train --ray` in a new shell beside `mur up`'s stack authenticates with the stack's Ray token (the
    README's command was refused: "set RAY_AUTH_TOKEN")."""
    from devstack.config import ray_token, write_secrets_dir

    for name in ("RAY_AUTH_TOKEN", "MUR_RAY_AUTH_TOKEN", "RAY_AUTH_MODE", "MUR_RAY_AUTH_MODE"):
        monkeypatch.delenv(name, raising=False)
    write_secrets_dir(get_settings())  # as `mur up` does
    local.use_stack_secrets()
    token = get_settings().ray.ray_auth_token
    assert token and token == ray_token(get_settings())
    assert get_settings().ray.headers() == {"Authorization": f"Bearer {token}"}
    monkeypatch.setenv("RAY_AUTH_TOKEN", "e" * 64)  # the environment's token still wins
    get_settings.cache_clear()
    assert get_settings().ray.ray_auth_token == "e" * 64
