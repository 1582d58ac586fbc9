"""The forecast answer has one contract (mur/serving/contract.py): the body a forecaster builds fits it, the API
publishes it in its OpenAPI schema, and the one client of the API (the dashboard's and ``mur forecast``'s)
reads its JSON into the same class, which writes that JSON back unchanged (the same keys and values, the same
``...Z`` times)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from mur.commands.forecast import forecast_table, heading
from mur.errors import ModelError, ServiceError
from mur.model.inference import forecast_body, horizon_rows
from mur.serving.calibration import apply_scales, graph_calibration
from mur.serving.client import ServeClient
from mur.serving.contract import ForecastBody, ForecastOut, HorizonOut, with_times

pytestmark = pytest.mark.fast

CANDLE = pd.Timestamp("2024-11-04T06:00:00Z")
LEVELS = (0.05, 0.5, 0.95)
NOW = datetime(2024, 11, 4, 7, 6, tzinfo=UTC)


def api_answer() -> dict[str, Any]:
    """The JSON the API answers for a forecast: the Forecaster's body, the online scale, the times."""
    quantiles = np.array([[68_300.0, 68_950.5, 69_600.0], [66_000.0, 69_100.0, 72_500.0]])
    body = forecast_body(
        "btc_usdt",
        prediction=68_950.5,
        last_close=69_000.0,
        candle_time=CANDLE,
        model_version=3,
        horizons=horizon_rows(quantiles, (1, 24), LEVELS, CANDLE),
    )
    body["calibration"] = graph_calibration((1, 24), LEVELS)
    body["model_trained_until"] = "2024-11-04T05:00:00Z"
    return with_times(apply_scales(body, "online", {1: (1.1, 40)}, "2024-11-04T06:30:00Z"), NOW)


def test_the_forecasters_body_and_the_api_answer_fit_the_contract() -> None:
    body = forecast_body("btc_usdt", prediction=110.0, last_close=100.0, candle_time=CANDLE, model_version=7)
    assert ForecastOut.model_validate(body).model_version == 7
    assert set(body) == set(ForecastBody.model_fields)  # the field set comes from the model
    assert body["candle_time"] == "2024-11-04T06:00:00Z" and body["target_time"] == "2024-11-04T07:00:00Z"
    model_file = forecast_body("btc_usdt", prediction=110.0, last_close=100.0, candle_time=CANDLE)
    assert model_file["model_version"] is None  # mur predict: a body, but no API answer without a version
    with pytest.raises(ValidationError):
        ForecastOut.model_validate(model_file)
    with pytest.raises(ModelError, match="contract"):
        forecast_body("btc_usdt", prediction=1.0, last_close=1.0, candle_time=CANDLE, horizons=[{"hours": 1}])
    answer = api_answer()
    parsed = ForecastOut.model_validate(answer)
    assert parsed.closes_at() == datetime(2024, 11, 4, 8, tzinfo=UTC) == parsed.close_time
    assert [h.closes_at() for h in parsed.horizons] == [h.close_time for h in parsed.horizons]
    # the contract writes the API's JSON back unchanged: the same keys, values and time text
    assert parsed.model_dump(mode="json", exclude_unset=True) == answer
    # an answer JSON cannot carry, or a range that is not a price, never fits (so it is never charged)
    for change in ({"forecast": float("nan")}, {"last_close": float("inf")}):
        with pytest.raises(ValidationError, match="finite"):
            ForecastOut.model_validate({**answer, **change})
    for key in ("median", "lower", "upper"):
        with pytest.raises(ValidationError, match="greater than 0"):
            ForecastOut.model_validate({**answer, "horizons": [{**answer["horizons"][0], key: 0.0}]})


def test_the_openapi_schema_publishes_the_core_model() -> None:
    from serve_app import api as api_module

    assert api_module.ForecastOut is ForecastOut
    spec = api_module.create_api(SimpleNamespace(window=24, answer_counts={})).openapi()  # type: ignore[arg-type]
    for method in ("get", "post"):
        ok = spec["paths"]["/v1/forecast/{pair}"][method]["responses"]["200"]["content"]["application/json"]
        assert ok["schema"] == {"$ref": "#/components/schemas/ForecastOut"}
    schemas = spec["components"]["schemas"]
    assert list(schemas["ForecastOut"]["properties"]) == list(ForecastOut.model_fields)
    assert list(schemas["HorizonOut"]["properties"]) == list(HorizonOut.model_fields)
    assert schemas["ForecastOut"]["properties"]["model_version"] == {
        "type": "integer",
        "title": "Model Version",
    }
    assert schemas["ForecastOut"]["properties"]["as_of"]["anyOf"][0] == {"type": "string"}  # ISO text


def test_the_dashboard_and_the_cli_read_the_answer_into_the_same_class() -> None:
    answer = api_answer()

    def client(body: dict[str, Any]) -> ServeClient:
        return ServeClient(
            "http://api.test", transport=httpx.MockTransport(lambda _: httpx.Response(200, json=body))
        )

    got = client(answer).forecast("btc_usdt", "token")
    assert type(got) is ForecastOut and got == ForecastOut.model_validate(answer)
    assert got.model_version == 3 and got.calibration is not None and got.calibration.method == "online"
    assert got.target_time == datetime(2024, 11, 4, 7, tzinfo=UTC)
    assert got.model_dump(mode="json", exclude_unset=True) == answer  # what mur forecast --json prints

    assert "model v3" in heading(got) and "(market now 2024-11-04 07:06 UTC)" in heading(got)
    assert forecast_table(got).row_count == 2
    with pytest.raises(ServiceError, match=r"btc_usdt does not fit its contract \(model_version: "):
        client({**answer, "model_version": None}).forecast("btc_usdt", "token")
