"""The API's forecast body with a real quantile model (a tiny one trained here, exported to ONNX, loaded as
the Forecaster loads champions): ``horizons`` with median and calibrated range, in the OpenAPI schema, for
GET (cached candles) and POST (the caller's candles); every horizon lands in the track record."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from api_fakes import FakeRegistry, auth
from fastapi.testclient import TestClient

from mur.db import Database, create_token, create_user, list_forecasts
from mur.model.inference import forecast_body
from mur.serving.contract import ForecastOut
from mur.serving.model import LoadedModel
from mur.serving.payload import candles_from_payload
from mur.settings import Settings
from serve_app.api import create_api
from serve_app.service import ApiService

PAIR = "eth_usdt"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    from mur.training.driver import train_and_register
    from mur.training.loop import LocalFit

    out = tmp_path_factory.mktemp("model")
    settings = Settings(train_days=30, num_layers=1, market_data="bundled")
    train_and_register(settings, PAIR, fit=LocalFit(), out_dir=out, register=False, epochs=1, hidden_size=4)
    return LoadedModel.from_bytes(PAIR, 3, (Path(out) / "model.onnx").read_bytes(), {"alias": "champion"})


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    from mur.data import BundledMarketData

    frame = BundledMarketData().klines(PAIR, start=pd.Timestamp("2025-05-01T00:00Z").to_pydatetime())
    return frame.iloc[:400].reset_index(drop=True)


@dataclass
class ModelForecaster:
    """What a Forecaster replica does for one request, around a real loaded champion."""

    model: LoadedModel
    candles: pd.DataFrame

    def _answer(self, frame: pd.DataFrame) -> ForecastOut:
        points, quantiles = self.model.forecast(self.model.window(frame)[None])
        candle_time = frame["timestamp"].iloc[-1]
        body = forecast_body(
            PAIR,
            prediction=float(points[0]),
            last_close=float(frame["close"].iloc[-1]),
            candle_time=candle_time,
            model_version=self.model.version,
            horizons=self.model.horizon_rows(None if quantiles is None else quantiles[0], candle_time),
        )
        return ForecastOut.model_validate(body)

    async def forecast_latest(self) -> ForecastOut:
        return self._answer(self.candles)

    async def forecast_candles(self, rows: Sequence[Mapping[str, Any]]) -> ForecastOut:
        return self._answer(candles_from_payload(rows, self.model.seq_len))

    async def status(self) -> dict[str, Any]:
        return {
            "pair": PAIR,
            "loaded": True,
            "version": 3,
            "model": self.model.describe(),
            "load_error": None,
        }


@pytest.fixture
def service(pg_settings: Settings, model: LoadedModel, candles: pd.DataFrame) -> Iterator[ApiService]:
    found = ApiService(
        db=Database(pg_settings, maxconn=4),
        forecasters={PAIR: ModelForecaster(model, candles)},
        registry=FakeRegistry(targets={PAIR: 3}),
        db_threads=2,
    )
    try:
        yield found
    finally:
        found.close()


@pytest.fixture
def client(pg_settings: Settings, service: ApiService) -> Iterator[tuple[TestClient, str, Database]]:
    db = Database(pg_settings, maxconn=2)
    user = create_user(
        db, username=f"h{np.random.default_rng().integers(1e12)}", password="Pw-long-enough-123"
    )
    token, _ = create_token(db, user_id=user.id)
    try:
        with TestClient(create_api(service), raise_server_exceptions=False) as c:
            yield c, token, db
    finally:
        db.close()


def check_horizons(body: dict[str, Any]) -> None:
    assert [h["hours"] for h in body["horizons"]] == [1, 4, 24]
    start = pd.Timestamp(body["candle_time"])
    for h in body["horizons"]:
        assert h["lower"] <= h["median"] <= h["upper"] and h["level"] == pytest.approx(0.9)
        assert pd.Timestamp(h["target_time"]) == start + pd.Timedelta(hours=h["hours"])
        assert pd.Timestamp(h["close_time"]) == pd.Timestamp(h["target_time"]) + pd.Timedelta(hours=1)
    assert body["horizons"][0]["median"] == pytest.approx(body["forecast"])
    assert pd.Timestamp(body["close_time"]) == pd.Timestamp(body["target_time"]) + pd.Timedelta(hours=1)


def test_get_and_post_carry_every_horizon_and_the_schema_documents_them(
    client: tuple[TestClient, str, Database], candles: pd.DataFrame, model: LoadedModel
) -> None:
    c, token, db = client
    got = c.get(f"/v1/forecast/{PAIR}", headers=auth(token))
    assert got.status_code == 200, got.text
    check_horizons(got.json())
    rows = [
        {
            "timestamp": int(pd.Timestamp(r.timestamp).timestamp() * 1000),
            "open": r.open,
            "high": r.high,
            "low": r.low,
            "close": r.close,
            "volume": r.volume,
        }
        for r in candles.iloc[-model.seq_len :].itertuples()
    ]
    posted = c.post(f"/v1/forecast/{PAIR}", headers=auth(token), json={"candles": rows})
    assert posted.status_code == 200, posted.text
    check_horizons(posted.json())
    assert posted.json()["horizons"] == got.json()["horizons"]  # same candles, same model, same answer
    schema = c.get("/openapi.json").json()["components"]["schemas"]
    assert set(schema["HorizonOut"]["properties"]) == {
        "hours",
        "target_time",
        "close_time",
        "median",
        "lower",
        "upper",
        "level",
    }
    assert "horizons" in schema["ForecastOut"]["properties"]
    models = c.get("/v1/models", headers=auth(token)).json()["models"]
    assert models[0]["horizons"] == [1, 4, 24] and models[0]["quantile_levels"] == [0.05, 0.5, 0.95]
    assert models[0]["features"][-2:] == ["hour", "volume"]


def test_a_served_forecast_records_every_horizon(
    client: tuple[TestClient, str, Database], service: ApiService
) -> None:
    c, token, db = client
    assert c.get(f"/v1/forecast/{PAIR}", headers=auth(token)).status_code == 200
    service.close()  # waits for the pending track-record writes (off the request path)
    rows = [f for f in list_forecasts(db, pair=PAIR, model_version="3", limit=50)]
    by_hours = {f.horizon_hours: f for f in rows}
    assert set(by_hours) >= {1, 4, 24}
    assert all(
        f.lower is not None and f.lower <= f.predicted <= f.upper and f.level == 0.9
        for f in by_hours.values()
    )
