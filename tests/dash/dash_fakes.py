"""Tiny stand-ins for the services the dashboard is a client of: the Serve API and Airflow's REST API.

They are real HTTP servers on 127.0.0.1 (threads), so the dashboard's HTTP clients are exercised for real;
they answer in the documented shapes and record what they were asked.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Route = Callable[["Request"], tuple[int, Any]]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeService:
    """An HTTP server answering JSON from ``routes[(method, path)]`` (or ``fallback``), recording requests."""

    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    fallback: Route | None = None
    requests: list[Request] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def start(self) -> FakeService:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                request = Request(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                service.requests.append(request)
                route = service.routes.get((self.command, self.path.split("?")[0])) or service.fallback
                status, payload = route(request) if route else (404, {"detail": "Not Found"})
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = _handle
            do_POST = _handle

            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def free_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bearer(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    return value[len("Bearer ") :] if value.startswith("Bearer ") else None


# ------------------------------------------------------------------------------------------------
# Serve API
# ------------------------------------------------------------------------------------------------

MODEL_VERSION = "7"
METRICS = {
    "model": {"mae": 101.5, "rmse": 150.25, "mape": 0.21, "directional_accuracy": 0.55},
    "persistence": {"mae": 110.0, "rmse": 160.0, "mape": 0.23, "directional_accuracy": 0.5},
    "linear": {"mae": 108.0, "rmse": 158.0, "mape": 0.22, "directional_accuracy": 0.52},
    "skill": 0.077,
}


def horizon_metrics(
    *, hours: int, skill: float, coverage: float, interval_skill: float, interval_skill_vs_ewma: float
) -> dict[str, Any]:
    """One horizon's scores as the API's ``HorizonMetrics`` has them (the others plausible constants)."""
    interval = {"coverage": coverage, "width": 0.02, "winkler": 300.0, "pinball": 20.0}
    return {
        "hours": hours,
        "n": 720,
        "model": METRICS["model"],
        "persistence": METRICS["persistence"],
        "skill": skill,
        "dm_p_worse": 0.5,
        "dm_p_better": 0.5,
        "direction_p_value": 0.5,
        "interval_level": 0.9,
        "interval": interval,
        "naive": {**interval, "coverage": 0.9},
        "ewma": {**interval, "coverage": 0.9},
        "interval_skill": interval_skill,
        "interval_skill_vs_ewma": interval_skill_vs_ewma,
        "interval_dm_p_worse": 0.9,
        "interval_dm_p_better": 0.1,
    }


QUANTILE_METRICS = {
    **METRICS,
    "skill": -0.0004,  # a point forecast no better than persistence: the card shows "no skill"
    "interval_skill": 0.112,
    "coverage": 0.904,
    "horizons": [
        horizon_metrics(hours=h, skill=-0.0004, coverage=c, interval_skill=s, interval_skill_vs_ewma=e)
        for h, c, s, e in ((1, 0.904, 0.112, 0.035), (4, 0.911, 0.09, 0.05), (24, 0.93, 0.03, 0.07))
    ],
}


def horizons_for(candle_time: str, close: float) -> list[dict[str, Any]]:
    """The ``horizons`` of a forecast body: median = close, ranges widening with the horizon."""
    import pandas as pd

    start = pd.Timestamp(candle_time)
    return [
        {
            "hours": h,
            "target_time": (start + pd.Timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "median": close,
            "lower": close * (1 - 0.01 * h**0.5),
            "upper": close * (1 + 0.01 * h**0.5),
            "level": 0.9,
        }
        for h in (1, 4, 24)
    ]


def fake_serve(
    last_candles: dict[str, tuple[str, float]], *, forecast_factor: float = 1.01, quantiles: bool = False
) -> FakeService:
    """A Serve API for ``{pair: (last candle time ISO, last close)}``: forecast = last close × factor;
    with ``quantiles`` the answers carry ``horizons`` and the models interval metrics, as the real API's.

    Set ``service.status_override = (status, body)`` to make every route fail that way (e.g. 429).
    """
    service = FakeService()
    service.status_override = None  # type: ignore[attr-defined]

    def guarded(route: Route) -> Route:
        def handle(request: Request) -> tuple[int, Any]:
            if not bearer(request):
                return 401, {"detail": "missing bearer token"}
            override = service.status_override  # type: ignore[attr-defined]
            return override if override else route(request)

        return handle

    def pairs(_request: Request) -> tuple[int, Any]:
        return 200, sorted(last_candles)

    def models(_request: Request) -> tuple[int, Any]:
        return 200, {
            "models": [
                {
                    "pair": pair,
                    "loaded": True,
                    "version": MODEL_VERSION,
                    "alias": "champion",
                    "trained_window": {"start": "2025-01-01T00:00:00Z", "end": "2025-12-31T23:00:00Z"},
                    "metrics": QUANTILE_METRICS if quantiles else METRICS,
                }
                for pair in sorted(last_candles)
            ]
        }

    def forecast(request: Request) -> tuple[int, Any]:
        pair = request.path.rsplit("/", 1)[-1]
        if pair not in last_candles:
            return 404, {"detail": f"unknown pair {pair}"}
        candle_time, close = last_candles[pair]
        import pandas as pd

        target = (pd.Timestamp(candle_time) + pd.Timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return 200, {
            "pair": pair,
            "forecast": close * forecast_factor,
            "last_close": close,
            "change_pct": (forecast_factor - 1) * 100,
            "candle_time": candle_time,
            "target_time": target,
            "model_version": int(MODEL_VERSION),  # an int, as the API's (the dashboard stores it as text)
            "horizons": horizons_for(candle_time, close * forecast_factor) if quantiles else [],
        }

    service.routes[("GET", "/v1/pairs")] = guarded(pairs)
    service.routes[("GET", "/v1/models")] = guarded(models)
    service.fallback = guarded(
        lambda r: forecast(r) if r.path.startswith("/v1/forecast/") else (404, {"detail": "Not Found"})
    )
    return service


# ------------------------------------------------------------------------------------------------
# Airflow REST API
# ------------------------------------------------------------------------------------------------

AIRFLOW_JWT = "fake-jwt-for-tests"


def fake_airflow(*, username: str = "admin", password: str = "airflow-pw") -> FakeService:
    """Airflow 3's ``POST /auth/token`` and ``POST /api/v2/dags/mur_training/dagRuns``."""
    service = FakeService()

    def token(request: Request) -> tuple[int, Any]:
        body = request.body if isinstance(request.body, dict) else {}
        if body.get("username") != username or body.get("password") != password:
            return 401, {"detail": "Invalid credentials"}
        return 201, {"access_token": AIRFLOW_JWT}

    def trigger(request: Request) -> tuple[int, Any]:
        if bearer(request) != AIRFLOW_JWT:
            return 401, {"detail": "Not authenticated"}
        if not isinstance(request.body, dict) or "logical_date" not in request.body:
            return 422, {"detail": [{"msg": "Field required: logical_date"}]}
        run_id = f"manual__2026-01-01T00:00:00+00:00_{len(service.requests)}"
        return 200, {
            "dag_run_id": run_id,
            "dag_id": "mur_training",
            "state": "queued",
            "conf": request.body["conf"],
        }

    service.routes[("POST", "/auth/token")] = token
    service.routes[("POST", "/api/v2/dags/mur_training/dagRuns")] = trigger
    return service


