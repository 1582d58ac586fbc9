"""End to end in headless Chromium (Debian's /usr/bin/chromium driven by Playwright): register, log in, see
the forecast chart with its forecast, create a token and see it once, log out. Screenshots are saved under
``test-output/dash/<test name>/`` (or ``$MUR_TEST_OUTPUT/dash/<test name>/``).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from dash_helpers import PASSWORD, random_name
from werkzeug.serving import make_server

from dash_app.app import create_app
from mur.db import Database, get_user_by_username, list_tokens
from mur.settings import PROJECT_ROOT, Settings

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000  # generous: CI machines here have 2 busy cores


def chromium_path() -> str | None:
    return os.environ.get("MUR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def output_dir(request: pytest.FixtureRequest) -> Path:
    base = Path(os.environ.get("MUR_TEST_OUTPUT") or PROJECT_ROOT / "test-output")
    folder = base / "dash" / request.node.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def live_url(dash_settings: Settings, dash_database: Database) -> Iterator[str]:
    """The dashboard served by werkzeug in a thread on a free port."""
    app = create_app(dash_settings, db=dash_database)
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture
def browser_page() -> Iterator[object]:
    executable = chromium_path()
    if executable is None:
        if os.environ.get("MUR_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is not installed (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def test_register_login_forecast_token_logout(
    live_url: str, browser_page, dash_database: Database, output_dir: Path
) -> None:
    from playwright.sync_api import expect

    page = browser_page
    username = random_name("browser")

    page.goto(f"{live_url}/register")
    page.fill("#username", username)
    page.fill("#email", f"{username}@example.org")
    page.fill("#password", PASSWORD)
    page.fill("#confirm", PASSWORD)
    page.click("#register-submit")
    page.wait_for_url(f"{live_url}/login")
    expect(page.locator(".flash-info")).to_contain_text("Account created")
    user = get_user_by_username(dash_database, username=username)
    assert user is not None

    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(f"{live_url}/forecast")

    # the candle chart with the model's forecast, drawn by plotly in the browser
    expect(page.locator("#forecast-value")).to_be_visible()
    chart = page.locator("#forecast-chart")
    expect(chart.locator(".legendtext", has_text="BTC_USDT")).to_be_visible()  # the candlestick trace
    expect(chart.locator("g.trace.boxes path.box").first).to_be_attached()  # plotly draws candles as boxes
    expect(chart.locator(".legendtext", has_text="forecast (model v7)")).to_be_visible()
    expect(page.locator("#forecast-champion")).to_contain_text("champion: version 7")
    page.screenshot(path=str(output_dir / "forecast.png"), full_page=True)

    # a token is shown once
    page.click("#nav-api")
    page.wait_for_url(f"{live_url}/api")
    page.fill("#token-name", "from-the-browser")
    page.click("#token-create")
    shown = page.locator("#token-plaintext")
    expect(shown).to_be_visible()
    token = shown.inner_text().strip()
    assert token.startswith("mur_") and len(token) == 47
    expect(page.locator("#curl-example")).to_contain_text(token)
    page.screenshot(path=str(output_dir / "token-created.png"), full_page=True)
    created = [t for t in list_tokens(dash_database, user_id=user.id) if t.name == "from-the-browser"]
    assert len(created) == 1 and token.startswith(created[0].prefix)

    page.reload()
    expect(page.locator("#token-list")).to_contain_text(created[0].prefix + "…")
    assert token not in page.content()
    page.screenshot(path=str(output_dir / "token-list.png"), full_page=True)

    # the member has no Admin link and the server refuses the page
    assert page.locator("#nav-admin").count() == 0
    response = page.goto(f"{live_url}/admin")
    assert response is not None and response.status == 403

    page.goto(f"{live_url}/forecast")
    page.click("#logout-button")
    page.wait_for_url(f"{live_url}/login")
    response = page.goto(f"{live_url}/api")
    assert page.url.startswith(f"{live_url}/login")
    assert list((output_dir).glob("*.png"))


def test_admin_edits_a_quota_and_triggers_training(
    live_url: str, browser_page, dash_database: Database, output_dir: Path
) -> None:
    from dash_helpers import make_user
    from playwright.sync_api import expect

    from mur.db import list_users

    page = browser_page
    admin, member = make_user(dash_database, admin=True), make_user(dash_database)
    page.goto(f"{live_url}/login?next=/admin")
    page.fill("#username", admin.username)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(f"{live_url}/admin")
    expect(page.locator("#admin-users-table")).to_contain_text(member.username)

    page.click("#admin-user")
    search = page.locator(".dash-dropdown-search")  # typed into once the opened list shows its search box
    expect(search).to_be_visible()
    search.fill(member.username)
    # pick the option once the search has narrowed the list to it: Enter on a list still showing other
    # members (all share the "member_" prefix) would pick whichever came first
    option = page.locator(".dash-dropdown-option", has_text=member.username)
    expect(option).to_have_count(1)
    option.click()
    expect(page.locator("#admin-user")).to_contain_text(member.username)
    expect(page.locator("#admin-roles input[value=member]")).to_be_checked()
    page.fill("#admin-quota", "123")
    page.click("#admin-save")
    expect(page.locator("#admin-save-ok")).to_contain_text(f"Saved {member.username}")
    assert next(u for u in list_users(dash_database) if u.id == member.id).monthly_limit == 123

    page.click("#admin-train")
    expect(page.locator("#admin-train-run-id")).to_contain_text("manual__")
    expect(page.locator("#admin-champions")).to_contain_text("BTC_USDT champion: version 7")
    page.screenshot(path=str(output_dir / "admin.png"), full_page=True)
