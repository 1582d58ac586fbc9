"""``mur up``: the whole local stack in one command, idempotently; ``mur down`` stops exactly what it started.

Steps of :func:`bring_up` (each prints its progress):

1. settings: URLs follow the ports (``MUR_MLFLOW_PORT=5100`` moves ``MUR_MLFLOW_TRACKING_URI`` along) and are
   exported, with ``MUR_RUNTIME_DIR``, to every process started from here;
2. PostgreSQL: the app, MLflow and Airflow databases exist; ``sql/`` migrations are applied;
3. services (:mod:`mur.services`): ray alone first, then each service once its dependencies are healthy, up
   to 3 side by side (s3 → mlflow; airflow-api-server → scheduler, dag-processor, triggerer; ray + mlflow →
   serve → dash); each is health-checked with a timeout, a failure names the service and quotes its log;
4. the admin user (dashboard + API): created once with a generated password printed once (only its hash is
   stored), plus a demo API token printed once; an existing admin is left alone;
5. training: the ``mur_training`` DAG is triggered through Airflow's REST API for the pairs that have no
   champion yet (quick settings unless configured, queued ahead of the scheduled run), then unpaused;
   without Airflow, the Ray jobs are submitted directly;
6. waiting until Serve answers ``GET /v1/forecast/{pair}`` for every pair, then the URLs and logins.

Also here: the supervisor's service factories for the Serve application and the dashboard
(``SERVICE_PROVIDERS`` entries ``mur.stack:serve_services`` and ``mur.stack:dash_services``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mur.errors import ConfigError, MurError, ServiceError
from mur.settings import PROJECT_ROOT, Settings

if TYPE_CHECKING:
    from mur.airflow_local import AirflowClient
    from mur.services import Service, StartResult, StopResult

Say = Callable[[str], None]

DAG_ID = "mur_training"
STACK_MARKER = "MUR_STACK"
"""Environment variable (= the runtime dir) that every process of a stack inherits: how leftovers are found."""
SECRETS_FILE = "stack-secrets.json"
CHECK_TOKEN_NAME = "mur-up-check"
DEMO_TOKEN_NAME = "demo"
URL_FIELDS = {
    "mlflow_tracking_uri": "mlflow_port",
    "s3_endpoint_url": "s3_port",
    "ray_address": "ray_dashboard_port",
    "airflow_url": "airflow_port",
}
"""URL setting → the port setting it must agree with (both default to the same local port)."""


# --- options and results ---------------------------------------------------------------------------
@dataclass(frozen=True)
class UpOptions:
    """What ``mur up`` was asked for (CLI options)."""

    pairs: list[str] | None = None
    """Pairs to train and wait for (default: ``settings.pairs``)."""
    epochs: int | None = None
    train_days: int | None = None
    hidden_size: int | None = None
    num_workers: int | None = None
    train: bool = True
    """Trigger training for pairs without a champion and wait until Serve forecasts every pair."""
    retrain: bool = False
    """Trigger a training run even when every pair already has a champion."""
    timeout_s: float = 1800.0
    """How long to wait for the forecasts (training included)."""
    parallel: int = 3
    """Services started at the same time (when their dependencies allow)."""
    admin_user: str = "admin"
    admin_password: str | None = None

    def training_conf(self, settings: Settings | None = None) -> dict[str, Any]:
        """The first training's options (the DAG run's ``conf`` besides the pairs).

        Options given on the command line win; for the others, :data:`QUICK_TRAINING` applies while the
        setting has its default value (``MUR_EPOCHS`` …), so that a first ``mur up`` is quick and a configured
        stack trains the model its schedule would (which the scheduled runs then reuse).
        """
        given = {
            "epochs": self.epochs,
            "train_days": self.train_days,
            "hidden_size": self.hidden_size,
            "num_workers": self.num_workers,
        }
        configured = (  # a value other than the default (a copied .env.example repeats the defaults)
            {k for k in QUICK_TRAINING if getattr(settings, k) != type(settings).model_fields[k].default}
            if settings is not None
            else set(QUICK_TRAINING)
        )
        conf = {k: v for k, v in QUICK_TRAINING.items() if k not in configured}
        conf.update({k: v for k, v in given.items() if v is not None})
        return conf


QUICK_TRAINING: dict[str, int] = {"epochs": 3, "train_days": 60, "num_workers": 1}
"""The first training of ``mur up`` for settings left at their defaults (30 epochs on 365 days with 2 Ray
workers per pair would keep a first start busy for half an hour on 2 cores); the hourly schedule trains with
the settings and replaces a champion only with a better model."""


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


@dataclass
class UpReport:
    """What :func:`bring_up` did: service results, the admin, forecasts served, timings."""

    settings: Settings
    started: list[StartResult] = field(default_factory=list)
    admin: AdminResult | None = None
    training: str = ""
    forecasts: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0


# --- settings ----------------------------------------------------------------------------------------
def align_settings(settings: Settings, *, export: bool = True) -> Settings:
    """URLs that were not set explicitly follow their port; a local URL contradicting its port is an error.

    With ``export`` the derived URLs and the absolute runtime dir go into ``os.environ``, so every service,
    Airflow task, Ray job and Serve replica started from this process sees the same settings.
    """
    from urllib.parse import urlsplit

    update: dict[str, Any] = {}
    for url_field, port_field in URL_FIELDS.items():
        port = getattr(settings, port_field)
        url = getattr(settings, url_field)
        if url_field not in settings.model_fields_set:
            wanted = f"http://127.0.0.1:{port}"
            if url != wanted:
                update[url_field] = wanted
            continue
        parts = urlsplit(url)
        if parts.hostname in ("127.0.0.1", "localhost") and parts.port not in (None, port):
            raise ConfigError(
                f"MUR_{url_field.upper()}={url} does not match MUR_{port_field.upper()}={port}: "
                f"set one of them only (the URL follows the port)"
            )
    runtime_dir = Path(settings.runtime_dir).resolve()
    update["runtime_dir"] = runtime_dir
    aligned = settings.model_copy(update=update)
    if export:
        for name, value in update.items():
            os.environ[f"MUR_{name.upper()}"] = str(value)
        os.environ[STACK_MARKER] = str(runtime_dir)  # inherited by everything started from here
        from mur.settings import get_settings

        get_settings.cache_clear()
    return aligned


def stack_secret(settings: Settings) -> str:
    """``MUR_SECRET_KEY``, else a key generated once into ``{runtime_dir}/stack-secrets.json`` (mode 600).

    The dashboard signs sessions and derives its per-user API tokens with it: a key that changed at every
    start would log everybody out and revoke those tokens.
    """
    if settings.secret_key:
        return settings.secret_key
    path = Path(settings.runtime_dir) / SECRETS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError, ValueError):
        key = json.loads(path.read_text()).get("secret_key")
        if isinstance(key, str) and len(key) >= 32:
            return key
    key = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"secret_key": key}, fh)
    return key


def airflow_login(settings: Settings) -> tuple[str, str] | None:
    """The Airflow UI user and password (``MUR_AIRFLOW_PASSWORD`` or the one generated once), None without
    the local Airflow module."""
    try:
        from mur.airflow_local import admin_password
    except ImportError:
        return None
    return settings.airflow_user, admin_password(settings)


# --- service factories (registered in mur.services.SERVICE_PROVIDERS) --------------------------------
def serve_services(settings: Settings) -> list[Service]:
    """The Serve application, kept deployed on the local Ray head by ``infra/docker/serve_keeper.py``.

    Serve itself runs inside Ray (controller, HTTP proxy and replicas are Ray actors of the head); the keeper
    deploys the app declaratively through the dashboard, as ``mur serve`` does, and redeploys it when the
    head lost it. Healthy = the keeper runs and the API answers ``/healthz``. Stopping ends the keeper,
    then removes the app (else a later start would find the API answering and take it for someone else's).
    """
    from mur.services import Service

    port = settings.serve_port
    return [
        Service(
            name="serve",
            argv=[sys.executable, "infra/docker/serve_keeper.py"],
            port=port,
            health_url=f"http://127.0.0.1:{port}/healthz",
            start_timeout_s=600,
            stop_timeout_s=20,
            depends_on=("ray", "mlflow"),
            cwd=PROJECT_ROOT,
            after_stop=functools.partial(undeploy_serve, settings),
            description="Ray Serve API (deployed on the Ray head, kept deployed)",
        )
    ]


def undeploy_serve(settings: Settings, timeout_s: float = 30.0) -> None:
    """Remove the Serve application from the Ray head (a no-op when Ray is not reachable)."""
    from mur.services import Service, probe

    dashboard = Service(name="ray", argv=[], health_url=f"{settings.ray_address.rstrip('/')}/api/version")
    if not probe(dashboard, 1.0):
        return
    from serve_app.deploy import undeploy

    worker = threading.Thread(target=undeploy, args=(settings,), daemon=True)
    worker.start()
    worker.join(timeout_s)


def dash_services(settings: Settings) -> list[Service]:
    """The Dash dashboard (``python -m dash_app``), with a persistent secret key and Airflow's login."""
    from mur.services import Service

    env: dict[str, str] = {}
    if not settings.secret_key and settings.env != "production":
        env["MUR_SECRET_KEY"] = stack_secret(settings)
    if settings.airflow_password is None and (login := airflow_login(settings)) is not None:
        env["MUR_AIRFLOW_PASSWORD"] = login[1]  # the "Train now" button triggers the DAG with it
    port = settings.dash_port
    return [
        Service(
            name="dash",
            argv=[sys.executable, "-m", "dash_app", "--host", settings.dash_host, "--port", str(port)],
            env=env,
            port=port,
            health_url=f"http://127.0.0.1:{port}/login",
            start_timeout_s=180,
            stop_timeout_s=10,
            depends_on=("serve", "airflow-api-server"),
            cwd=PROJECT_ROOT,
            before_start=functools.partial(_migrate, settings),
            description="Dash dashboard (Flask-Login)",
        )
    ]


def _migrate(settings: Settings) -> None:
    from mur.db import migrate

    migrate(settings)


# --- starting services -----------------------------------------------------------------------------------
EXCLUSIVE = frozenset({"ray"})
"""Started alone: Ray's raylet gives its Python agents a hard-coded 15 s to come up (ray-project/ray#65983),
which a busy 2-core machine can miss; with nothing else starting, the head comes up in ~15 s."""
RETRIES = {"ray": 1}
"""Extra attempts after a failed start (the same reason: a raylet that lost that race is retried once)."""


def start_all(
    settings: Settings,
    *,
    names: Sequence[str] | None = None,
    parallel: int = 3,
    say: Say,
    registry_factory: Callable[[Settings], dict[str, Service]] | None = None,
) -> list[StartResult]:
    """Start ``names`` (default: every registered service) as soon as their dependencies are healthy.

    Up to ``parallel`` start side by side, except :data:`EXCLUSIVE` ones, which start alone (first when
    ready). While services start, a line every 20 s says which are still awaited. The first failure ends the
    start once the others under way finished; healthy services stay up (``mur up`` again resumes).
    """
    from concurrent.futures import FIRST_COMPLETED, Future, wait

    from mur import services

    build = registry_factory or services.default_services
    registry = build(settings)
    order = services.plan(registry, names)
    deps = {n: [d for d in registry[n].depends_on if d in order] for n in order}
    retries = dict(RETRIES)
    done: dict[str, StartResult] = {}
    running: dict[Future[StartResult], str] = {}
    began: dict[str, float] = {}
    errors: list[BaseException] = []
    stop_ticker = threading.Event()

    def tick() -> None:
        while not stop_ticker.wait(20.0):
            waiting = ", ".join(f"{n} ({time.monotonic() - began[n]:.0f} s)" for n in list(running.values()))
            if waiting:
                say(f"  … waiting for {waiting}")

    def start(service: Service) -> StartResult:
        result = services.start_service(settings, service, progress=say)
        say(services._describe_start(result, service))
        return result

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="mur-up") as pool:
            while len(done) < len(order):
                if not errors:
                    ready = [
                        n
                        for n in order
                        if n not in done and n not in running.values() and all(d in done for d in deps[n])
                    ]
                    ready.sort(key=lambda n: n not in EXCLUSIVE)  # exclusive ones first, else plan order
                    for name in ready:
                        busy = set(running.values())
                        if len(busy) >= max(1, parallel) or busy & EXCLUSIVE:
                            break
                        if name in EXCLUSIVE and busy:
                            continue
                        registry = build(settings)  # factories may read what earlier starts created
                        began[name] = time.monotonic()
                        running[pool.submit(start, registry[name])] = name
                        if name in EXCLUSIVE:
                            break
                if not running:
                    break
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in finished:
                    name = running.pop(future)
                    try:
                        done[name] = future.result()
                    except MurError as exc:
                        if retries.get(name, 0) > 0 and not errors:
                            retries[name] -= 1
                            say(f"{name} did not start ({str(exc).splitlines()[0]}): trying once more")
                            continue
                        errors.append(exc)
                    except BaseException as exc:  # noqa: BLE001 (re-raised below)
                        errors.append(exc)
    finally:
        stop_ticker.set()
    if errors:
        for other in errors[1:]:
            say(f"also failed: {other}")
        raise errors[0]
    return [done[n] for n in order if n in done]


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
    from mur.errors import ConflictError
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
def _http() -> Any:
    import httpx

    return httpx.Client(timeout=15.0, trust_env=False)


