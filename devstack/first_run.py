"""``mur up``'s steps after the services: the admin account, the first training, the first forecasts."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx

from devstack.config import stack_secret
from mur.clock import market_clock
from mur.errors import ConflictError, JobError, ServiceAnswerError, ServiceError
from mur.orchestration import DAG_ID
from mur.orchestration.airflow_client import AirflowClient
from mur.settings import Settings
from mur.waiting import WaitTimeout, wait_until

Say = Callable[[str], None]
CHECK_TOKEN_NAME = "mur-up-check"
DEMO_TOKEN_NAME = "demo"


@dataclass
class AdminResult:
    """The admin account as found or created by :func:`ensure_admin`."""

    username: str
    created: bool
    password: str | None = None
    """Plaintext, only when it was generated now (printed once, never stored)."""
    token: str | None = None
    """Plaintext demo token, only when created now (printed once; only its hash is stored)."""
    password_from_env: bool = False
    password_updated: bool = False


# --- admin user ----------------------------------------------------------------------------------------
def ensure_admin(settings: Settings, username: str = "admin", password: str | None = None) -> AdminResult:
    """Create the admin (roles admin + member) with ``password`` or a generated one, and a demo token.

    An existing user is kept as it is (made admin if it was not); with ``password`` (``MUR_ADMIN_PASSWORD``)
    its password is set to it when it differs. Nothing is stored in plaintext.
    """
    from mur.db import (
        Database,
        add_role,
        authenticate,
        create_token,
        create_user,
        get_user_by_username,
        set_password,
    )
    from mur.security import generate_password

    with Database(settings, maxconn=2) as db:
        user = get_user_by_username(db, username=username)
        if user is None:
            secret = password or generate_password()
            try:
                user = create_user(db, username=username, password=secret, roles=("admin", "member"))
            except ConflictError:  # created concurrently: treat as existing
                user = get_user_by_username(db, username=username)
            else:
                token, _ = create_token(db, user_id=user.id, name=DEMO_TOKEN_NAME)
                return AdminResult(
                    username,
                    created=True,
                    password=None if password else secret,
                    token=token,
                    password_from_env=password is not None,
                )
        assert user is not None
        if not user.is_admin:
            add_role(db, user_id=user.id, role="admin")
        updated = False
        if password and authenticate(db, username=username, password=password) is None:
            set_password(db, user_id=user.id, password=password)
            updated = True
        return AdminResult(
            username, created=False, password_from_env=password is not None, password_updated=updated
        )


def check_token(settings: Settings, username: str) -> str:
    """An API token of ``username`` for ``mur up``'s own checks, derived from the stack secret (no new row
    at each start; only its hash is stored)."""
    from mur.db import Database, ensure_managed_token, require_user
    from mur.security import derive_api_token

    secret = stack_secret(settings)
    with Database(settings, maxconn=1) as db:
        user = require_user(db, username=username)
        token, _ = ensure_managed_token(
            db,
            user_id=user.id,
            name=CHECK_TOKEN_NAME,
            derive=lambda generation: derive_api_token(secret, f"mur-up/check/v1/{user.id}/{generation}"),
        )
    return token


# --- HTTP helpers --------------------------------------------------------------------------------------
def wait_for_dag(client: AirflowClient, dag_id: str, timeout_s: float, say: Say) -> None:
    """Wait until Airflow's DAG processor has parsed ``dag_id``; an import error of its file fails at once."""

    def parsed() -> bool:
        try:
            client.dag(dag_id)
            return True
        except ServiceAnswerError as exc:
            if exc.status != 404:
                raise
        mine = [e for e in client.import_errors() if dag_id in str(e.get("filename", ""))]
        if mine:
            raise ServiceError(
                f"Airflow cannot import the DAG file: {str(mine[0].get('stack_trace'))[-800:]}"
            )
        return False

    if not parsed():
        say(f"waiting for Airflow to parse the {dag_id} DAG …")
        wait_until(
            parsed,
            what=f"Airflow to parse the {dag_id} DAG (see the airflow-dag-processor log)",
            timeout_s=timeout_s,
            interval_s=3,
            error=ServiceError,
        )


def trigger_first(settings: Settings, client: AirflowClient, conf: dict[str, Any], attempts: int = 5) -> str:
    """Create a manual run of the training DAG that Airflow schedules before the hourly one; its run id.

    Unpausing the DAG also creates the run for the last hour, and Airflow queues task instances of equal
    priority by logical date: the manual run gets a logical date just before that hour's, so the first
    (quick) models come first. Both stand for the last closed market hour (:mod:`mur.clock`): the triggered
    run's data interval is given explicitly, in market time.
    """
    hour = market_clock(settings).hour()
    interval = ((hour - timedelta(hours=1)).isoformat(), hour.isoformat())
    for attempt in range(1, attempts + 1):
        logical = hour - timedelta(hours=1, minutes=attempt)
        try:
            return client.trigger(
                DAG_ID,
                conf,
                logical_date=logical.isoformat(),
                note="mur up: first models",
                data_interval=interval,
            ).run_id
        except ServiceAnswerError as exc:
            if exc.status != 409 or attempt == attempts:  # 409: a run with this logical date exists
                raise ServiceError(f"Airflow refused to trigger {DAG_ID}: {exc}") from exc
    raise AssertionError("unreachable")


