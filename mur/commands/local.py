"""The CLI's one way into the local platform, ``devstack`` (a distribution of its own: devstack/pyproject.toml).

``from mur.commands.local import stack`` in a command imports ``devstack.stack`` then; where it is not installed
(the product's wheel and images) the command fails with one line saying how to install it. Only this module of
``mur`` imports ``devstack`` (tests/unit/test_architecture.py).
"""

from __future__ import annotations

import importlib.util
from types import ModuleType
from typing import TYPE_CHECKING

from mur.errors import ConfigError

if TYPE_CHECKING:  # the names below, typed; imported when a command asks for one (__getattr__)
    from devstack import (  # noqa: F401
        airflow,
        backup,
        config,
        first_run,
        health,
        replay,
        secret_files,
        services,
        stack,
        supervisor,
    )
    from mur.settings import Settings

NOT_INSTALLED = "the local platform is not installed: pip install -e ./devstack (as infra/install.sh does)"


def __getattr__(name: str) -> ModuleType:
    """``devstack.<name>``, imported on first use (private names, ``__path__`` included, are not modules)."""
    if name.startswith("_"):
        raise AttributeError(name)
    if importlib.util.find_spec("devstack") is None:
        raise ConfigError(NOT_INSTALLED)
    return importlib.import_module(f"devstack.{name}")


def stack_settings(*, export: bool = False) -> Settings:
    """The settings as ``mur up`` aligns them (URLs follow their ports; the Ray token from the stack's secrets
    file when the environment has none); with ``export`` also in ``os.environ``, for the processes started."""
    from mur.settings import get_settings

    return __getattr__("config").align_settings(get_settings(), export=export)


def stack_secret(key: str, missing: str, *, env: str | None = None) -> str:
    """A secret of the local stack: ``env`` (the environment's value) when set, else ``key`` of the stack's
    secrets file (its owner's only); without either a one-line error, ``missing`` with the file's path in place
    of ``{path}``. Either way the local platform must be installed."""
    from pathlib import Path

    from mur.settings import get_settings

    path = Path(get_settings().general.runtime_dir) / __getattr__("config").SECRETS_FILE
    if env:
        return env
    try:
        value = (__getattr__("secret_files").read(path) or {}).get(key)
    except PermissionError as exc:
        raise ConfigError(f"{path} is readable by the stack's owner only") from exc
    if not value:
        raise ConfigError(missing.format(path=path))
    return str(value)


def use_stack_secrets() -> None:
    """Beside a local stack, ``mur`` commands use its secret files (the trainer's MLflow account, the S3 keys)
    as the processes ``mur up`` starts do: ``{runtime_dir}/secrets`` when no ``MUR_SECRETS_DIR`` is set and the
    local platform is installed (``mur models rollback`` or ``mur train`` in a new shell reach MLflow)."""
    import os
    from pathlib import Path

    from mur.settings import get_settings

    if "MUR_SECRETS_DIR" in os.environ or importlib.util.find_spec("devstack") is None:
        return
    folder = Path(get_settings().general.runtime_dir) / __getattr__("config").SECRETS_DIR
    if folder.is_dir():
        os.environ["MUR_SECRETS_DIR"] = str(folder)
        get_settings.cache_clear()
