"""What runs after the current module in this pytest run: a module-scoped fixture that is expensive to set up
(a Serve app, a Ray worker node) can then skip restoring what nobody uses again, or hand what it started to the
next module instead of stopping it."""

from __future__ import annotations

import pytest


def _later_items(request: pytest.FixtureRequest) -> list[pytest.Item]:
    items = request.session.items
    last = max((i for i, item in enumerate(items) if item.module is request.module), default=len(items))
    return items[last + 1 :]


def later_tests_use(request: pytest.FixtureRequest, fixture: str) -> bool:
    """Whether a test collected after this module's tests uses ``fixture``."""
    return any(fixture in getattr(item, "fixturenames", ()) for item in _later_items(request))


def next_module_uses(request: pytest.FixtureRequest, fixture: str) -> bool:
    """Whether the module that runs right after this one has a test that uses ``fixture``."""
    later = _later_items(request)
    following = [item for item in later if item.module is later[0].module]
    return any(fixture in getattr(item, "fixturenames", ()) for item in following)
