"""``GET /v1/models`` carries the promotion gate's decision for each champion (issue 12, "Visible decisions").

In-process: a registered version's tags, written as ``mur.registry.versions.log_and_register`` writes them,
go through the code Serve uses (``version_result`` as JSON, which ``mur.serving.champions.champions`` returns to
the watcher; ``LoadedModel.describe``; ``ApiService.models``; the FastAPI response model) to the JSON answer.
Only the ONNX session is left out; the database for tokens is the real PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from api_fakes import PAIR, SEQ, Api, auth, running_api
from mlflow.entities.model_registry import ModelVersion, ModelVersionTag

from mur.contracts import MetricsDocument, PredictorMetrics, Significance, Window
from mur.registry import version_result
from mur.registry.names import CHAMPION, model_name
from mur.serving.model import LoadedModel
from mur.settings import Settings

VERSION = 12
WINDOW = Window(start="2025-03-01T00:00:00Z", end="2025-06-01T00:00:00Z")
TEST_WINDOW = Window(start="2025-05-22T00:00:00Z", end="2025-06-01T00:00:00Z")
SIGNIFICANCE = Significance(
    dm_statistic=-2.1,
    dm_p_better=0.0183,
    dm_p_worse=0.9817,
    skill_se=0.0021,
    direction_hits=130,
    direction_n=230,
    direction_p_value=0.0283,
)
REASON = "fresher data; skill +0.0040 vs champion v11's +0.0050 is within noise (z=0.31 <= 1.64)"


def registered_version() -> ModelVersion:
    errors = PredictorMetrics(mae=10.0, rmse=12.0, mape=0.5, directional_accuracy=0.56)
    doc = MetricsDocument(
        pair=PAIR,
        arch="lstm",
        normalization="relative",
        data_window=WINDOW,
        test_window=TEST_WINDOW,
        model=errors,
        persistence=errors.model_copy(update={"mae": 10.04}),
        linear=errors,
        skill=0.004,
        beats_persistence=True,
        n_test=230,
        significance=SIGNIFICANCE,
    )
    tags = {  # the tags log_and_register sets on a version
        "pair": PAIR,
        "data_window_start": WINDOW.start,
        "data_window_end": WINDOW.end,
        "test_window_start": TEST_WINDOW.start,
        "test_window_end": TEST_WINDOW.end,
        "normalization": doc.normalization,
        "arch": doc.arch,
        "kind": "scheduled",
        "as_of": WINDOW.end,
        "gate_alias": CHAMPION,
        "gate_rule": "noise",
        "gate_reason": REASON,
        "skill": f"{doc.skill:.6f}",
        "mae": f"{doc.model.mae:.6f}",
        "dm_p_worse": f"{SIGNIFICANCE.dm_p_worse:.4g}",
        "dm_p_better": f"{SIGNIFICANCE.dm_p_better:.4g}",
        "metrics_json": doc.version_tag_json(),
    }
    return ModelVersion(
        name=model_name(PAIR),
        version=str(VERSION),
        creation_timestamp=0,
        run_id="run-12",
        tags=[ModelVersionTag(k, str(v)) for k, v in tags.items()],
        aliases=[CHAMPION],
    )


@pytest.fixture
def api(pg_settings: Settings) -> Iterator[Api]:
    with running_api(pg_settings) as api:
        # what champions() hands the watcher
        summary = version_result(registered_version()).model_dump(mode="json")
        model = LoadedModel(PAIR, VERSION, None, SEQ, summary, datetime(2025, 6, 1, 12, tzinfo=UTC))

        async def status() -> dict[str, Any]:  # the Forecaster replica's status with this model loaded
            return {"pair": PAIR, "loaded": True, "version": VERSION, "model": model.describe()}

        api.forecaster.status = status  # type: ignore[method-assign]
        yield api


def test_models_carry_the_gate_decision_significance_and_trained_window(api: Api) -> None:
    _, token = api.user()
    response = api.client.get("/v1/models", headers=auth(token))
    assert response.status_code == 200, response.text
    (model,) = response.json()["models"]
    assert model["pair"] == PAIR and model["version"] == VERSION and model["loaded"] is True
    assert model["gate"] == {"rule": "noise", "reason": REASON, "kind": "scheduled"}
    assert model["trained_window"] == WINDOW.model_dump()
    assert model["test_window"] == TEST_WINDOW.model_dump()
    significance = model["metrics"]["significance"]
    assert significance["dm_p_worse"] == pytest.approx(SIGNIFICANCE.dm_p_worse)
    assert significance["dm_p_better"] == pytest.approx(SIGNIFICANCE.dm_p_better)
    assert significance["direction_p_value"] == pytest.approx(SIGNIFICANCE.direction_p_value)
    assert significance["skill_se"] == pytest.approx(SIGNIFICANCE.skill_se)
    assert model["metrics"]["skill"] == pytest.approx(0.004)


def test_the_openapi_documents_the_gate_fields(api: Api) -> None:
    schemas = api.client.get("/openapi.json").json()["components"]["schemas"]
    model = schemas["ModelOut"]["properties"]
    assert {"gate", "trained_window", "test_window", "metrics"} <= set(model)
    assert {"rule", "reason", "kind"} <= set(schemas["GateOut"]["properties"])
    assert {"dm_p_worse", "dm_p_better", "direction_p_value"} <= set(schemas["Significance"]["properties"])
