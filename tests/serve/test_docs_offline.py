"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) work with the network off (issue 25 #5): every script,
stylesheet and icon they load is served by the API itself (the ``fastapi-offline`` package's assets), and in
headless Chromium with every request that leaves 127.0.0.1 blocked, both pages render the API.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from api_fakes import Api, running_api

from mur.settings import PROJECT_ROOT, Settings
from mur.waiting import wait_until
from serve_app.api import DOCS_ASSETS, TITLE

ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*["']([^"']+)["']""")


@pytest.fixture
def api(pg_database_factory: Callable[..., Settings]) -> Iterator[Api]:
    with running_api(pg_database_factory()) as api:
        yield api


def asset_urls(html: str) -> list[str]:
    return [a or b for a, b in ASSET.findall(html)]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_local_assets(api: Api, page: str) -> None:
    response = api.client.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "cdn.jsdelivr" not in html and "unpkg" not in html and "fonts.googleapis" not in html
    urls = [u for u in asset_urls(html) if not u.startswith("#")]
    assert any(u.endswith(".js") for u in urls), urls  # the page does load its script...
    for url in urls:
        assert url.startswith("/"), f"{page} loads {url} from elsewhere"  # ...from this server only
        answer = api.client.get(url)
        assert answer.status_code == 200, (url, answer.status_code)
        if url.endswith(".js"):
            assert len(answer.content) > 100_000 and "javascript" in answer.headers["content-type"]
        if url.startswith(DOCS_ASSETS):
            assert answer.headers["content-type"].split(";")[0] in (
                "text/javascript",
                "application/javascript",
                "text/css",
                "image/png",
            )
    assert api.client.get(f"{DOCS_ASSETS}/nothing-here.js").json()["error"] == "not_found"


# --- headless Chromium, network off ------------------------------------------------------------------------
def chromium_path() -> str | None:
    return os.environ.get("MUR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def live_url(api: Api) -> Iterator[str]:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(api.client.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, what="uvicorn to start", timeout_s=10, interval_s=0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.mark.browser
def test_docs_and_redoc_render_with_the_network_off(live_url: str) -> None:
    executable = chromium_path()
    if executable is None:
        if os.environ.get("MUR_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is not installed (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import expect, sync_playwright

    out = Path(os.environ.get("MUR_TEST_OUTPUT") or PROJECT_ROOT / "test-output") / "serve" / "docs-offline"
    out.mkdir(parents=True, exist_ok=True)
    blocked: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=["--headless", "--no-sandbox", "--disable-gpu"], headless=True
        )
        try:
            context = browser.new_context()

            def offline(route) -> None:  # the network is off: only this server answers
                if route.request.url.startswith(live_url):
                    route.continue_()
                else:
                    blocked.append(route.request.url)
                    route.abort()

            context.route("**/*", offline)
            page = context.new_page()
            page.set_default_timeout(60_000)
            expect.set_options(timeout=60_000)

            page.goto(f"{live_url}/docs")
            expect(page.locator(".swagger-ui .info .title")).to_contain_text(TITLE)
            expect(page.locator(".opblock-summary-path", has_text="/v1/track-record/{pair}")).to_be_visible()
            page.screenshot(path=str(out / "docs.png"), full_page=True)

            page.goto(f"{live_url}/redoc")
            expect(page.locator("h1", has_text=TITLE)).to_be_visible()
            expect(page.get_by_text("Track record: how the served forecasts fared").first).to_be_attached()
            page.screenshot(path=str(out / "redoc.png"))
        finally:
            browser.close()
    assert blocked == [], f"the docs pages tried to reach the network: {blocked}"
