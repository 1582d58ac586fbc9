"""The admin's pair upload in headless Chromium (issue 25): on the admin page a CSV of hourly klines with a gap
is refused in one line, a good one adds the pair (the table shows it, the training DAG's catalogue has it and
the market data serves its candles), and removing it keeps its candles. Screenshots:
``test-output/dash/<test name>/``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import pytest
from dash_helpers import PASSWORD, make_user
from pair_csv import write_pair_csv
from test_browser import browser_page, live_url, output_dir  # noqa: F401  (fixtures)

from mur.data import get_market_data
from mur.data.catalogue import pair_catalogue
from mur.db import Database
from mur.db.pairs import get_pair_record
from mur.settings import Settings

pytestmark = pytest.mark.browser

HOURS = 300


@pytest.fixture(scope="module")
def dash_db_settings(pg_database_factory: Callable[..., Settings]) -> Settings:
    """A database of this module's own (the catalogue it changes is nobody else's), a short minimum history."""
    return pg_database_factory().replace(pair_min_history_hours=200)


def test_admin_uploads_a_csv_pair_and_removes_it(
    live_url: str,  # noqa: F811
    browser_page,  # noqa: F811
    dash_settings: Settings,
    dash_database: Database,
    output_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    page = browser_page
    pair = f"t{secrets.token_hex(3)}_usdt"
    symbol = pair.replace("_", "").upper()
    admin = make_user(dash_database, admin=True)

    page.goto(f"{live_url}/login")
    page.fill("#username", admin.username)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(f"{live_url}/forecast")
    page.goto(f"{live_url}/admin")
    expect(page.locator("#admin-pairs-table")).to_contain_text("btc_usdt")

    # a gap: refused with one line saying where, nothing added
    page.fill("#admin-pair-symbol", symbol)
    upload = page.locator("#admin-pair-upload input[type=file]")
    upload.set_input_files(str(write_pair_csv(tmp_path / "gappy.csv", HOURS, drop=(50, 51))))
    expect(page.locator("#admin-pair-file")).to_contain_text("gappy.csv")
    page.click("#admin-pair-add")
    error = page.locator("#admin-pair-error")
    expect(error).to_contain_text(
        "gappy.csv has 2 missing hour(s): the first gap is 2 h from 2024-01-03T02:00:00Z"
    )
    page.screenshot(path=str(output_dir / "upload-refused.png"), full_page=True)
    assert get_pair_record(dash_database, pair=pair) is None

    # a good file: added, listed, in the next run's pairs, its candles in the market data
    upload.set_input_files(str(write_pair_csv(tmp_path / "good.csv", HOURS)))
    expect(page.locator("#admin-pair-file")).to_contain_text("good.csv")
    page.click("#admin-pair-add")
    expect(page.locator("#admin-pair-ok")).to_contain_text(
        f"Added {pair.upper()}: {HOURS} hourly candles from good.csv"
    )
    row = page.locator("#admin-pairs-table tr", has_text=pair)
    expect(row).to_contain_text("csv")
    expect(row).to_contain_text("active")
    expect(row).to_contain_text(admin.username)
    page.screenshot(path=str(output_dir / "upload-added.png"), full_page=True)
    assert pair_catalogue(dash_settings, dash_database)[-1] == pair
    assert len(get_market_data(dash_settings).klines(pair)) == HOURS

    # removed: out of the catalogue, its candles kept
    page.click("#admin-pair-remove-pair")
    page.get_by_text(pair.upper(), exact=True).last.click()
    page.click("#admin-pair-remove")
    expect(page.locator("#admin-pair-remove-ok")).to_contain_text(f"Removed {pair.upper()} from training")
    expect(page.locator("#admin-pairs-table tr", has_text=pair)).to_contain_text("removed")
    page.screenshot(path=str(output_dir / "pair-removed.png"), full_page=True)
    assert pair not in pair_catalogue(dash_settings, dash_database)
    record = get_pair_record(dash_database, pair=pair)
    assert record is not None and not record.active and record.removed_by == admin.username
    assert len(get_market_data(dash_settings).klines(pair)) == HOURS