def wait_for_dag(client: AirflowClient, dag_id: str, timeout_s: float, say: Say) -> None:
    """Wait until Airflow's DAG processor has parsed ``dag_id``; an import error of its file fails at once."""
    deadline = time.monotonic() + timeout_s
    announced = False
    while True:
        if client.http.get(f"/api/v2/dags/{dag_id}").status_code == 200:
            return
        mine = [e for e in client.import_errors() if dag_id in str(e.get("filename", ""))]
        if mine:
            raise ServiceError(
                f"Airflow cannot import the DAG file: {str(mine[0].get('stack_trace'))[-800:]}"
            )
        if not announced:
            say(f"waiting for Airflow to parse the {dag_id} DAG …")
            announced = True
        if time.monotonic() > deadline:
            raise ServiceError(
                f"Airflow has not parsed the {dag_id} DAG after {timeout_s:.0f} s; "
                "see the airflow-dag-processor log"
            )
        time.sleep(3)


def trigger_first(client: AirflowClient, conf: dict[str, Any], attempts: int = 5) -> str:
    """Create a manual run of the training DAG that Airflow schedules before the hourly one; its run id.

    Unpausing the DAG also creates the run for the last hour, and Airflow queues task instances of equal
    priority by logical date: the manual run gets a logical date just before that hour's, so the first
    (quick) models come first. Its window ends an hour earlier with live data; with the bundled candles
    both end where the candles end.
    """
    from datetime import timedelta

    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    for attempt in range(1, attempts + 1):
        logical = hour - timedelta(hours=1, minutes=attempt)
        response = client.http.post(
            f"/api/v2/dags/{DAG_ID}/dagRuns",
            json={"logical_date": logical.isoformat(), "conf": conf, "note": "mur up: first models"},
        )
        if response.status_code == 409 and attempt < attempts:  # a run with this logical date exists
            continue
        if response.status_code >= 400:
            raise ServiceError(
                f"Airflow refused to trigger {DAG_ID}: {response.status_code} {response.text[:300]}"
            )
        return response.json()["dag_run_id"]
    raise AssertionError("unreachable")