# ------------------------------------------------------------------------------------------------
# Monitoring reports (mur.monitoring.report)
# ------------------------------------------------------------------------------------------------

MONITOR_THRESHOLDS = {
    "window_hours": 168,
    "min_resolved": 24,
    "skill_below": -0.05,
    "coverage_below": 0.8,
    "psi_above": 0.25,
    "ks_p_below": 0.01,
    "cooldown_hours": 24,
}


def monitoring_report(
    pair: str = "btc_usdt",
    as_of: str = "2024-11-05T10:00:00Z",
    *,
    status: str = "ok",
    skill: float | None = 0.042,
    coverage: float | None = 0.88,
    n_resolved: int = 120,
    drifted: tuple[str, ...] = (),
    alerts: tuple[str, ...] = (),
) -> Any:
    """A :class:`~mur.monitoring.report.MonitoringReport` as the monitoring task writes it: three inputs'
    drift (the ``drifted`` ones with a high PSI and a tiny KS p-value), MAEs matching ``skill``."""
    from mur.monitoring.report import DriftStat, MonitoringReport, Thresholds

    drift = [
        DriftStat(
            feature=name,
            psi=0.61 if name in drifted else 0.03,
            ks=0.31 if name in drifted else 0.05,
            ks_p=1e-6 if name in drifted else 0.42,
            reference_mean=0.01,
            recent_mean=0.03 if name in drifted else 0.011,
            n_reference=4000,
            n_recent=168,
            drifted=name in drifted,
        )
        for name in ("abs_log_return", "log_range", "log_volume")
    ]
    return MonitoringReport(
        pair=pair,
        as_of=as_of,
        champion_version=MODEL_VERSION,
        trained_window={"start": "2024-05-01T00:00:00Z", "end": "2024-10-31T23:00:00Z"},
        status=status,  # type: ignore[arg-type]
        n_resolved=n_resolved,
        n_pending=3,
        skill=skill,
        mae_model=None if skill is None else 100.0 * (1 - skill),
        mae_persistence=None if skill is None else 100.0,
        coverage=coverage,
        level=0.9 if coverage is not None else None,
        drift=drift,
        alerts=list(alerts),
        thresholds=Thresholds(**MONITOR_THRESHOLDS),
    )
