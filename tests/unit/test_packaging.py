"""The product's wheel leaves the local platform out, the CLI without it says how to install it, and importing
the CLI loads none of the libraries its commands use.

The packages come from setuptools' own reading of each pyproject.toml (what a wheel build packs; no build,
no network); the CLI runs in this process with ``devstack`` made unimportable.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from setuptools.config.pyprojecttoml import apply_configuration
from setuptools.dist import Distribution

from mur.cli import main
from mur.commands.local import NOT_INSTALLED

ROOT = Path(__file__).resolve().parents[2]


def packages(pyproject: Path) -> set[str]:
    with warnings.catch_warnings():  # setuptools' deprecation notices (project.license as a table)
        warnings.simplefilter("ignore")
        return set(apply_configuration(Distribution(), pyproject).packages or [])


def test_the_product_wheel_ships_no_devstack_and_the_local_platform_is_its_own() -> None:
    product = packages(ROOT / "pyproject.toml")
    tops = {name.split(".")[0] for name in product}
    assert tops == {"mur", "ray_jobs", "serve_app", "dash_app"}, tops
    assert {"mur.commands", "mur.data.klines", "serve_app", "dash_app.pages"} <= product
    assert packages(ROOT / "devstack" / "pyproject.toml") == {"devstack"}


@pytest.mark.parametrize(
    "argv", [["up"], ["down"], ["status"], ["services", "start"], ["airflow", "stop"], ["ray", "token"]]
)
def test_without_the_local_platform_its_commands_say_how_to_install_it(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [m for m in sys.modules if m == "devstack" or m.startswith("devstack.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "devstack", None)  # import devstack... raises ModuleNotFoundError
    monkeypatch.setattr(sys, "argv", ["mur", *argv])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 1
    assert capsys.readouterr().err == f"error: {NOT_INSTALLED}\n"


HEAVY = (
    "mur.db",
    "psycopg",
    "torch",
    "pandas",
    "numpy",
    "mlflow",
    "ray",
    "httpx",
    "onnxruntime",
    "airflow",
    "devstack",
)


def test_importing_the_cli_loads_no_library_a_command_uses() -> None:
    """``mur --help`` and a mistyped command answer at once: each command imports the database, the model, the
    registry, Ray... when it runs, never when the CLI is imported (a fresh interpreter: this one has them all;
    2026-11-28: ``mur --help`` 0.86 -> 0.57 s once ``mur models`` stopped importing the database for a constant)."""
    code = f"import sys, mur.cli; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr  # the import itself failed: its traceback
    assert proc.stdout.strip() == "", f"import mur.cli loads {proc.stdout.strip()}"
