"""The three test tiers of infra/test.sh (fast -> postgres -> services) cover every test exactly once."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from types import ModuleType

import pytest
from _pytest.mark.expression import Expression

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiers(pytestconfig: pytest.Config) -> ModuleType:
    """tests/conftest.py as pytest loaded it (a conftest is not an importable module)."""
    for plugin in pytestconfig.pluginmanager.get_plugins():
        if Path(getattr(plugin, "__file__", "") or "") == ROOT / "tests" / "conftest.py":
            return plugin
    raise AssertionError("tests/conftest.py is not loaded")


def test_test_sh_runs_the_conftest_expressions(tiers: ModuleType) -> None:
    script = (ROOT / "infra" / "test.sh").read_text()
    found = dict(re.findall(r'^(FAST|PG|SERVICES)_TIER="([^"]+)"$', script, re.MULTILINE))
    assert found == {
        "FAST": tiers.TIER_EXPRESSIONS["fast"],
        "PG": tiers.TIER_EXPRESSIONS["postgres"],
        "SERVICES": tiers.TIER_EXPRESSIONS["services"],
    }


def test_every_marker_combination_is_in_exactly_one_tier(tiers: ModuleType) -> None:
    """Whatever tier markers a test carries (conftest adds ``fast`` exactly when it has none of the
    others), one tier expression selects it; ``pg`` alone is the postgres tier."""
    compiled = {name: Expression.compile(expr) for name, expr in tiers.TIER_EXPRESSIONS.items()}
    names = tiers.SERVICES_TIER_MARKERS
    for flags in itertools.product((False, True), repeat=len(names)):
        markers = {m for m, on in zip(names, flags, strict=True) if on}
        if not markers:
            markers = {"fast"}
        selected = [n for n, expr in compiled.items() if expr.evaluate(markers.__contains__)]
        expected = "fast" if markers == {"fast"} else "postgres" if markers == {"pg"} else "services"
        assert selected == [expected], markers


def test_the_fast_tier_keeps_out_of_the_users_runtime_dir() -> None:
    """Fast-tier tests see the documented defaults, except the runtime dir: a CLI they run (``mur restore``
    builds the stack's settings, which write the stack's secrets file) never writes into the user's
    ``.runtime/``."""
    import os

    from mur.settings import PROJECT_ROOT, get_settings

    runtime = get_settings().general.runtime_dir
    assert os.environ["MUR_RUNTIME_DIR"] == str(runtime)
    assert not runtime.resolve().is_relative_to(PROJECT_ROOT.resolve()), runtime
