"""Unknown files under ``/_dash-component-suites/``: a small JSON 404 and one log line (was a 500 with a
3 KB traceback per request, unauthenticated log flooding). No database is touched: the path is public."""

from __future__ import annotations

import logging
import secrets

import pytest
from flask.testing import FlaskClient

from dash_app.app import create_app
from mur.settings import Settings

BAD_PATHS = [
    "/_dash-component-suites/dash/dcc/nope.v1_2_3m1.js",  # registered package, unknown file
    "/_dash-component-suites/plotly/package_data/nope.js",
    "/_dash-component-suites/dash/../../etc/passwd",
    "/_dash-component-suites/not_a_package/x.js",
    "/_dash-component-suites/x",  # no file at all: Dash would serve its page
    "/_dash-component-suites/",
]


@pytest.fixture(scope="module")
def client() -> FlaskClient:
    settings = Settings(_env_file=None, secret_key=secrets.token_urlsafe(32))
    return create_app(settings).server.test_client()


@pytest.mark.parametrize("path", BAD_PATHS)
def test_an_unknown_component_file_is_a_small_json_404_with_one_log_line(
    client: FlaskClient, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        response = client.get(path)
    assert response.status_code == 404
    assert response.mimetype == "application/json" and response.get_json() == {"error": "not found"}
    assert len(response.data) < 100
    assert len(caplog.records) <= 1, [r.getMessage()[:200] for r in caplog.records]
    assert all(r.exc_info is None and len(r.getMessage()) < 300 for r in caplog.records)


def test_a_real_component_file_is_still_served(client: FlaskClient) -> None:
    response = client.get("/_dash-component-suites/dash/deps/react@18.3.1.min.js")
    assert response.status_code == 200 and b"React" in response.data[:200]
