"""The dashboard header's one clock line: market time, its speed and wall time (fast tier for the line itself,
the rendered navbar through the page callback)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from dash_helpers import logged_in, make_user, page, text_of
from flask.testing import FlaskClient

from dash_app.layout import clock_line
from mur.clock import MarketClock
from mur.db import Database

START = datetime(2024, 11, 6, 2, 16, tzinfo=UTC)


def test_the_line_names_market_time_speed_and_wall_time() -> None:
    line = clock_line(MarketClock(start=START, origin=time.time(), speed=60.0))
    assert re.fullmatch(r"market 2024-11-06 02:1\d UTC · x60 · wall \d{4}-\d\d-\d\d \d\d:\d\d UTC", line), (
        line
    )
    assert clock_line(MarketClock(start=START, origin=time.time(), speed=0.0)).startswith(
        "market 2024-11-06 02:16 UTC · frozen · wall "
    )
    assert clock_line(MarketClock.real_time()).endswith("UTC (live)")


def test_every_page_header_shows_the_clock_line(client: FlaskClient, dash_database: Database) -> None:
    logged_in(client, make_user(dash_database))
    for path in ("/forecast", "/api"):
        header = text_of(page(client, path)["navbar"])
        assert re.search(r"market \d{4}-\d\d-\d\d \d\d:\d\d UTC · .*wall \d{4}", header), header
