"""The Forecast page's paper portfolio in headless Chromium (issue 39): from a track record of real bundled
closes, the rule sized by the served 24 h ranges next to buy & hold and the EWMA-sized rule (verdict, figures,
equity / drawdown / exposure chart), every label saying "paper, not advice"; as the market clock turns
(``clock.json``, fast) the page's own refresh fills it with the hours that closed since; the panel asks the
Serve API nothing (no quota).
Screenshots: ``test-output/dash/<test name>/``."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dash_fakes import FakeService
from dash_helpers import PASSWORD, random_name
from paper_record import paper_record
from test_browser import browser_page, live_url, output_dir  # noqa: F401  (fixtures)

from mur.clock import MarketClock, write_clock_state
from mur.db import Database, create_user
from mur.evaluation.sizing import SizingRule
from mur.monitoring.paper import paper_portfolio
from mur.settings import Settings

pytestmark = pytest.mark.browser

PAIR = "btc_usdt"  # the page's first pair
C0 = datetime(2025, 12, 28, tzinfo=UTC)
H = timedelta(hours=1)
RUNTIME: list[Path] = []


@pytest.fixture(scope="module")
def dash_db_settings(
    pg_database_factory: Callable[..., Settings], tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """A database of this module's own, and a market clock read from a ``clock.json`` the test writes."""
    RUNTIME.append(tmp_path_factory.mktemp("paper-runtime"))
    return pg_database_factory().replace(clock_start=None, clock_origin=None, runtime_dir=RUNTIME[0])


def traces(page: object) -> list[list[object]]:
    """Each chart trace: name, number of points, last time, last value."""
    chart = "document.querySelector('#paper-chart .js-plotly-plot')"
    page.wait_for_function(f"() => {chart}?.data?.length > 0")  # type: ignore[attr-defined]
    script = f"() => {chart}.data.map(t => [t.name, t.y.length, t.x[t.x.length - 1], t.y[t.y.length - 1]])"
    return page.evaluate(script)  # type: ignore[attr-defined, no-any-return]


def test_paper_portfolio_panel(
    live_url: str,  # noqa: F811
    browser_page,  # noqa: F811
    dash_database: Database,
    dash_settings: Settings,
    serve_api: FakeService,
    output_dir: Path,  # noqa: F811
) -> None:
    from playwright.sync_api import expect

    paper_record(dash_database, PAIR, C0, 3)
    # the market runs from C0 + 6 h past the last close of the record (C0 + 73 h) in about 20 wall seconds
    write_clock_state(RUNTIME[0], MarketClock(start=C0 + 6 * H, origin=time.time(), speed=67 * 3600 / 20))
    username = random_name("paper")
    create_user(dash_database, username=username, password=PASSWORD)
    page = browser_page
    page.goto(f"{live_url}/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(f"{live_url}/forecast")
    panel = page.locator("#forecast-paper")
    expect(page.locator(".card h3", has_text="Paper portfolio (paper, not advice)")).to_be_visible()
    expect(page.locator("#paper-verdict")).to_contain_text("(paper, not advice)")
    expect(page.locator("#paper-chart .gtitle")).to_have_text("BTC_USDT paper portfolio (paper, not advice)")
    early = traces(page)
    assert len(early) == 9 and {t[0] for t in early} == {
        "rule sized by the model's ranges",
        "rule sized by EWMA",
        "buy & hold",
    }
    assert len({t[1] for t in early}) == 1 and early[0][1] < 72  # the market has not reached the end yet

    # the page refreshes itself (every 30 s wall): the hours that closed since fill the portfolio (the last
    # ones from the page's own forecasts, made from the fake Serve API's answers)
    expect(panel).to_contain_text(
        "3 forecast(s) traded, market hours 2025-12-28T01:00:00Z → ", timeout=70_000
    )
    expect(page.locator("#paper-verdict")).to_contain_text("the EWMA-sized rule after fees (Sharpe")
    expect(panel).to_contain_text("15 bp of fees and slippage on every change")
    rows = page.locator("#paper-rows tbody tr")
    expect(rows).to_have_count(3)
    expect(page.locator("#paper-rows thead")).to_contain_text("strategy (paper, not advice)")
    until = re.search(r"→ (\S+Z)\.", panel.inner_text())
    assert until is not None and until[1] >= "2025-12-31T01:00:00Z"  # past the record's last close
    full = traces(page)
    assert all(t[1] > early[0][1] and t[2] == until[1] for t in full)
    rule = SizingRule.from_settings(dash_settings)
    hour = datetime.fromisoformat(until[1].replace("Z", "+00:00"))  # the portfolio as the API answers it
    model = paper_portfolio(dash_database, PAIR, market_hour=hour, rule=rule)["strategies"]["model"]
    expect(rows.nth(0)).to_contain_text(f"{model['exposure_now']:.1%}")
    assert full[0][3] == pytest.approx(1 + model["total_return"])
    page.screenshot(path=str(output_dir / "paper-portfolio.png"), full_page=True)

    page.click("#forecast-pair")  # a pair without forecasts of the rule's horizon: the empty state
    page.locator(".dash-dropdown-option", has_text="ETH_USDT").click()
    expect(page.locator("#paper-none")).to_contain_text("no paper portfolio for eth_usdt yet")
    expect(page.locator("#paper-none")).to_contain_text("Paper, not advice.")
    assert not [r.path for r in serve_api.requests if "paper" in r.path]  # read from the track record