def first_scheduled_run(client: AirflowClient, timeout_s: float) -> str | None:
    """The id of the training DAG's first queued or running scheduled run (None if none within ``timeout_s``)."""

    def first() -> str | None:
        runs = client.dag_runs(DAG_ID, states=["queued", "running"], limit=20)
        scheduled = [r for r in runs if str(r.get("run_type", "")).lower() == "scheduled"]
        if not scheduled:
            return None
        return str(min(scheduled, key=lambda r: str(r.get("data_interval_end")))["dag_run_id"])

    with contextlib.suppress(WaitTimeout):
        return wait_until(first, what="a scheduled training run", timeout_s=timeout_s, interval_s=2)
    return None


def follow_runs(
    client: AirflowClient, run_id: str, seen: dict[str, str], say: Say
) -> tuple[str, dict[str, str], list[str]]:
    """Print task state changes of ``run_id`` and the DAG's other active runs; its state, tasks, their ids.

    Unpausing the DAG starts its scheduled run too, which often trains the same models first (the
    triggered run then reuses them), so its progress is shown as well.
    """
    active = [r["dag_run_id"] for r in client.dag_runs(DAG_ID, states=["queued", "running"], limit=20)]
    runs = {rid: run_state(client, DAG_ID, rid) for rid in dict.fromkeys([run_id, *active])}  # run_id first
    for rid, (_state, tasks) in runs.items():
        who = "triggered run" if rid == run_id else f"{rid.split('__')[0]} run"
        for label, task_state in tasks.items():
            key = f"{rid} {label}"
            if seen.get(key) != task_state:
                seen[key] = task_state
                say(f"  {who}: {label} {task_state}")
    return (*runs[run_id], [rid for rid in runs if rid != run_id])


def run_state(client: AirflowClient, dag_id: str, run_id: str) -> tuple[str, dict[str, str]]:
    """``(run state, {task label: state})`` of one run (mapped tasks labelled ``train_pair[btc_usdt]``)."""
    state = client.dag_run(dag_id, run_id).get("state") or "queued"
    tasks = {}
    for ti in client.task_instances(dag_id, run_id):
        label = ti["task_id"]
        if ti.get("map_index", -1) not in (-1, None):
            label += f"[{ti.get('rendered_map_index') or ti['map_index']}]"
        tasks[label] = ti.get("state") or "scheduled"
    return state, tasks


# --- training and the first forecasts ---------------------------------------------------------------------
def pairs_without_champion(settings: Settings, pairs: Iterable[str]) -> list[str]:
    """Which of ``pairs`` have no champion in the registry yet."""
    from mur.serving.champions import champions, registry_client

    wanted = list(pairs)
    found = champions(
        registry_client(settings),
        prefix=settings.registry.registry_prefix,
        experiment=settings.registry.mlflow_experiment,
        pairs=wanted,
    )
    return [p for p in wanted if p not in found]


def validate_pairs(settings: Settings, pairs: Sequence[str]) -> list[str]:
    """Lower-cased pairs; with bundled market data, each must be bundled (a clear error otherwise)."""
    from mur.orchestration.tasks import resolve_pairs

    result = resolve_pairs(settings, requested=list(pairs))
    if settings.data.market_data == "bundled":
        from mur.data import get_market_data

        source = get_market_data(settings)
        for pair in result:
            source.data_range(pair)  # UnknownPairError names the bundled pairs
    return result


def train_directly(settings: Settings, pairs: Sequence[str], conf: dict[str, Any], say: Say) -> None:
    """Without Airflow: the pairs in batch Ray jobs, one after the other (window end: market now); a pair
    that failed is reported after the others are done."""
    from mur.orchestration.batches import plan_batches, train_batch

    failed: dict[str, str] = {}
    for batch in plan_batches(list(pairs), 1, settings.airflow.train_batch_size):
        say(f"training {', '.join(batch)} in one Ray job (no Airflow) …")
        outcomes = train_batch(
            settings,
            batch,
            end=market_clock(settings).hour(),
            options=conf,
            emit=lambda line: say("  " + line) if line.startswith("[mur]") else None,
        )
        for pair, outcome in outcomes.items():
            if "error" in outcome:
                failed[pair] = str(outcome["error"])
                continue
            result = outcome["result"]
            say(
                f"{pair}: version {result.get('version')} → {result.get('alias')} ({result.get('reason') or ''})"
            )
    if failed:
        raise JobError("training failed for " + "; ".join(f"{p}: {e}" for p, e in failed.items()))


