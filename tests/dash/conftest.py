"""Dashboard fixtures: a dedicated migrated database, a fake Serve API and a fake Airflow, the app and clients."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import pytest
from dash import Dash
from dash_fakes import FakeService, fake_airflow, fake_serve
from dash_helpers import random_ip
from flask.testing import FlaskClient

from dash_app.app import create_app
from mur.db import Database
from mur.settings import Settings

PAIRS = ["btc_usdt", "eth_usdt"]
AIRFLOW_PASSWORD = "airflow-pw"


@pytest.fixture(scope="session")
def dash_db_settings(pg_database_factory: Callable[..., Settings]) -> Settings:
    """A migrated database of its own, so table-content assertions see only the dashboard tests' rows."""
    return pg_database_factory()


@pytest.fixture(scope="session")
def last_candles() -> dict[str, tuple[str, float]]:
    """The last bundled candle (time, close) of each test pair: what the fake Serve API forecasts from."""
    from mur.data import BundledMarketData

    market = BundledMarketData()
    out = {}
    for pair in PAIRS:
        _first, last = market.data_range(pair)
        frame = market.klines(pair, start=last.to_pydatetime())
        out[pair] = (last.strftime("%Y-%m-%dT%H:%M:%SZ"), float(frame["close"].iloc[-1]))
    return out


@pytest.fixture(scope="session")
def serve_api(last_candles: dict[str, tuple[str, float]]) -> Iterator[FakeService]:
    service = fake_serve(last_candles).start()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def airflow_api() -> Iterator[FakeService]:
    service = fake_airflow(username="admin", password=AIRFLOW_PASSWORD).start()
    yield service
    service.stop()


@pytest.fixture
def dash_settings(dash_db_settings: Settings, serve_api: FakeService, airflow_api: FakeService) -> Settings:
    serve_api.status_override = None  # type: ignore[attr-defined]
    return dash_db_settings.replace(
        secret_key=secrets.token_urlsafe(32),
        serve_host="127.0.0.1",
        serve_port=serve_api.port,
        airflow_url=airflow_api.url,
        airflow_user="admin",
        airflow_password=AIRFLOW_PASSWORD,
        pairs=PAIRS,
        login_max_attempts=3,
        login_ip_max_attempts=5,
        login_user_max_attempts=6,
        login_window_s=300,
        registration="open",
        registration_max_per_ip=20,
    )


@pytest.fixture
def dash_database(dash_settings: Settings) -> Iterator[Database]:
    db = Database(dash_settings, maxconn=4)
    yield db
    db.close()


@pytest.fixture
def dash_app(dash_settings: Settings, dash_database: Database) -> Dash:
    return create_app(dash_settings, db=dash_database)


@pytest.fixture
def client(dash_app: Dash) -> FlaskClient:
    """A test client with its own random client IP (login rate limits count per IP)."""
    test_client = dash_app.server.test_client()
    test_client.environ_base["REMOTE_ADDR"] = random_ip()
    return test_client


@pytest.fixture
def make_client(dash_app: Dash) -> Callable[[], FlaskClient]:
    """More clients of the same app (a second browser)."""

    def make() -> FlaskClient:
        test_client = dash_app.server.test_client()
        test_client.environ_base["REMOTE_ADDR"] = random_ip()
        return test_client

    return make
