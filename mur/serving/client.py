"""The one client of the Serve HTTP API (pairs, forecasts, champions): the dashboard asks it with each user's
token, ``mur forecast`` with the CLI's. A service that is down raises :class:`ServiceUnavailable` with the URL
it tried, an error answer raises :class:`ServiceAnswerError` with its status and the API's own message (the
same errors as Airflow's client, :mod:`mur.orchestration.airflow_client`). Answers are read into the API's own
models (:mod:`mur.serving.contract`), unknown extra fields ignored. Nothing connects until a method is called.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from mur.errors import ServiceAnswerError, ServiceUnavailable, error_detail
from mur.serving.contract import ForecastOut, ModelOut, ModelsOut, ServedCalibration, misfit

DEFAULT_TIMEOUT_S = 5.0


def _calibration(value: Any) -> ServedCalibration | None:
    """The answer's ``calibration`` (None when absent or not well-formed)."""
    try:
        return ServedCalibration.model_validate(value) if isinstance(value, dict) else None
    except ValidationError:
        return None


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
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout_s, transport=transport, trust_env=False
        )

    def close(self) -> None:
        """Close the connection pool (the dashboard keeps one client for its life; ``mur forecast`` closes)."""
        self._http.close()

    def _get(self, path: str, token: str, **params: str) -> Any:
        try:
            response = self._http.get(path, params=params, headers={"Authorization": f"Bearer {token}"})
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

    def pairs(self, token: str) -> list[str]:
        """``GET /v1/pairs``: the pairs the API forecasts."""
        body = self._get("/v1/pairs", token)
        if not isinstance(body, dict) or not isinstance(body.get("pairs"), list):
            raise ServiceAnswerError("the pairs API answered with an unexpected shape")
        return [str(pair) for pair in body["pairs"]]

    def models(self, token: str) -> list[ModelOut]:
        """``GET /v1/models``: the model served for each pair and its test metrics, read into the API's own
        models (an answer that departs from them is an answer error)."""
        try:
            return ModelsOut.model_validate(self._get("/v1/models", token)).models
        except ValidationError as exc:
            raise ServiceAnswerError(
                f"the models API's answer does not fit its contract ({misfit(exc)})"
            ) from exc

    def forecast(self, pair: str, token: str, *, as_of: str | None = None) -> ForecastOut:
        """``GET /v1/forecast/{pair}`` (``as_of``: what was served at that market time, from the track record):
        the champion's forecast read into the API's own model (a malformed ``calibration`` is dropped; any other
        departure from the contract is an answer error)."""
        query = {} if as_of is None else {"as_of": as_of}
        body = self._get(f"/v1/forecast/{quote(pair, safe='')}", token, **query)
        if not isinstance(body, dict):
            raise ServiceAnswerError("the forecast API answered with an unexpected shape")
        if "calibration" in body:
            body["calibration"] = _calibration(body["calibration"])
        try:
            return ForecastOut.model_validate(body)
        except ValidationError as exc:
            raise ServiceAnswerError(
                f"the forecast API's answer for {pair} does not fit its contract ({misfit(exc)})"
            ) from exc