def wait_for_forecasts(
    settings: Settings,
    pairs: Sequence[str],
    token: str,
    *,
    timeout_s: float,
    say: Say,
    airflow: AirflowClient | None = None,
    run_id: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Poll until Serve answers ``GET /v1/forecast/{pair}`` for every pair; follow the DAG run meanwhile.

    Prints task state changes of the run (and the DAG's other runs) and each pair as it starts being served.
    Fails early when the run failed, or when it succeeded but a pair still has no champion (the promotion
    gate refused it), the market runs at real speed and no other run of the DAG is in flight (the hour's
    scheduled run, which trains with the settings, may still give it one); faster, the next market hour's
    scheduled run comes within seconds and is waited for. Then loads the backtest track record of a champion
    that has none (:func:`mur.monitoring.backtest_load.ensure_backtests`).
    """
    base = settings.serving.url.replace("0.0.0.0", "127.0.0.1")
    served: dict[str, dict[str, Any]] = {}
    seen_tasks: dict[str, str] = {}
    run_done = run_id is None
    waiting_for: list[str] | None = None
    last_note = time.monotonic()

    def timed_out(_: str) -> ServiceError:
        missing = [p for p in pairs if p not in served]
        return ServiceError(
            f"Serve did not answer forecasts for {', '.join(missing)} within {timeout_s:.0f} s; "
            f"see `mur status`, {base}/readyz and the Ray dashboard {settings.ray.ray_address}"
        )

    with httpx.Client(timeout=15.0, trust_env=False, headers={"Authorization": f"Bearer {token}"}) as client:

        def poll() -> dict[str, dict[str, Any]] | None:
            """One round: the run's progress, each pair not yet served; every pair's forecast once all are."""
            nonlocal run_done, waiting_for, last_note
            others: list[str] = []
            if airflow is not None and run_id is not None:
                try:
                    state, tasks, others = follow_runs(airflow, run_id, seen_tasks, say)
                except (ServiceError, OSError) as exc:  # a slow api-server: report, keep waiting
                    say(f"  (Airflow did not answer: {exc})")
                    state, tasks, others = "running", {}, [run_id]
                if state == "failed":
                    failed = [t for t, s in tasks.items() if s in ("failed", "upstream_failed")]
                    raise ServiceError(
                        f"the training run {run_id} failed ({', '.join(failed) or 'see Airflow'}); "
                        f"task logs: Airflow UI {settings.airflow.airflow_url}/dags/{DAG_ID}"
                    )
                if state == "success" and not run_done:
                    run_done = True
                    say("  training run finished")
            for pair in [p for p in pairs if p not in served]:
                with contextlib.suppress(Exception):  # Serve not answering yet: try again
                    response = client.get(f"{base}/v1/forecast/{pair}")
                    if response.status_code == 200:
                        served[pair] = f = response.json()
                        say(
                            f"{pair}: served by model v{f.get('model_version')}: next close {f.get('forecast'):,.4f} "
                            f"(last {f.get('last_close'):,.4f}, {f.get('change_pct'):+.3f} %) for {f.get('target_time')}"
                        )
            todo = [p for p in pairs if p not in served]
            if not todo:
                return served
            missing = pairs_without_champion(settings, todo) if run_done else None
            if missing and not others and market_clock(settings).speed <= 1:
                raise ServiceError(
                    f"training finished but {', '.join(missing)} has no champion (the promotion gate refused "
                    f"the model: see MLflow {settings.registry.mlflow_tracking_uri}); the hourly training tries "
                    "again, or now on a longer window: `mur up --retrain --train-days 365`"
                )
            if missing is not None and missing != waiting_for:  # a champion came, or none yet: re-read
                with contextlib.suppress(Exception):
                    client.post(f"{base}/v1/admin/reload", params={"wait_s": 0})
                why = "the training run(s) in flight" if others else "the next market hours' scheduled runs"
                if missing:  # a run in flight, or one every 3600/speed s, may still train them
                    say(f"  {', '.join(missing)}: no champion yet (refused by the gate); waiting for {why}")
                waiting_for = missing
            if time.monotonic() - last_note > 60:
                last_note = time.monotonic()
                say(f"  … waiting for forecasts of {', '.join(todo)}")
            return None

        answers = wait_until(
            poll, what="every pair's forecast", timeout_s=timeout_s, interval_s=2, error=timed_out
        )
    from mur.monitoring.backtest_load import ensure_backtests

    ensure_backtests(settings, pairs, say)  # champions promoted before backtests were recorded
    return answers