def follow_runs(
    client: AirflowClient, run_id: str, seen: dict[str, str], say: Say
) -> tuple[str, dict[str, str]]:
    """Print task state changes of ``run_id`` and of the DAG's other active runs; return ``run_id``'s state.

    Unpausing the DAG starts its scheduled run too, which often trains the same models first (the
    triggered run then reuses them), so its progress is shown as well.
    """
    response = client.http.get(
        f"/api/v2/dags/{DAG_ID}/dagRuns", params={"state": ["queued", "running"], "limit": 20}
    )
    others = [r["dag_run_id"] for r in (response.json().get("dag_runs") or []) if r["dag_run_id"] != run_id]
    result: tuple[str, dict[str, str]] = ("queued", {})
    for rid in [run_id, *others]:
        state, tasks = run_state(client, DAG_ID, rid)
        who = "triggered run" if rid == run_id else f"{rid.split('__')[0]} run"
        for label, task_state in tasks.items():
            key = f"{rid} {label}"
            if seen.get(key) != task_state:
                seen[key] = task_state
                say(f"  {who}: {label} {task_state}")
        if rid == run_id:
            result = (state, tasks)
    return result


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
    from mur.serving import champions, registry_client

    wanted = list(pairs)
    found = champions(registry_client(settings), prefix=settings.registry_prefix, pairs=wanted)
    return [p for p in wanted if p not in found]


