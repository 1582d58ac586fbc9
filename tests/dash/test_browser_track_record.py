"""The Forecast page in headless Chromium (issue 25): the freshness line (when the forecast candle closes and
how old the model is, in market time), the live-reliability panel (coverage of the range per horizon over the
last 24 h / 7 d / 30 d next to the nominal level) and the CSV download of the track record, which has the same
rows as the API's ``format=csv``. Screenshots: ``test-output/dash/<test name>/``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from dash_fakes import FakeService, Request, fake_serve
from dash_helpers import PASSWORD, random_name
from test_browser import browser_page, live_url, output_dir  # noqa: F401  (fixtures)

from mur.clock import market_clock
from mur.db import Database, create_user, fill_actuals, record_forecast
from mur.monitoring.track_record import track_record, track_record_csv
from mur.settings import Settings
from mur.timeutil import iso

pytestmark = pytest.mark.browser

PAIR = "btc_usdt"  # the page's first pair
TRAINED: dict[str, str] = {}
"""What the fake Serve API says the model was trained until (set by the test from the market clock)."""


@pytest.fixture(scope="module")
def dash_db_settings(pg_database_factory: Callable[..., Settings]) -> Settings:
    """A database of this module's own: its track record never shows up in other dashboard tests."""
    return pg_database_factory()


@pytest.fixture(scope="module")
def serve_api(last_candles: dict[str, tuple[str, float]]) -> Iterator[FakeService]:
    """The fake Serve API with ranges, its answers saying when the model was trained (``TRAINED``)."""
    service = fake_serve(last_candles, quantiles=True)
    plain = service.fallback

    def with_age(request: Request) -> tuple[int, Any]:
        status, body = plain(request)  # type: ignore[misc]
        if status == 200 and isinstance(body, dict) and TRAINED:
            body["model_trained_until"] = TRAINED["until"]
        return status, body

    service.fallback = with_age
    service.start()
    yield service
    service.stop()


def track_record_rows(db: Database, settings: Settings) -> None:
    """24 resolved 1 h forecasts with a 90 % range in the last 24 market hours (18 inside), two versions per
    target (only the first served counts), and 10 resolved 4 h ones in the last 7 days (all inside)."""
    hour = market_clock(settings).hour()
    closes = []
    for k in range(1, 25):
        target = hour - timedelta(hours=k)
        lower, upper = (99.0, 101.0) if k <= 18 else (101.0, 103.0)
        for n, version in enumerate(("6", "7")):
            record_forecast(
                db,
                pair=PAIR,
                model_version=version,
                target_time=target,
                predicted=100.2,
                last_close=100.1,
                made_at=target - timedelta(minutes=50 - 10 * n),
                horizon_hours=1,
                lower=lower if n == 0 else 50.0,  # the later version's range would hold every close
                upper=upper if n == 0 else 150.0,
                level=0.9,
            )
        closes.append((target, 100.0))
    for k in range(30, 130, 10):
        target = hour - timedelta(hours=k)
        record_forecast(
            db,
            pair=PAIR,
            model_version="6",
            target_time=target,
            predicted=100.5,
            last_close=100.3,
            made_at=target - timedelta(hours=4),
            horizon_hours=4,
            lower=98.0,
            upper=102.0,
            level=0.9,
        )
        closes.append((target, 100.0))
    fill_actuals(db, pair=PAIR, candles=closes)


def log_in(page: Any, live_url: str, db: Database) -> None:  # noqa: F811
    username = random_name("track")
    create_user(db, username=username, password=PASSWORD)
    page.goto(f"{live_url}/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(f"{live_url}/forecast")


def test_freshness_reliability_and_csv_download(
    live_url: str,  # noqa: F811
    browser_page,  # noqa: F811
    dash_database: Database,
    dash_settings: Settings,
    output_dir: Path,  # noqa: F811
) -> None:
    from playwright.sync_api import expect

    clock = market_clock(dash_settings)
    TRAINED["until"] = iso(clock.now() - timedelta(hours=3, minutes=20))
    track_record_rows(dash_database, dash_settings)
    page = browser_page
    log_in(page, live_url, dash_database)

    # the freshness line: the close time in plain words and the model's age, in market time
    expect(page.locator("#forecast-value")).to_be_visible()
    expect(page.locator("#forecast-close")).to_contain_text("Forecast for the close at")
    expect(page.locator("#forecast-close")).to_contain_text("market time")
    expect(page.locator("#model-age")).to_contain_text("trained 3 market hours ago")
    expect(page.locator("#model-age")).to_contain_text("version 7")
    expect(page.locator("#forecast-headline")).to_contain_text("for the close at")

    # live reliability: per horizon and window, the first served forecast only (18 of 24 inside)
    table = page.locator("#live-reliability")
    expect(table).to_be_visible()
    one_hour = table.locator("tbody tr", has_text="1 h")
    expect(one_hour).to_contain_text("75.0% of 24 (nominal 90%)")
    four_hours = table.locator("tbody tr", has_text="4 h")
    expect(four_hours.locator("td").nth(1)).to_have_text("–")  # none in the last 24 h
    expect(four_hours).to_contain_text("100.0% of 10 (nominal 90%)")
    expect(page.locator("#track-coverage")).to_have_text("75.0%")
    # the track record's interval skill is the panel's (same rows, same naive range)
    expect(one_hour).to_contain_text(f"skill {page.locator('#track-interval-skill').inner_text()}")
    page.screenshot(path=str(output_dir / "forecast-freshness-reliability.png"), full_page=True)

    # the CSV download: the same rows as the API's format=csv
    with page.expect_download() as event:
        page.click("#forecast-download-button")
    download = event.value
    assert download.suggested_filename.startswith(f"{PAIR}-track-record-")
    assert download.suggested_filename.endswith(".csv")
    text = Path(download.path()).read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    resolved = [r for r in rows if r["status"] == "resolved"]
    assert len([r for r in resolved if r["horizon_hours"] == "1"]) == 24
    assert {r["model_version"] for r in resolved if r["horizon_hours"] == "1"} == {"6"}  # the first served
    assert len([r for r in resolved if r["horizon_hours"] == "4"]) == 10
    expected = track_record_csv(track_record(dash_database, PAIR, market_hour=clock.hour(), limit=1000))
    assert [r for r in rows if r["status"] == "resolved"] == [
        r for r in csv.DictReader(io.StringIO(expected)) if r["status"] == "resolved"
    ]
