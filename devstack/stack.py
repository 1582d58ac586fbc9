"""``mur up``: the whole local stack in one command, idempotently; ``mur down`` stops what it started.

Steps of :func:`bring_up` (each prints its progress):

1. settings (:func:`devstack.config.align_settings`): URLs follow the ports and are exported, with
   ``MUR_RUNTIME_DIR``, to every process started from here;
2. PostgreSQL: the app, MLflow and Airflow databases exist; ``sql/`` migrations are applied;
3. services (:mod:`devstack.services`, run by :mod:`devstack.supervisor`): ray alone first, then
   each service once its dependencies are healthy, up to 3 side by side; a failure names the service and
   quotes its log; the watchdog (:mod:`devstack.watchdog`), started first, restarts a service that dies;
4. the admin user (dashboard + API), created once with a generated password printed once;
5. training (:mod:`devstack.first_run`): the training DAG is triggered through Airflow's REST API for
   the pairs that have no champion yet, then unpaused; without Airflow, Ray jobs are submitted directly;
6. waiting until Serve answers ``GET /v1/forecast/{pair}`` for every pair, then the URLs and logins.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack import airflow, first_run, gcs_redis, supervisor, watchdog
from devstack.config import align_settings, fix_market_clock, pause_market_clock, remembered_ray_nodes
from devstack.first_run import AdminResult, Say
from devstack.processes import leftover_processes
from devstack.provision import ensure_databases
from devstack.services import Service, stack_services
from devstack.supervisor import StartResult, StopResult
from mur.clock import MarketClock
from mur.errors import MurError
from mur.orchestration import DAG_ID, MONITORING_DAG_ID
from mur.settings import Settings


# --- options and results ---------------------------------------------------------------------------
@dataclass(frozen=True)
class UpOptions:
    """What ``mur up`` was asked for (CLI options)."""

    pairs: list[str] | None = None
    """Pairs to train and wait for (default: ``settings.general.pairs``)."""
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
    speed: float | None = None
    """Market clock speed (market seconds per wall second; default ``MUR_CLOCK_SPEED``, else 1)."""

    def training_conf(self, settings: Settings) -> dict[str, Any]:
        """The first training's options (the DAG run's ``conf`` besides the pairs).

        Options given on the command line win; for the others, :data:`QUICK_TRAINING` applies while the
        setting has its default value (``MUR_EPOCHS`` …), so that a first ``mur up`` is quick and a configured
        stack trains the model its schedule would (which the scheduled runs then reuse).
        """
        given = {k: getattr(self, k) for k in ("epochs", "train_days", "hidden_size", "num_workers")}
        return quick_training(settings) | {k: v for k, v in given.items() if v is not None}


QUICK_TRAINING: dict[str, int] = {"epochs": 3, "train_days": 60, "num_workers": 1}
"""The first training of ``mur up`` for settings left at their defaults (30 epochs on 365 days with 2 Ray
workers per pair would keep a first start busy for half an hour on 2 cores); the hourly schedule trains with
the settings and replaces a champion only with a better model."""


def quick_training(settings: Settings) -> dict[str, int]:
    """:data:`QUICK_TRAINING` for the settings that keep their default value (a value other than the default
    is configured; a copied .env.example repeats the defaults)."""
    configured = settings.flat(exclude_defaults=True)
    return {k: v for k, v in QUICK_TRAINING.items() if k not in configured}


@dataclass
class UpReport:
    """What :func:`bring_up` did: the admin, forecasts served, timings."""

    settings: Settings
    admin: AdminResult | None = None
    forecasts: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0


def fast_clock(clock: MarketClock) -> bool:
    return not clock.live and clock.speed > 1


def fast_market_training(settings: Settings, clock: MarketClock, say: Say) -> Settings:
    """A market clock faster than real time leaves each market hour's retraining ``3600 / speed`` wall seconds:
    the scheduled runs then train the quick model (:data:`QUICK_TRAINING`, for the settings left at their
    defaults) and say so; exported to every service, like the clock."""
    quick = quick_training(settings) if fast_clock(clock) else {}
    if not quick:
        return settings
    for name, value in quick.items():
        os.environ[f"MUR_{name.upper()}"] = str(value)
    say(
        f"market clock x{clock.speed:g}: scheduled trainings use "
        + ", ".join(f"{k}={v}" for k, v in quick.items())
        + f" to fit a market hour ({clock.seconds_per_hour:.0f} s); set MUR_* to override"
    )
    return settings.replace(**quick)


# --- starting services -----------------------------------------------------------------------------------
def exclusive(name: str) -> bool:
    """Started alone: the Ray head and every worker node (``ray-node-N``). Ray's raylet gives its Python agents
    a hard-coded 15 s to come up (ray-project/ray#65983), and ``ray start`` a node 30 s to register with the
    GCS, which a busy 2-core machine can miss; with nothing else starting, the head comes up in ~15 s."""
    return name == "ray" or name.startswith("ray-node-")


RETRIES = 1
"""Extra attempts after a failed start of an :func:`exclusive` service (the same reason: a raylet that lost
that race is retried once)."""


def start_all(
    settings: Settings,
    *,
    parallel: int = 3,
    say: Say,
    registry_factory: Callable[[Settings], dict[str, Service]] | None = None,
) -> list[StartResult]:
    """Start every registered service as soon as its dependencies are healthy.

    Up to ``parallel`` start side by side, except :func:`exclusive` ones, which start alone (first when
    ready). While services start, a line every 20 s says which are still awaited. The first failure ends the
    start once the others under way finished; healthy services stay up (``mur up`` again resumes).
    """
    build = registry_factory or stack_services
    registry = build(settings)
    order = supervisor.plan(registry, None)
    deps = {n: [d for d in registry[n].depends_on if d in order] for n in order}
    retries = {name: RETRIES for name in order if exclusive(name)}
    done: dict[str, StartResult] = {}
    running: dict[Future[StartResult], str] = {}
    began: dict[str, float] = {}
    errors: list[BaseException] = []
    noted = time.monotonic()  # when a line last said which starts are awaited

    def start(service: Service) -> StartResult:
        result = supervisor.start_service(settings, service, progress=say)
        say(supervisor.describe_start(result, service))
        return result

    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="mur-up") as pool:
        while len(done) < len(order):
            if not errors:  # after a failure, only the starts under way finish
                for name in sorted(order, key=lambda n: not exclusive(n)):  # exclusive ones first
                    busy = set(running.values())
                    if len(busy) >= max(1, parallel) or any(exclusive(b) for b in busy):
                        break
                    ready = name not in done and name not in busy and all(d in done for d in deps[name])
                    if ready and not (exclusive(name) and busy):
                        began[name] = time.monotonic()
                        # the registry again: factories may read what earlier starts created
                        running[pool.submit(start, build(settings)[name])] = name
            if not running:
                break
            wait_s = max(0.0, noted + 20.0 - time.monotonic())  # a line every 20 s while starts run
            finished, _ = wait(list(running), timeout=wait_s, return_when=FIRST_COMPLETED)
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
            if running and time.monotonic() - noted >= 20.0:
                noted = time.monotonic()
                say(
                    "  … waiting for "
                    + ", ".join(f"{n} ({noted - began[n]:.0f} s)" for n in running.values())
                )
    if errors:
        for other in errors[1:]:
            say(f"also failed: {other}")
        raise errors[0]
    return [done[n] for n in order if n in done]


# --- up / down -------------------------------------------------------------------------------------------
def bring_up(settings: Settings, options: UpOptions, *, say: Say) -> UpReport:
    """Everything ``mur up`` does, in order; returns what happened (the CLI prints the summary)."""
    from mur.db import migrate

    began = time.monotonic()
    previous_nodes = remembered_ray_nodes(settings.general.runtime_dir) or 1
    settings = align_settings(settings)
    # `mur up --nodes N` with fewer nodes than before: stop the rest
    if previous_nodes > settings.ray.ray_nodes:
        wider = stack_services(settings.replace(ray_nodes=previous_nodes))
        surplus = [f"ray-node-{k}" for k in range(settings.ray.ray_nodes + 1, previous_nodes + 1)]
        supervisor.down(settings, surplus, services=wider, progress=say)
    running = any(supervisor.running_pid(settings, name) for name in stack_services(settings))
    clock = fix_market_clock(settings, speed=options.speed, running=running)
    settings = settings.replace(clock_start=clock.start, clock_origin=clock.origin, clock_speed=clock.speed)
    settings = fast_market_training(settings, clock, say)
    report = UpReport(settings)
    pairs = first_run.validate_pairs(settings, options.pairs or settings.general.pairs)
    say(f"runtime dir {settings.general.runtime_dir} (pids, logs, S3 data, Airflow home)")
    say(clock_line(clock))

    say(f"PostgreSQL {settings.db.pg_host}:{settings.db.pg_port}: databases …")
    created = ensure_databases(settings)
    say(
        f"  databases {', '.join([settings.db.pg_database, settings.db.mlflow_database, settings.db.airflow_database])}"
        + (f" (created {', '.join(created)})" if created else " (exist)")
    )
    migration = migrate(settings)
    say(
        f"  migrations: {len(migration.applied_now)} applied now, "
        f"{len(migration.already_applied) + len(migration.applied_now)} in total"
    )

    registry = stack_services(settings)
    say(f"services: {', '.join(supervisor.plan(registry, None))}")
    say(f"watchdog: pid {watchdog.start(settings)} (restarts a service whose process dies: mur status)")
    start_all(settings, parallel=options.parallel, say=say)

    admin = report.admin = first_run.ensure_admin(settings, options.admin_user, options.admin_password)
    if admin.created:
        say(f"admin user {options.admin_user!r} created")
    else:
        updated = " (password set from MUR_ADMIN_PASSWORD)" if admin.password_updated else ""
        say(f"admin user {options.admin_user!r} exists{updated}")

    if "airflow-api-server" in registry:
        with airflow.client(settings) as monitoring:
            first_run.wait_for_dag(monitoring, MONITORING_DAG_ID, 300, say)
            monitoring.set_paused(MONITORING_DAG_ID, False)
        say(f"{MONITORING_DAG_ID}: unpaused (every market hour: track record, drift, alerts)")

    if options.train:
        token = first_run.check_token(settings, options.admin_user)
        missing = pairs if options.retrain else first_run.pairs_without_champion(settings, pairs)
        client, run_id = None, None
        if not missing:
            say("every pair has a champion: no training triggered (the schedule retrains them)")
        elif "airflow-api-server" in registry:
            client = airflow.client(settings)
            first_run.wait_for_dag(client, DAG_ID, 300, say)
            conf = {"pairs": missing, **options.training_conf(settings)}
            if fast_clock(clock) and not options.retrain and set(missing) <= set(settings.general.pairs):
                # the scheduled runs train the same quick model: follow the first instead of a second one
                client.set_paused(DAG_ID, False)
                run_id = first_run.first_scheduled_run(client, timeout_s=120)
            if run_id is not None:
                say(f"the scheduled {DAG_ID} run {run_id} trains {', '.join(missing)}")
            else:
                run_id = first_run.trigger_first(settings, client, conf)
                client.set_paused(DAG_ID, False)  # after the trigger: the scheduled run queues behind it
                say(f"triggered {DAG_ID} run {run_id} for {', '.join(missing)} (conf {json.dumps(conf)})")
        else:
            say("Airflow is not part of this stack: training directly as Ray jobs")
            first_run.train_directly(settings, missing, options.training_conf(settings), say)
        try:
            say(f"waiting until Serve forecasts {', '.join(pairs)} (up to {options.timeout_s:.0f} s) …")
            report.forecasts = first_run.wait_for_forecasts(
                settings, pairs, token, timeout_s=options.timeout_s, say=say, airflow=client, run_id=run_id
            )
        finally:
            if client is not None:
                client.close()
    report.seconds = time.monotonic() - began
    return report


def bring_down(settings: Settings, *, say: Say) -> list[StopResult]:
    """Stop every service ``mur up`` started (dependents first), then report processes that outlived them."""
    settings = align_settings(settings)
    watchdog.stop(settings)
    registry = stack_services(settings)
    if "serve" in registry and supervisor.running_pid(settings, "ray") is not None:
        # the Ray head stops too, and Serve with it: no need to remove the app first
        registry["serve"] = dataclasses.replace(registry["serve"], after_stop=None)
    if "redis" in registry:
        # a deliberate stop ends the Ray cluster: the next `mur up` starts a new one instead of recovering
        # this one's actors, jobs and nodes from Redis (only a crashed head, restarted by the watchdog, should)
        gcs_data = gcs_redis.redis_dir(settings) / "data"
        registry["redis"] = dataclasses.replace(
            registry["redis"], after_stop=functools.partial(shutil.rmtree, gcs_data, ignore_errors=True)
        )
    results = supervisor.down(settings, services=registry, progress=say)
    paused = pause_market_clock(settings)
    if paused is not None and not paused.live:
        say(f"market clock paused at {paused.start:%Y-%m-%d %H:%M} UTC (mur up resumes it)")
    left = leftover_processes(settings)
    if left:
        say(
            "still running with this runtime dir (not started as a service, left alone): "
            + ", ".join(f"{pid} {cmd[:60]}" for pid, cmd in left)
        )
    return results


# --- the summary -------------------------------------------------------------------------------------------
def clock_line(clock: MarketClock) -> str:
    """How the market clock runs, in one line."""
    if clock.live:
        return "market clock: real time (live Binance data)"
    now = clock.now()
    if clock.speed == 0:
        return f"market clock: frozen at {now:%Y-%m-%d %H:%M} UTC"
    return (
        f"market clock: {now:%a %Y-%m-%d %H:%M} UTC, speed {clock.speed:g} "
        f"(a market hour every {clock.seconds_per_hour:.0f} s; replaying the bundled candles)"
    )


def _local(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def urls(settings: Settings) -> dict[str, str]:
    """What to open in a browser."""
    return {
        "Dashboard": f"http://{_local(settings.dashboard.dash_host)}:{settings.dashboard.dash_port}/",
        "API docs": f"http://{_local(settings.serving.serve_host)}:{settings.serving.serve_port}/docs",
        "Airflow UI": settings.airflow.airflow_url.rstrip("/") + "/",
        "MLflow UI": settings.registry.mlflow_tracking_uri.rstrip("/") + "/",
        "Ray dashboard": settings.ray.ray_address.rstrip("/") + "/",
    }


def summary_lines(report: UpReport, registry_names: Iterable[str] = ()) -> list[str]:
    """The closing block of ``mur up``: URLs, logins (secrets only when just created), forecasts, next steps."""
    s = report.settings
    names = set(registry_names)
    needs = {"Airflow UI": "airflow-api-server", "Dashboard": "dash"}  # shown where that service runs
    lines = ["", f"Make Us Rich is up ({_duration(report.seconds)}).", ""]
    lines += [
        f"  {label:<14} {url}"
        for label, url in urls(s).items()
        if not names or label not in needs or needs[label] in names
    ]
    lines.append("")
    if (admin := report.admin) is not None:
        lines.append(
            f"  login          {admin.username}  (dashboard; the same account for the API's admin routes)"
        )
        if admin.password:
            lines += [
                f"  password       {admin.password}",
                "                 ^ shown once: only its hash is stored "
                f"(change it: mur users set-password {admin.username})",
            ]
        elif admin.password_from_env:
            lines.append("  password       the one in MUR_ADMIN_PASSWORD")
        else:
            lines.append(
                f"  password       set at the first `mur up` (reset: mur users set-password {admin.username})"
            )
        if admin.token:
            lines += [
                f"  API token      {admin.token}",
                "                 ^ shown once (more: mur tokens create NAME, or the dashboard's API page)",
            ]
        else:
            lines.append(f"  API token      create one: mur tokens create {admin.username} --name mine")
    if not names or "airflow-api-server" in names:
        where = "MUR_AIRFLOW_PASSWORD" if s.airflow.airflow_password else "`mur airflow password`"
        lines.append(f"  Airflow login  {s.airflow.airflow_user}  (password: {where})")
    if s.ray.ray_auth_mode == "token":
        lines.append("  Ray dashboard  asks for a token: paste the output of `mur ray token`")
    if report.forecasts:
        lines += ["", "  forecasts served now:"]
        lines += [
            f"    {pair:<10} next close {f.get('forecast'):>14,.4f}   last {f.get('last_close'):>14,.4f}   "
            f"model v{f.get('model_version')}   closes {f.get('close_time') or f.get('target_time')}"
            for pair, f in report.forecasts.items()
        ]
        api = f"http://{_local(s.serving.serve_host)}:{s.serving.serve_port}"
        curl = f'curl -H "Authorization: Bearer $TOKEN" {api}/v1/forecast/{next(iter(report.forecasts))}'
        lines += ["", f"  try: {curl}"]
    logs = Path(s.general.runtime_dir) / "logs"
    return [*lines, "", f"  status: mur status · stop: mur down · logs: {logs}/"]


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"