def validate_pairs(settings: Settings, pairs: Sequence[str]) -> list[str]:
    """Lower-cased pairs; with bundled market data, each must be bundled (a clear error otherwise)."""
    from mur.orchestration import resolve_pairs

    result = resolve_pairs(settings, requested=list(pairs))
    if settings.market_data == "bundled":
        from mur.market_data import get_market_data

        source = get_market_data(settings)
        for pair in result:
            source.data_range(pair)  # UnknownPairError names the bundled pairs
    return result


def train_directly(settings: Settings, pairs: Sequence[str], options: UpOptions, say: Say) -> None:
    """Without Airflow: submit one Ray training job per pair, one after the other (window end: now)."""
    from mur.orchestration import train_pair

    for pair in pairs:
        say(f"training {pair} as a Ray job (no Airflow) …")
        result = train_pair(
            settings,
            pair,
            end=datetime.now(UTC),
            options=options.training_conf(settings),
            emit=lambda line: say("  " + line) if line.startswith("[mur]") else None,
        )
        say(f"{pair}: version {result.get('version')} → {result.get('alias')} ({result.get('reason') or ''})")


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

    Prints task state changes of the run and each pair as it starts being served. Fails early when the run
    failed, or when it succeeded but a pair still has no champion (the promotion gate refused it).
    """
    base = settings.serve_url.replace("0.0.0.0", "127.0.0.1")
    deadline = time.monotonic() + timeout_s
    served: dict[str, dict[str, Any]] = {}
    seen_tasks: dict[str, str] = {}
    run_done = run_id is None
    nudged = False
    last_note = time.monotonic()
    with _http() as client:
        while True:
            if not run_done and airflow is not None and run_id is not None:
                try:
                    state, tasks = follow_runs(airflow, run_id, seen_tasks, say)
                except (ServiceError, OSError) as exc:  # a slow api-server: report, keep waiting
                    say(f"  (Airflow did not answer: {exc})")
                    state, tasks = "running", {}
                if state == "failed":
                    failed = [t for t, s in tasks.items() if s in ("failed", "upstream_failed")]
                    raise ServiceError(
                        f"the training run {run_id} failed ({', '.join(failed) or 'see Airflow'}); "
                        f"task logs: Airflow UI {settings.airflow_url}/dags/{DAG_ID}"
                    )
                if state == "success":
                    run_done = True
                    say("  training run finished")
            for pair in pairs:
                if pair in served:
                    continue
                with contextlib.suppress(Exception):  # Serve not answering yet: try again
                    response = client.get(
                        f"{base}/v1/forecast/{pair}", headers={"Authorization": f"Bearer {token}"}
                    )
                    if response.status_code == 200:
                        served[pair] = response.json()
                        f = served[pair]
                        say(
                            f"{pair}: served by model v{f.get('model_version')}: next close {f.get('forecast'):,.4f} "
                            f"(last {f.get('last_close'):,.4f}, {f.get('change_pct'):+.3f} %) for {f.get('target_time')}"
                        )
            if len(served) == len(pairs):
                return served
            if run_done and not nudged:
                nudged = True
                missing = pairs_without_champion(settings, [p for p in pairs if p not in served])
                if missing:
                    raise ServiceError(
                        f"training finished but {', '.join(missing)} has no champion (the promotion gate refused "
                        f"the model: see MLflow {settings.mlflow_tracking_uri}); try `mur up --retrain --epochs 5`"
                    )
                with contextlib.suppress(Exception):  # ask the API to read the registry now
                    client.post(
                        f"{base}/v1/admin/reload",
                        params={"wait_s": 0},
                        headers={"Authorization": f"Bearer {token}"},
                    )
            if time.monotonic() > deadline:
                missing = [p for p in pairs if p not in served]
                raise ServiceError(
                    f"Serve did not answer forecasts for {', '.join(missing)} within {timeout_s:.0f} s; "
                    f"see `mur status`, {base}/readyz and the Ray dashboard {settings.ray_address}"
                )
            if time.monotonic() - last_note > 60:
                last_note = time.monotonic()
                say(f"  … waiting for forecasts of {', '.join(p for p in pairs if p not in served)}")
            time.sleep(5)


# --- up / down -------------------------------------------------------------------------------------------
def bring_up(settings: Settings, options: UpOptions, *, say: Say) -> UpReport:
    """Everything ``mur up`` does, in order; returns what happened (the CLI prints the summary)."""
    from mur import services
    from mur.db import migrate

    began = time.monotonic()
    settings = align_settings(settings)
    report = UpReport(settings)
    pairs = validate_pairs(settings, options.pairs or settings.pairs)
    say(f"runtime dir {settings.runtime_dir} (pids, logs, S3 data, Airflow home)")

    say(f"PostgreSQL {settings.pg_host}:{settings.pg_port}: databases …")
    created = services.ensure_databases(settings)
    say(
        f"  databases {', '.join([settings.pg_database, settings.mlflow_database, settings.airflow_database])}"
        + (f" (created {', '.join(created)})" if created else " (exist)")
    )
    migration = migrate(settings)
    say(
        f"  migrations: {len(migration.applied_now)} applied now, "
        f"{len(migration.already_applied) + len(migration.applied_now)} in total"
    )

    registry = services.default_services(settings)
    say(f"services: {', '.join(services.plan(registry, None))}")
    report.started = start_all(settings, parallel=options.parallel, say=say)

    report.admin = ensure_admin(settings, options.admin_user, options.admin_password)
    if report.admin.created:
        say(f"admin user {options.admin_user!r} created")
    else:
        say(
            f"admin user {options.admin_user!r} exists"
            + (" (password set from MUR_ADMIN_PASSWORD)" if report.admin.password_updated else "")
        )

    if options.train:
        token = check_token(settings, options.admin_user)
        missing = pairs if options.retrain else pairs_without_champion(settings, pairs)
        airflow, run_id = None, None
        if not missing:
            report.training = (
                "every pair has a champion: no training triggered (the hourly schedule retrains)"
            )
            say(report.training)
        elif "airflow-api-server" in registry:
            from mur.airflow_local import AirflowClient

            airflow = AirflowClient.from_settings(settings)
            wait_for_dag(airflow, DAG_ID, 300, say)
            conf = {"pairs": missing, **options.training_conf(settings)}
            run_id = trigger_first(airflow, conf)
            airflow.set_paused(DAG_ID, False)  # after the trigger: the scheduled run queues behind it
            report.training = f"triggered {DAG_ID} run {run_id} for {', '.join(missing)}"
            say(f"{report.training} (conf {json.dumps(conf)})")
        else:
            say("Airflow is not part of this stack: training directly as Ray jobs")
            train_directly(settings, missing, options, say)
            report.training = f"trained {', '.join(missing)} directly as Ray jobs"
        try:
            say(f"waiting until Serve forecasts {', '.join(pairs)} (up to {options.timeout_s:.0f} s) …")
            report.forecasts = wait_for_forecasts(
                settings, pairs, token, timeout_s=options.timeout_s, say=say, airflow=airflow, run_id=run_id
            )
        finally:
            if airflow is not None:
                airflow.close()
    report.seconds = time.monotonic() - began
    return report


def bring_down(settings: Settings, *, say: Say) -> list[StopResult]:
    """Stop every service ``mur up`` started (dependents first), then report processes that outlived them."""
    from mur import services

    settings = align_settings(settings)
    registry = services.default_services(settings)
    if "serve" in registry and services.running_pid(settings, "ray") is not None:
        # the Ray head stops too, and Serve with it: no need to remove the app first
        registry["serve"] = dataclasses.replace(registry["serve"], after_stop=None)
    results = services.down(settings, services=registry, progress=say)
    left = leftover_processes(settings)
    if left:
        say(
            "still running with this runtime dir (not started as a service, left alone): "
            + ", ".join(f"{pid} {cmd[:60]}" for pid, cmd in left)
        )
    return results


def leftover_processes(settings: Settings) -> list[tuple[int, str]]:
    """Processes (other than this one and its ancestors) that belong to the stack of this runtime dir.

    ``mur up`` exports ``MUR_STACK={runtime dir}``, so every service, Airflow task, Ray worker and job
    inherits it (a user's shell does not, even with ``MUR_RUNTIME_DIR`` exported).
    """
    marker = f"{STACK_MARKER}={Path(settings.runtime_dir).resolve()}".encode()
    mine = _ancestors(os.getpid())
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            environ = Path(f"/proc/{entry.name}/environ").read_bytes()
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] in "ZX":
            continue
        if marker in environ.split(b"\0"):
            cmd = (
                Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            )
            found.append((int(entry.name), cmd.strip()))
    return found


def _ancestors(pid: int) -> set[int]:
    out = {pid}
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat[stat.rindex(")") + 2 :].split()[1])
        out.add(pid)
    return out


# --- the summary -------------------------------------------------------------------------------------------
def _local(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def urls(settings: Settings) -> dict[str, str]:
    """What to open in a browser."""
    return {
        "Dashboard": f"http://{_local(settings.dash_host)}:{settings.dash_port}/",
        "API docs": f"http://{_local(settings.serve_host)}:{settings.serve_port}/docs",
        "Airflow UI": settings.airflow_url.rstrip("/") + "/",
        "MLflow UI": settings.mlflow_tracking_uri.rstrip("/") + "/",
        "Ray dashboard": settings.ray_address.rstrip("/") + "/",
    }


def summary_lines(report: UpReport, registry_names: Iterable[str] = ()) -> list[str]:
    """The closing block of ``mur up``: URLs, logins (secrets only when just created), forecasts, next steps."""
    s = report.settings
    names = set(registry_names)
    lines = ["", f"Make Us Rich is up ({_duration(report.seconds)}).", ""]
    for label, url in urls(s).items():
        if label == "Airflow UI" and names and "airflow-api-server" not in names:
            continue
        if label == "Dashboard" and names and "dash" not in names:
            continue
        lines.append(f"  {label:<14} {url}")
    admin = report.admin
    lines.append("")
    if admin is not None:
        lines.append(
            f"  login          {admin.username}  (dashboard; the same account for the API's admin routes)"
        )
        if admin.password:
            lines.append(f"  password       {admin.password}")
            lines.append(
                "                 ^ shown once: only its hash is stored "
                f"(change it: mur users set-password {admin.username})"
            )
        elif admin.password_from_env:
            lines.append("  password       the one in MUR_ADMIN_PASSWORD")
        else:
            lines.append(
                f"  password       set at the first `mur up` (reset: mur users set-password {admin.username})"
            )
        if admin.token:
            lines.append(f"  API token      {admin.token}")
            lines.append(
                "                 ^ shown once (more: mur tokens create NAME, or the dashboard's API page)"
            )
        else:
            lines.append(f"  API token      create one: mur tokens create {admin.username} --name mine")
    if not names or "airflow-api-server" in names:
        with contextlib.suppress(Exception):
            login = airflow_login(s)
            if login is not None:
                where = (
                    "MUR_AIRFLOW_PASSWORD"
                    if s.airflow_password
                    else str(Path(s.runtime_dir) / "airflow" / "passwords.json")
                )
                lines.append(f"  Airflow login  {login[0]}  (password in {where})")
    if report.forecasts:
        lines.append("")
        lines.append("  forecasts served now:")
        for pair, f in report.forecasts.items():
            lines.append(
                f"    {pair:<10} next close {f.get('forecast'):>14,.4f}   last {f.get('last_close'):>14,.4f}   "
                f"model v{f.get('model_version')}   for {f.get('target_time')}"
            )
        pair = next(iter(report.forecasts))
        api = f"http://{_local(s.serve_host)}:{s.serve_port}"
        lines.append("")
        lines.append(f'  try: curl -H "Authorization: Bearer $TOKEN" {api}/v1/forecast/{pair}')
    lines.append("")
    lines.append(f"  status: mur status · stop: mur down · logs: {Path(s.runtime_dir) / 'logs'}/")
    return lines


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"
