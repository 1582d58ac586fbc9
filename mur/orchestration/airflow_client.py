"""The one client of Airflow 3's REST API (``/auth/token`` JWT, then ``/api/v2``).

Used by the CLI (``mur airflow trigger``), ``mur up`` and the dashboard's "Train now" button. Nothing
connects until a method is called; the token is fetched then and fetched again when Airflow refuses it.
A service that is down raises :class:`ServiceUnavailable` (with the URL tried), an error answer
:class:`ServiceAnswerError` (with the status and Airflow's own message).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from mur.errors import ServiceAnswerError, ServiceUnavailable, error_detail

if TYPE_CHECKING:
    from mur.settings import Settings

FINISHED_STATES = ("success", "failed")


@dataclass(frozen=True)
class TriggeredRun:
    """A DAG run created through the REST API."""

    dag_id: str
    run_id: str
    state: str | None = None


class AirflowClient:
    """Airflow 3's public REST API with a simple-auth-manager token (no password: the all-admins mode)."""

    def __init__(self, base_url: str, *, username: str, password: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self._username = username
        self._password = password
        self._http = httpx.Client(base_url=self.base_url, timeout=30.0, trust_env=False)
        self._token: str | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, *, password: str | None = None) -> AirflowClient:
        """A client for ``settings.airflow.airflow_url`` as ``settings.airflow.airflow_user`` (``password`` overrides)."""
        return cls(
            settings.airflow.airflow_url,
            username=settings.airflow.airflow_user,
            password=password if password is not None else settings.airflow.airflow_password,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AirflowClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- transport -------------------------------------------------------------------------------------
    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServiceUnavailable(f"Airflow is unreachable at {self.base_url} ({exc})") from exc

    def _login(self) -> str:
        """A JWT: POST the credentials, or GET when no password is set."""
        if self._password is None:
            response = self._send("GET", "/auth/token")
        else:
            credentials = {"username": self._username, "password": self._password}
            response = self._send("POST", "/auth/token", json=credentials)
        if response.status_code in (401, 403):
            raise ServiceAnswerError(
                f"Airflow refused the credentials of {self._username!r} "
                "(set MUR_AIRFLOW_USER / MUR_AIRFLOW_PASSWORD)",
                status=response.status_code,
            )
        if response.status_code >= 400:
            raise ServiceAnswerError(
                f"Airflow's /auth/token answered {response.status_code}: {error_detail(response)}",
                status=response.status_code,
            )
        try:
            token = response.json().get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise ServiceAnswerError("Airflow's /auth/token answer has no access_token")
        return token

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """``METHOD /api/v2{path}`` with the token (renewed once if refused); the JSON body or None."""
        extra = kwargs.pop("headers", {})
        for attempt in (1, 2):
            with self._lock:
                if self._token is None:
                    self._token = self._login()
                token = self._token
            headers = {**extra, "Authorization": f"Bearer {token}"}
            response = self._send(method, f"/api/v2{path}", headers=headers, **kwargs)
            if response.status_code == 401 and attempt == 1:  # expired: log in again, once
                with self._lock:
                    self._token = None
                continue
            if response.status_code >= 400:
                raise ServiceAnswerError(
                    f"Airflow API {method} {path}: {response.status_code}: {error_detail(response)}",
                    status=response.status_code,
                )
            try:
                return response.json() if response.content else None
            except ValueError as exc:
                raise ServiceAnswerError(f"Airflow API {method} {path}: the answer is not JSON") from exc
        raise AssertionError("unreachable")

    # --- DAGs and runs ---------------------------------------------------------------------------------
    def dag(self, dag_id: str) -> dict[str, Any]:
        return self.request("GET", f"/dags/{quote(dag_id, safe='')}")

    def import_errors(self) -> list[dict[str, Any]]:
        return self.request("GET", "/importErrors")["import_errors"]

    def set_paused(self, dag_id: str, paused: bool) -> dict[str, Any]:
        return self.request("PATCH", f"/dags/{quote(dag_id, safe='')}", json={"is_paused": paused})

    def trigger(
        self,
        dag_id: str,
        conf: dict[str, Any] | None = None,
        *,
        logical_date: str | None = None,
        note: str | None = None,
        data_interval: tuple[str, str] | None = None,
    ) -> TriggeredRun:
        """Create a manual run of ``dag_id`` with ``conf`` (the DAG's params); ``data_interval`` (start, end,
        ISO-8601, with a ``logical_date``) names the market hour the run stands for."""
        body: dict[str, Any] = {"logical_date": logical_date, "conf": conf or {}}
        if data_interval is not None:
            body["data_interval_start"], body["data_interval_end"] = data_interval
        if note is not None:
            body["note"] = note
        try:
            answer = self.request("POST", f"/dags/{quote(dag_id, safe='')}/dagRuns", json=body)
        except ServiceAnswerError as exc:
            if exc.status == 404:
                raise ServiceAnswerError(f"Airflow has no DAG {dag_id!r} ({exc})", status=404) from exc
            raise
        run_id = (answer.get("dag_run_id") or answer.get("run_id")) if isinstance(answer, dict) else None
        if not run_id:
            raise ServiceAnswerError("Airflow's answer to the trigger has no dag_run_id")
        return TriggeredRun(dag_id=dag_id, run_id=str(run_id), state=answer.get("state"))

    def _run_path(self, dag_id: str, run_id: str) -> str:
        return f"/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}"

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.request("GET", self._run_path(dag_id, run_id))

    def dag_runs(self, dag_id: str, *, states: Sequence[str] = (), limit: int = 100) -> list[dict[str, Any]]:
        params = {"limit": limit, "state": list(states)}  # no states: every run
        return self.request("GET", f"/dags/{quote(dag_id, safe='')}/dagRuns", params=params)["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self.request("GET", f"{self._run_path(dag_id, run_id)}/taskInstances")["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
        path = f"{self._run_path(dag_id, run_id)}/taskInstances/{task_id}/xcomEntries/return_value"
        return self.request("GET", path, params={"map_index": map_index, "deserialize": True})["value"]

    def task_log(
        self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1
    ) -> str:
        """The text of one try's log (the structured lines' events joined)."""
        path = f"{self._run_path(dag_id, run_id)}/taskInstances/{task_id}/logs/{try_number}"
        body = self.request(
            "GET", path, params={"map_index": map_index}, headers={"Accept": "application/json"}
        )
        content = body.get("content", [])
        return "\n".join(str(c.get("event", c)) if isinstance(c, dict) else str(c) for c in content)

    # --- backfills --------------------------------------------------------------------------------------
    def backfill_body(
        self,
        dag_id: str,
        from_date: str,
        to_date: str,
        *,
        conf: dict[str, Any] | None = None,
        max_active_runs: int = 1,
        reprocess: str = "none",
    ) -> dict[str, Any]:
        """The body of ``POST /backfills`` (dates ISO-8601: the first and last logical dates, inclusive)."""
        return {
            "dag_id": dag_id,
            "from_date": from_date,
            "to_date": to_date,
            "dag_run_conf": conf or {},
            "max_active_runs": max_active_runs,
            "reprocess_behavior": reprocess,
        }

    def backfill_dry_run(self, body: dict[str, Any]) -> list[str]:
        """The logical dates a backfill with ``body`` would create runs for."""
        answer = self.request("POST", "/backfills/dry_run", json=body)
        return [str(b.get("logical_date")) for b in answer.get("backfills", [])]

    def create_backfill(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a backfill (Airflow queues its runs); the backfill as Airflow describes it (``id`` …)."""
        return self.request("POST", "/backfills", json=body)

    def backfills(self, dag_id: str, *, limit: int = 20) -> list[dict[str, Any]]:
        """The DAG's backfills, newest first."""
        params = {"dag_id": dag_id, "limit": limit, "order_by": "-id"}
        return list(self.request("GET", "/backfills", params=params).get("backfills", []))

    def cancel_backfill(self, backfill_id: int) -> dict[str, Any]:
        """Cancel a backfill: its queued runs are failed, running ones finish; 404 / 409 (already completed)
        come back as :class:`ServiceAnswerError` with Airflow's message."""
        return self.request("PUT", f"/backfills/{int(backfill_id)}/cancel")

    def run_url(self, dag_id: str, run_id: str) -> str:
        """The UI page of a DAG run."""
        return f"{self.base_url}/dags/{dag_id}/runs/{quote(run_id, safe='')}"
