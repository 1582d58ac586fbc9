"""A command's option that overrides a setting keeps that setting's bounds (``mur.settings.check_option``):
``mur train --epochs 0`` and ``mur tune --trials 0`` are refused in one line before anything starts, as
``MUR_EPOCHS=0`` and ``MUR_TUNE_TRIALS=0`` are (``--epochs 0`` used to train and export, ``--trials 0`` to
start Ray for a search of no trial). An invalid ``MUR_*`` variable itself is one line too, naming the variable
and never its value (it was pydantic's traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mur.errors import ConfigError
from mur.settings import Settings, check_option
from mur.training.tuning import TuneBudget

pytestmark = pytest.mark.fast

MUR = str(Path(sys.executable).parent / "mur")


def test_an_option_is_held_to_its_settings_bounds() -> None:
    check_option("epochs", "epochs", 1)
    check_option("epochs", "epochs", None)  # not given
    with pytest.raises(ConfigError, match=r"^--epochs 0: input should be greater than or equal to 1 "):
        check_option("epochs", "epochs", 0)
    with pytest.raises(ConfigError, match=r"\(the bounds of MUR_TUNE_FOLDS\)$"):
        check_option("folds", "tune_folds", 13)


def test_a_search_budget_keeps_the_tune_settings_bounds() -> None:
    budget = TuneBudget.from_settings(Settings(), trials=3, folds=None, fold_hours=48)
    assert (budget.trials, budget.folds, budget.fold_hours) == (3, Settings().tuning.tune_folds, 48)
    with pytest.raises(ConfigError, match=r"^--trials 0: .*greater than or equal to 1 .*MUR_TUNE_TRIALS"):
        TuneBudget.from_settings(Settings(), trials=0)
    with pytest.raises(ConfigError, match=r"^--fold-hours 5: .*24"):
        TuneBudget.from_settings(Settings(), fold_hours=5)
    with pytest.raises(ConfigError, match=r"^--folds 13: .*less than or equal to 12"):
        TuneBudget.from_settings(Settings(), folds=13)


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ("train", "btc_usdt", "--epochs", "0"),
            "error: --epochs 0: input should be greater than or equal to 1 (the bounds of MUR_EPOCHS)",
        ),
        (
            ("tune", "btc_usdt", "--trials", "0", "--no-mlflow", "--no-store"),
            "error: --trials 0: input should be greater than or equal to 1 (the bounds of MUR_TUNE_TRIALS)",
        ),
    ],
)
def test_the_commands_refuse_in_one_line(tmp_path: Path, args: tuple[str, ...], line: str) -> None:
    done = subprocess.run([MUR, *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == line
    assert not (tmp_path / "artifacts").exists(), "nothing trained"


def test_an_invalid_variable_is_one_line_that_never_shows_its_value(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from mur.settings import invalid_settings

    with pytest.raises(ValidationError) as caught:
        Settings(epochs=0)
    assert invalid_settings(caught.value) == (
        "invalid settings: MUR_EPOCHS: input should be greater than or equal to 1"
    )
    assert invalid_settings(ValueError("not a settings error")) is None
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MUR_EPOCHS": "zero-secret-looking-value"}
    done = subprocess.run([MUR, "train", "btc_usdt"], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: invalid settings: MUR_EPOCHS: input should be a valid integer, unable to parse string as an integer"
    )
    assert "zero-secret-looking-value" not in done.stderr + done.stdout
