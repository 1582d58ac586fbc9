"""The HTTP API in-process for tests: ``create_api`` over an ``ApiService`` with fake forecasters (no Ray, no
MLflow) and the real PostgreSQL for tokens, quotas and the track record.

The fake forecaster runs the real request path of a Forecaster replica (candle validation, the window, the
forecast body, failures raised as MurErrors) around a stand-in for the ONNX model, so what the API guarantees about
inputs and outputs is checked here as it runs on Serve. Used by tests/serve and tests/security.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from mur.db import Database, create_token, create_user, get_usage, set_quota
from mur.errors import ModelNotLoadedError
from mur.model.features import CLOSE_IDX
from mur.model.inference import forecast_body, window_from_candles
from mur.serving.contract import ForecastOut
from mur.serving.payload import candles_from_payload
from mur.settings import Settings
from serve_app.api import create_api
from serve_app.metrics import ANSWERS, BUCKETS, DURATION, QUOTA, REQUESTS, ApiMetrics, RequestMeters
from serve_app.service import ApiService, request_database

PAIR = "eth_usdt"
SEQ = 4
VERSION = 7
CANDLE_TIME = datetime(2025, 6, 1, 12, tzinfo=UTC)


METRICS = {"mae": 1.5, "rmse": 2.0, "mape": 0.5, "directional_accuracy": 0.55}
MODEL = {  # what LoadedModel.describe() reports
    "pair": PAIR,
    "model_name": f"mur-{PAIR}",
    "version": VERSION,
    "alias": "champion",
    "aliases": ["champion"],
    "seq_len": SEQ,
    "trained_window": {"start": "2025-01-01T00:00:00Z", "end": "2025-06-01T00:00:00Z"},
    "test_window": {"start": "2025-05-15T00:00:00Z", "end": "2025-06-01T00:00:00Z"},
    "metrics": {
        "mae": 1.5,
        "skill": 0.1,
        "model": METRICS,
        "persistence": METRICS,
        "linear": METRICS,
        "n_test": 9,
    },
    "run_id": "r1",
    "loaded_at": "2025-06-01T12:00:00Z",
}


class _RaySeries:
    """A Ray metric's ``inc``/``observe`` (tags as a dict) over a prometheus_client metric, with Ray's labels."""

    def __init__(self, metric: Any, labels: dict[str, str]) -> None:
        self.metric, self.labels = metric, labels

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        self.metric.labels(**self.labels, **(tags or {})).inc(value)

    def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.metric.labels(**self.labels, **(tags or {})).observe(value)


class ExportedMeters(RequestMeters):
    """The in-process stand-in for Ray: one ingress replica's :class:`RequestMeters` as Ray's metrics agent
    exports them (``ray_mur_*``, with Ray's labels: worker, replica, application...), in a prometheus_client
    registry. The real export: tests/serve/test_api_metrics_serve.py."""

    def __init__(self, replica: str = "r1", app: str = "mur") -> None:  # no super(): no Ray metrics
        self.registry = CollectorRegistry()
        ray = {"Component": "core_worker", "WorkerId": f"w-{replica}", "application": app}
        ray |= {"deployment": "api", "replica": replica, "SessionName": "session_x"}

        def make(kind: Any, name: str, tags: tuple[str, ...], **kw: Any) -> Any:
            metric = kind(f"ray_{name}", name, [*ray, *tags], registry=self.registry, **kw)
            return _RaySeries(metric, ray)

        self.requests = make(Counter, REQUESTS, ("route", "method", "status"))
        self.duration = make(Histogram, DURATION, ("route", "method"), buckets=BUCKETS)
        self.quota = make(Counter, QUOTA, ("route",))
        self.answers = make(Counter, ANSWERS, ("source",))

    def export(self) -> str:
        return generate_latest(self.registry).decode()


def exports_of(*meters: ExportedMeters) -> Callable[[], Awaitable[tuple[list[str], bool]]]:
    """What reading every node's Ray export returns when the replicas are ``meters``."""

    async def read() -> tuple[list[str], bool]:
        return [m.export() for m in meters], True

    return read


def exported_metrics(
    meters: ExportedMeters | None = None, *others: ExportedMeters, **kwargs: Any
) -> ApiMetrics:
    """An :class:`ApiMetrics` of replica ``meters`` whose scrape reads its series and ``others``' (app "mur")."""
    meters = meters or ExportedMeters()
    return ApiMetrics(meters, app="mur", exports=exports_of(meters, *others), **kwargs)


def plus_one_percent(window: np.ndarray) -> float:
    """The stand-in model: the window's last close + 1 % (in float32, as the ONNX model computes)."""
    return float(np.float32(window[-1, CLOSE_IDX]) * np.float32(1.01))


@dataclass
class FakeForecaster:
    """A pair forecaster whose model is ``predict(window)``; everything around it is the real code path."""

    pair: str
    loaded: bool = True
    broken: bool = False
    calls: int = 0
    predict: Callable[[np.ndarray], float] = plus_one_percent

    def _answer(self, window: np.ndarray, last_close: float, candle_time: datetime) -> ForecastOut:
        if self.broken:
            raise RuntimeError("replica died")
        if not self.loaded:
            raise ModelNotLoadedError(f"no model loaded for {self.pair} yet")
        body = forecast_body(
            self.pair,
            prediction=self.predict(window),
            last_close=last_close,
            candle_time=candle_time,
            model_version=VERSION,
        )
        return ForecastOut.model_validate(body)

    async def forecast_latest(self) -> ForecastOut:
        self.calls += 1
        window = np.full((SEQ, 9), 100.0, dtype=np.float32)
        return self._answer(window, 100.0, CANDLE_TIME)

    async def forecast_candles(self, rows: Sequence[Mapping[str, Any]]) -> ForecastOut:
        self.calls += 1
        candles = candles_from_payload(rows, SEQ)
        window = window_from_candles(candles, SEQ)
        last = candles.iloc[-1]
        return self._answer(window, float(last["close"]), last["timestamp"])

    async def status(self) -> dict[str, Any]:
        return {
            "pair": self.pair,
            "loaded": self.loaded,
            "version": VERSION if self.loaded else None,
            "model": MODEL if self.loaded else None,
            "load_error": None,
            "market": {"candle_time": "2025-06-01T12:00:00Z", "error": None},
        }


@dataclass
class FakeRegistry:
    targets: dict[str, int] = field(default_factory=lambda: {PAIR: VERSION})
    refreshed: int = 0

    async def snapshot(self) -> dict[str, Any]:
        return {
            "targets": {p: {"version": v} for p, v in self.targets.items()},
            "registry_ok": True,
            "error": None,
            "checked_at": None,
        }

    async def refresh(self) -> dict[str, Any]:
        self.refreshed += 1
        return await self.snapshot()


@dataclass
class Api:
    client: TestClient
    service: ApiService
    forecaster: FakeForecaster
    registry: FakeRegistry
    db: Database

    def user(self, *, quota: int | None = None, admin: bool = False) -> tuple[int, str]:
        user = create_user(
            self.db,
            username=f"u{uuid.uuid4().hex[:10]}",
            password=f"Pw-{uuid.uuid4().hex}",
            roles=("admin",) if admin else ("member",),
        )
        if quota is not None:
            set_quota(self.db, user_id=user.id, monthly_limit=quota)
        token, _ = create_token(self.db, user_id=user.id)
        return user.id, token

    def usage(self, user_id: int) -> int:
        return get_usage(self.db, user_id=user_id)[0]


@contextmanager
def running_api(
    settings: Settings, *, db_timeout_s: float = 5.0, configured_pairs: Sequence[str] = ()
) -> Iterator[Api]:
    """The app over a fresh service on ``settings``' database; closed (pending writes done) at the end."""
    forecaster, registry = FakeForecaster(PAIR), FakeRegistry()
    service = ApiService(
        db=request_database(settings, threads=4, db_timeout_s=db_timeout_s),
        forecasters={PAIR: forecaster},
        registry=registry,
        db_threads=4,
        db_timeout_s=db_timeout_s,
        configured_pairs=configured_pairs,
        window=SEQ,
    )
    db = Database(settings, maxconn=2)
    try:
        api = create_api(service, metrics=exported_metrics())
        with TestClient(api, raise_server_exceptions=False) as client:
            yield Api(client, service, forecaster, registry, db)
    finally:
        service.close()
        db.close()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert body["error"] == code and body["message"], body
    return body


def rows(n: int = SEQ) -> list[dict[str, Any]]:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    return [
        {
            "timestamp": int((start + timedelta(hours=i)).timestamp() * 1000),
            "open": 100.0 + i,
            "high": 102.0 + i,
            "low": 99.0 + i,
            "close": 101.0 + i,
        }
        for i in range(n)
    ]
