"""The dashboard's client of the Serve API (forecasts, champions); Airflow's REST API (training) is called
through the core's client (:mod:`mur.orchestration.airflow_client`), whose errors this one raises too. Both are
tolerant: a service that is down raises :class:`ServiceUnavailable` with the URL it tried, an error answer
raises :class:`ServiceAnswerError` with the service's own message, and unknown extra fields in answers are
ignored. Nothing connects until a method is called.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from mur.errors import error_detail
from mur.orchestration.airflow_client import ServiceAnswerError, ServiceUnavailable
from mur.serving.contract import ForecastOut, ModelOut, ModelsOut, ServedCalibration, misfit

DEFAULT_TIMEOUT_S = 5.0


def _calibration(value: Any) -> ServedCalibration | None:
    """The answer's ``calibration`` (None when absent or not well-formed)."""
    try:
        return ServedCalibration.model_validate(value) if isinstance(value, dict) else None
    except ValidationError:
        return None


# --- Serve API ---------------------------------------------------------------------------------------


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
                f"the forecast API answered {response.status_code}: {error_detail(response)}",
                status=response.status_code,
            )
        try:
            return response.json()
        except ValueError as exc:
            raise ServiceAnswerError("the forecast API answered with something that is not JSON") from exc

    def models(self, token: str) -> list[ModelOut]:
        """``GET /v1/models``: the model served for each pair and its test metrics, read into the API's own
        models (an answer that departs from them is an answer error)."""
        try:
            return ModelsOut.model_validate(self._get("/v1/models", token)).models
        except ValidationError as exc:
            raise ServiceAnswerError(
                f"the models API's answer does not fit its contract ({misfit(exc)})"
            ) from exc

    def forecast(self, pair: str, token: str) -> ForecastOut:
        """``GET /v1/forecast/{pair}``: the champion's next-hour close forecast, read into the API's own model
        (a malformed ``calibration`` is dropped; any other departure from the contract is an answer error)."""
        body = self._get(f"/v1/forecast/{quote(pair, safe='')}", token)
        if not isinstance(body, dict):
            raise ServiceAnswerError("the forecast API answered with an unexpected shape")
        try:
            return ForecastOut.model_validate({**body, "calibration": _calibration(body.get("calibration"))})
        except ValidationError as exc:
            raise ServiceAnswerError(
                f"the forecast API's answer does not fit its contract ({misfit(exc)})"
            ) from exc
