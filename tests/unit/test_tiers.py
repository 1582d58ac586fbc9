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
