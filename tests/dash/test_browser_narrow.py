"""The dashboard on a 390 px wide phone screen (issue 40): the header wraps instead of pushing the Log out button
off the screen, and its clock line (market time, speed, wall time) is there. Screenshot:
``test-output/dash/<test name>/``."""

from __future__ import annotations

from pathlib import Path

import pytest
from dash_helpers import PASSWORD, make_user
from test_browser import browser_page, live_url, output_dir  # noqa: F401  (fixtures)

from mur.db import Database

pytestmark = pytest.mark.browser
WIDTH = 390


def test_log_out_stays_on_a_narrow_screen(
    live_url: str,  # noqa: F811
    browser_page,  # noqa: F811
    dash_database: Database,
    output_dir: Path,  # noqa: F811
) -> None:
    from playwright.sync_api import expect

    page = browser_page
    page.set_viewport_size({"width": WIDTH, "height": 844})
    member = make_user(dash_database)
    page.goto(f"{live_url}/login")
    page.fill("#username", member.username)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(f"{live_url}/forecast")
    for selector in ("#logout-button", "#nav-clock", "#nav-monitoring"):
        expect(page.locator(selector)).to_be_visible()
        box = page.locator(selector).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= WIDTH, (selector, box)
    expect(page.locator("#nav-clock")).to_contain_text("wall")
    wider = page.evaluate(  # what reaches past the screen's right edge, if anything
        f"""[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > {WIDTH})
            .slice(0, 5).map(e => e.tagName + '#' + e.id + '.' + e.className)"""
    )
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH, (
        wider
    )  # nothing wider than the screen
    page.screenshot(path=str(output_dir / "narrow.png"), full_page=True)
    page.click("#logout-button")
    page.wait_for_url(f"{live_url}/login")
