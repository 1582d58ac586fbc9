"""HTTP clients the dashboard uses: the Serve API (forecasts, champions) and Airflow's REST API (training).

Both are tolerant: a service that is down raises :class:`ServiceUnavailable` with the URL it tried, an error
answer raises :class:`ServiceAnswerError` with the service's own message, and unknown extra fields in answers
are ignored. Nothing connects until a method is called.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from mur.errors import ServiceError

DEFAULT_TIMEOUT_S = 5.0
TRAINING_DAG_ID = "mur_training"


class ServiceUnavailable(ServiceError):
    """Nothing answered at the service's URL (refused, timed out, DNS)."""


class ServiceAnswerError(ServiceError):
    """The service answered with an error status or an unreadable body."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _error_detail(response: httpx.Response) -> str:
    """The service's own message from a JSON ``{"detail"|"error"|"message": ...}`` body, else the text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason_phrase
    if isinstance(body, dict):
        for key in ("detail", "error", "message"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value[:300]
            if isinstance(value, list) and value:  # FastAPI validation errors
                first = value[0]
                return str(first.get("msg", first) if isinstance(first, dict) else first)[:300]
    return str(body)[:200]


def _parse_time(value: Any) -> datetime | None:
    """An aware UTC datetime from ISO-8601 text (``Z`` allowed) or epoch milliseconds; None if unreadable."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _number(value: Any) -> float | None:
    """A finite float, or None."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# ================================================================================================
# Serve API
# ================================================================================================


@dataclass(frozen=True)
class ServeForecast:
    """One answer of ``GET /v1/forecast/{pair}``."""

    pair: str
    forecast: float
    target_time: datetime
    model_version: str
    last_close: float | None = None
    candle_time: datetime | None = None


@dataclass(frozen=True)
class ChampionModel:
    """One entry of ``GET /v1/models``: a pair's champion version and its test metrics."""

    pair: str
    version: str
    alias: str | None = None
    data_window: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def metric(self, model: str, name: str) -> float | None:
        """``metrics[model][name]`` as a float (e.g. ``metric("model", "mae")``), or None."""
        block = self.metrics.get(model)
        return _number(block.get(name)) if isinstance(block, dict) else None

    @property
    def skill(self) -> float | None:
        return _number(self.metrics.get("skill"))


class ServeClient:
    """Client of the Serve HTTP API at ``base_url``; every call carries the caller's bearer token."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._transport = transport

    def _get(self, path: str, token: str) -> Any:
        url = self.base_url + path
        try:
            with httpx.Client(timeout=self._timeout_s, transport=self._transport) as client:
                response = client.get(url, headers={"Authorization": f"Bearer {token}"})
        except httpx.TransportError as exc:
            raise ServiceUnavailable(f"the forecast API is unreachable at {self.base_url} ({exc})") from exc
        if response.status_code >= 400:
            raise ServiceAnswerError(
                f"the forecast API answered {response.status_code}: {_error_detail(response)}",
                status=response.status_code,
            )
        try:
            return response.json()
        except ValueError as exc:
            raise ServiceAnswerError("the forecast API answered with something that is not JSON") from exc

    def pairs(self, token: str) -> list[str]:
        """``GET /v1/pairs``: the pairs Serve has a model for (a list of names or of ``{"pair": …}``)."""
        body = self._get("/v1/pairs", token)
        items = body.get("pairs", []) if isinstance(body, dict) else body
        if not isinstance(items, list):
            return []
        names = [item.get("pair") if isinstance(item, dict) else item for item in items]
        return [str(name) for name in names if isinstance(name, str) and name]

    def models(self, token: str) -> list[ChampionModel]:
        """``GET /v1/models``: champion versions and their test metrics, one per pair."""
        body = self._get("/v1/models", token)
        items = body.get("models", []) if isinstance(body, dict) else body
        models: list[ChampionModel] = []
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict) or not item.get("pair"):
                continue
            models.append(
                ChampionModel(
                    pair=str(item["pair"]),
                    version=str(item.get("version", "?")),
                    alias=item.get("alias"),
                    data_window=item.get("data_window") if isinstance(item.get("data_window"), dict) else {},
                    metrics=item.get("metrics") if isinstance(item.get("metrics"), dict) else {},
                )
            )
        return models

    def forecast(self, pair: str, token: str) -> ServeForecast:
        """``GET /v1/forecast/{pair}``: the champion's next-hour close forecast."""
        body = self._get(f"/v1/forecast/{quote(pair, safe='')}", token)
        if not isinstance(body, dict):
            raise ServiceAnswerError("the forecast API answered with an unexpected shape")
        predicted = _number(body.get("forecast"))
        target_time = _parse_time(body.get("target_time"))
        if predicted is None or target_time is None:
            raise ServiceAnswerError("the forecast API's answer lacks a numeric forecast or a target_time")
        return ServeForecast(
            pair=str(body.get("pair") or pair),
            forecast=predicted,
            target_time=target_time,
            model_version=str(body.get("model_version") or body.get("version") or "unknown"),
            last_close=_number(body.get("last_close")),
            candle_time=_parse_time(body.get("candle_time")),
        )


# ================================================================================================
# Airflow REST API
# ================================================================================================


@dataclass(frozen=True)
class TriggeredRun:
    """A DAG run created through Airflow's REST API."""

    dag_id: str
    run_id: str
    state: str | None = None


class AirflowClient:
    """Triggers DAG runs through Airflow 3's REST API (``/auth/token`` JWT, then ``/api/v2``)."""

    def __init__(
        self,
        base_url: str,
        *,
        username: str,
        password: str | None,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._username = username
        self._password = password
        self._timeout_s = timeout_s
        self._transport = transport

    def _unreachable(self, exc: Exception) -> ServiceUnavailable:
        return ServiceUnavailable(f"Airflow is unreachable at {self.base_url} ({exc})")

    def _token(self, client: httpx.Client) -> str:
        """A JWT: POST credentials, or GET when no password is set (simple auth manager's all-admins mode)."""
        try:
            if self._password is None:
                response = client.get(self.base_url + "/auth/token")
            else:
                response = client.post(
                    self.base_url + "/auth/token",
                    json={"username": self._username, "password": self._password},
                )
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code in (401, 403):
            raise ServiceAnswerError(
                f"Airflow refused the credentials of {self._username!r} "
                "(set MUR_AIRFLOW_USER / MUR_AIRFLOW_PASSWORD)",
                status=response.status_code,
            )
        if response.status_code >= 400:
            raise ServiceAnswerError(
                f"Airflow's /auth/token answered {response.status_code}: {_error_detail(response)}",
                status=response.status_code,
            )
        try:
            token = response.json().get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise ServiceAnswerError("Airflow's /auth/token answer has no access_token")
        return token

    def trigger(
        self, dag_id: str = TRAINING_DAG_ID, *, conf: dict[str, Any] | None = None, note: str | None = None
    ) -> TriggeredRun:
        """Create a manual run of ``dag_id`` with ``conf`` (the DAG's params); returns its run id."""
        with httpx.Client(timeout=self._timeout_s, transport=self._transport) as client:
            token = self._token(client)
            url = f"{self.base_url}/api/v2/dags/{quote(dag_id, safe='')}/dagRuns"
            try:
                response = client.post(
                    url,
                    headers={"Authorization": f"Bearer {token}"},
                    json={"logical_date": None, "conf": conf or {}, "note": note},
                )
            except httpx.TransportError as exc:
                raise self._unreachable(exc) from exc
        if response.status_code == 404:
            raise ServiceAnswerError(f"Airflow has no DAG {dag_id!r} ({_error_detail(response)})", status=404)
        if response.status_code >= 400:
            raise ServiceAnswerError(
                f"Airflow refused to trigger {dag_id!r} ({response.status_code}: {_error_detail(response)})",
                status=response.status_code,
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise ServiceAnswerError("Airflow's answer to the trigger is not JSON") from exc
        run_id = (body.get("dag_run_id") or body.get("run_id")) if isinstance(body, dict) else None
        if not run_id:
            raise ServiceAnswerError("Airflow's answer to the trigger has no dag_run_id")
        return TriggeredRun(dag_id=dag_id, run_id=str(run_id), state=body.get("state"))
