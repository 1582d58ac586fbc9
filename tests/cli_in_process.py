"""``mur ARGS`` run in the test's own process, through the console script's entry point (:func:`mur.cli.main`:
its one-line errors and exit codes), for the commands that train or backtest: a subprocess per call imports
torch, pandas, SciPy and the project again (~3 CPU-s on two fast cores, ~6 on slow ones), which the fast
tier's workers have loaded already. The CLI tests of other commands (forecast, models, airflow) run the
installed ``mur`` script itself."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from unittest import mock

from mur.cli import main
from mur.settings import get_settings


def run_mur(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``mur ARGS`` with ``env`` added to the environment; its exit status and what it printed.

    An exception that :func:`main` lets through (a bug: the console script would print a traceback) is raised
    here, so the test fails on it."""
    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    with (
        mock.patch.object(sys, "argv", ["mur", *args]),
        mock.patch.dict(os.environ, env or {}),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        get_settings.cache_clear()
        try:
            main()
        except SystemExit as exc:
            code = exc.code
        finally:
            get_settings.cache_clear()
    status = code if isinstance(code, int) else (0 if code is None else 1)
    return subprocess.CompletedProcess(["mur", *args], status, out.getvalue(), err.getvalue())
