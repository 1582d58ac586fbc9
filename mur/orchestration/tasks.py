"""Task bodies of the training DAG (``dags/mur_training.py``): list pairs, train one pair, summarize.

The DAG file stays configuration; everything it runs is here, callable and testable without a scheduler.
Import-light on purpose: the DAG file imports constants from this module while it is parsed, so only the
standard library and :mod:`mur.settings` load at module level (torch, ray, mlflow, pandas: inside functions).

Idempotency (backfills, re-runs): a run for logical date D trains on candles strictly before D's data
interval end. Before submitting a Ray job, :func:`train_pair` looks the registry up by the same idempotency
key the job would compute (pair + window end + hyper-parameters); a hit returns the existing version
without touching the cluster. The job checks again itself (``train_and_register(reuse_existing=True)``), so
two racing runs cannot register the same window twice either.

(Just over 400 lines: the pure helpers and the five task bodies are one unit, read together with the DAG.)
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from mur.pairs import is_pair
from mur.settings import Settings

if TYPE_CHECKING:
    from mur.contracts import TrainingResult

log = logging.getLogger(__name__)

from mur.orchestration import DAG_ID  # noqa: E402

CHAMPIONS_ASSET_URI = "mur://champions"
"""Asset the training DAG updates after each run; the serving side schedules its reload on it."""
PAIRS_VARIABLE = "mur_pairs"
"""Airflow Variable overriding ``settings.general.pairs`` (comma-separated or a JSON list)."""
TRAIN_OPTIONS = ("epochs", "arch", "hidden_size", "train_days", "num_workers", "horizons", "quantile_levels")
"""Params of the trigger form that are passed on to the Ray job (``None`` = the settings' value)."""

REUSED = "[mur] {pair}: version {version} was trained for this window already; reusing it"
"""What a training task logs for a pair whose version for this window is registered already."""
LogFn = Callable[[str], None]
AwaitJobs = Callable[..., Any]
"""Awaits submitted Ray jobs (their ids; optionally what to carry to the resume): the DAG task defers."""


# --- pure helpers ----------------------------------------------------------------------------------
def parse_pairs(value: str | Iterable[str] | None) -> list[str]:
    """``"btc_usdt, ETH_USDT"`` or ``'["btc_usdt"]'`` or a list → lower-case pairs, order kept, no repeats."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        items: Iterable[Any] = json.loads(text) if text.startswith("[") else text.split(",")
    else:
        items = value
    pairs = (str(item).strip().lower() for item in items)
    return list(dict.fromkeys(pair for pair in pairs if pair))  # dict keys: first occurrence wins, in order


def resolve_pairs(
    settings: Settings,
    *,
    requested: Iterable[str] | None = None,
    variable: str | None = None,
    catalogue: Callable[[], Iterable[str]] | None = None,
) -> list[str]:
    """Pairs to train: the trigger form's ``pairs`` if any, else Variable ``mur_pairs``, else ``catalogue()``
    (the pair catalogue: configured + added by an admin - removed, :mod:`mur.data.catalogue`), else settings."""
    from mur.errors import ConfigError

    for source, value in (("params.pairs", requested), (PAIRS_VARIABLE, variable)):
        try:
            pairs = parse_pairs(value)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{source}: cannot read a list of pairs from {value!r}: {exc}") from exc
        if pairs:
            break
    else:
        pairs = parse_pairs(list(catalogue()) if catalogue is not None else settings.general.pairs)
    bad = [p for p in pairs if not is_pair(p)]
    if bad:
        raise ConfigError(f"malformed pair(s) {bad}: expected BASE_QUOTE like btc_usdt")
    return pairs


def training_end(
    settings: Settings,
    data_interval_end: datetime | None,
    requested: str | datetime | None = None,
    run_after: datetime | None = None,
) -> datetime:
    """Window end of a run (UTC): the trigger form's ``end``, else the data interval end, else ``run_after``.

    A run triggered without a logical date has no data interval; it trains on candles before the market hour
    it was triggered in (on the clock ``settings`` describe, :mod:`mur.clock`; floored, so triggering twice in
    one hour reuses the first version).
    Data intervals are market time already (:class:`~mur.orchestration.timetable.MarketHourlyTimetable`).
    """
    from mur.clock import floor_hour, market_clock
    from mur.errors import ConfigError
    from mur.orchestration.market_dates import parse_utc

    value: Any = requested if requested not in (None, "") else data_interval_end
    if value is None and run_after is not None:
        value = floor_hour(market_clock(settings).market_at(run_after))
    if value is None:
        raise ConfigError("no training window end: the run has no data interval and no `end` param")
    if isinstance(value, str):
        value = parse_utc(value, what="end")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    # pendulum DateTime → plain datetime (XCom/JSON friendly)
    return datetime.fromtimestamp(value.timestamp(), tz=UTC)


def training_options(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The job overrides among ``params`` (epochs, arch, hidden_size, train_days, num_workers), Nones dropped."""
    params = params or {}
    return {k: params[k] for k in TRAIN_OPTIONS if params.get(k) not in (None, "")}


def submission_prefix(dag_id: str, run_id: str, pair: str) -> str:
    """Stable prefix of the Ray submission ids of one pair in one run (retries share it)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"mur-{dag_id}-{run_id}-{pair}")


def summarize(results: Iterable[Mapping[str, Any] | None], *, expected: Iterable[str] = ()) -> dict[str, Any]:
    """Summary of a run from the mapped XComs: per-pair version and alias, champions, reused and failed pairs."""
    from mur.contracts import CompactResult
    from mur.registry.names import CHAMPION

    done = [CompactResult.model_validate(r) for r in results if r]
    trained = {r.pair for r in done}
    failed = [p for p in expected if p not in trained]
    return {
        "pairs": sorted(trained),
        "versions": {r.pair: r.version for r in done},
        "aliases": {r.pair: r.alias for r in done},
        "champions": sorted(r.pair for r in done if r.alias == CHAMPION and not r.reused),
        "reused": sorted(r.pair for r in done if r.reused),
        "failed": failed,
        "results": [r.model_dump() for r in done],
    }


# --- registry look-up before submitting ------------------------------------------------------------
def expected_idempotency_key(settings: Settings, pair: str, end: datetime, options: Mapping[str, Any]) -> str:
    """The key the Ray job will compute for this pair, window end and options (see ``train_and_register``)."""
    from mur.timeutil import iso
    from mur.training.params import idempotency_key, model_config, train_config, training_params
    from mur.training.ray_fit import RayFit
    from mur.training.tuned import tuned_settings

    fit_params = RayFit.key_params()
    tuned_params: dict[str, Any] = {}
    if settings.tuning.use_tuned_configs:  # as the job's driver will (it registers): mur/training/tuned.py
        settings, tuned_params = tuned_settings(settings, pair)
    # options that are no hyper-parameter (num_workers; train_days, in settings already) are ignored there
    params = training_params(settings, model_config(settings, **options), train_config(settings, **options))
    return idempotency_key(pair, iso(end), {**params, **fit_params, **tuned_params})


def find_trained(
    settings: Settings, pair: str, end: datetime, options: Mapping[str, Any]
) -> TrainingResult | None:
    """The registered version already trained for this window and config, or None.

    A registry that does not answer raises (RegistryUnavailableError): the task fails and Airflow retries it,
    rather than training a duplicate version.
    """
    from mur.training.driver import registered_for

    return registered_for(settings, pair, expected_idempotency_key(settings, pair, end, options))


def available_end(settings: Settings, pair: str) -> datetime | None:
    """With ``market_data=bundled``: one hour after the pair's last bundled candle (None otherwise/unknown pair).

    Scheduled runs past the bundled history then reuse the model trained on all of it instead of failing;
    with live data (``binance``) the window end is always the run's.
    """
    if settings.data.market_data != "bundled":
        return None
    from mur.data import get_market_data
    from mur.errors import MurError

    try:
        last = get_market_data(settings).data_range(pair)[1]
    except MurError:  # unknown pair: the job reports it with the data source's own message
        return None
    return datetime.fromtimestamp(last.timestamp(), tz=UTC) + timedelta(hours=1)


def clamped_end(settings: Settings, pair: str, end: datetime, say: LogFn) -> datetime:
    """``end``, or :func:`available_end` when the pair's bundled candles end before it (said in the log)."""
    if (available := available_end(settings, pair)) is not None and end > available:
        say(
            f"[mur] {pair}: the bundled candles end at {available.isoformat()}; training on all of them "
            f"(requested window end {end.isoformat()})"
        )
        return available
    return end


# --- one pair ---------------------------------------------------------------------------------------
def train_pair(
    settings: Settings,
    pair: str,
    *,
    end: datetime,
    await_job: AwaitJobs,
    options: Mapping[str, Any] | None = None,
    emit: LogFn | None = None,
    submission_prefix: str | None = None,
    try_number: int = 1,
    kind: str = "manual",
) -> dict[str, Any]:
    """Train ``pair`` on candles before ``end`` as a Ray job: the version already trained for this window
    (compact result, no job), else submit the job and hand its id to ``await_job`` (the DAG's task defers
    there, :mod:`mur.orchestration.triggers`; it resumes in :func:`pair_job_done`). A job of an earlier try
    of the same run that is still running (a trigger or a worker died) is awaited instead of a second one.
    """
    from mur.orchestration import job_submission as jobs

    say = emit or log.info
    options = dict(options or {})
    pair = pair.lower()
    if "train_days" in options:
        settings = settings.replace(train_days=int(options["train_days"]))
    end = clamped_end(settings, pair, end, say)
    say(f"[mur] {pair}: training window end {end.isoformat()} options {options or '{}'}")
    if (existing := find_trained(settings, pair, end, options)) is not None:
        say(REUSED.format(pair=pair, version=existing.version))
        return existing.compact().model_dump()
    prefix = submission_prefix
    if prefix and (running := _running_job(jobs.client_for(settings), prefix)) is not None:
        say(f"[mur] {pair}: awaiting Ray job {running}, left running by an earlier try")
        return await_job([running])
    job_id = jobs.start_training(
        settings,
        pair,
        end=end,
        log=say,
        submission_id=f"{prefix}-try{try_number}-{datetime.now(UTC):%H%M%S}" if prefix else None,
        kind=kind,
        **options,
    )
    return await_job([job_id])


def pair_job_done(settings: Settings, pair: str, event: Mapping[str, Any], emit: LogFn) -> dict[str, Any]:
    """``train_pair[pair]`` resumed by its trigger: the result its job left, or JobError with the job's
    reason (the task fails with it: its log, its retries, the Discord alert)."""
    from mur.orchestration import job_submission as jobs

    [(job_id, job)] = event["jobs"].items()
    emit(f"[mur] {pair}: Ray job {job_id} ended: {job['status']}")
    why = lambda: job["reason"] or "it left no result"  # noqa: E731
    result = jobs.job_result(job_id, job["status"], why, jobs.job_result_reader(settings))
    return result.compact().model_dump()


def _running_job(client: Any, prefix: str) -> str | None:
    """Submission id of a not-yet-finished job whose id starts with ``prefix``."""
    try:
        listed = client.list_jobs()
    except Exception:
        return None
    for job in listed:
        sid = getattr(job, "submission_id", None) or ""
        status = str(getattr(job, "status", "")).split(".")[-1]
        if sid.startswith(prefix + "-") and status in ("PENDING", "RUNNING"):
            return sid
    return None


# --- Airflow glue (called from the DAG's tasks with the settings they created and their context) ------
def catalogue_pairs(settings: Settings) -> list[str]:
    """The pair catalogue as it stands now (configured + added by an admin - removed, read from PostgreSQL):
    what a scheduled run trains and monitors."""
    from mur.data.catalogue import pair_catalogue
    from mur.db import Database

    with Database(settings, maxconn=1) as db:
        return pair_catalogue(settings, db)


def list_pairs_task(settings: Settings, context: Mapping[str, Any]) -> list[str]:
    """``list_pairs``: params → Variable ``mur_pairs`` → the pair catalogue (read from PostgreSQL now, when
    the run starts: a pair an admin added since the last run is trained by this one)."""
    pairs = resolve_pairs(
        settings,
        requested=(context.get("params") or {}).get("pairs"),
        variable=_variable(PAIRS_VARIABLE),
        catalogue=lambda: catalogue_pairs(settings),
    )
    log.info("pairs to train: %s", ", ".join(pairs) or "(none)")
    return pairs


def train_pair_task(
    settings: Settings,
    pair: str,
    context: Mapping[str, Any],
    batches: Iterable[Mapping[str, Any] | None] | None,
    await_job: AwaitJobs,
) -> dict[str, Any]:
    """``train_pair[pair]``: the pair's result from its batch job (:mod:`mur.orchestration.batches`); when
    the pair failed in its batch, the first try fails with the batch's error and the retries train the pair
    on its own job (window end from the run, options from params). Returns the compact result."""
    from mur.errors import JobError

    emit = task_emit(context)
    try_number = int(getattr(context.get("ti"), "try_number", 1) or 1)
    # its outcome in the batch tasks' results ({"result": …} or {"error": …}); None: its batch task failed
    outcome = next((dict(b[pair.lower()]) for b in batches or [] if b and pair.lower() in b), None)
    if outcome is not None and outcome.get("result"):
        result = outcome["result"]
        version = result.get("version")
        if result.get("reused"):
            emit(REUSED.format(pair=pair, version=version))
        else:
            emit(f"[mur] {pair}: version {version} trained by its batch's Ray job {result.get('job_id')}")
        return dict(result)
    if outcome is not None and try_number == 1:
        raise JobError(
            f"{pair} failed in its batch job: {outcome.get('error')} (a retry trains it on its own)"
        )
    if outcome is None:
        emit(f"[mur] {pair}: no result from a batch job; training it on its own")
    job = run_arguments(settings, context, pair.lower())
    return train_pair(settings, pair, **job, try_number=try_number, await_job=await_job)


def task_emit(context: Mapping[str, Any]) -> LogFn:
    """Where a task body logs: its task instance's log (this module's outside Airflow)."""
    task_log = getattr(context.get("ti"), "log", None)
    return task_log.info if task_log is not None else log.info


def run_arguments(settings: Settings, context: Mapping[str, Any], label: str) -> dict[str, Any]:
    """What a training task passes on from its run to :func:`train_pair` or
    :func:`~mur.orchestration.batches.train_batch`: the window end, the job options from params, its log,
    the prefix of its Ray submission ids (``label``: its pair or batch) and the run's kind."""
    params = context.get("params") or {}
    ti = context.get("ti")
    dag_run = context.get("dag_run")
    end = training_end(
        settings, context.get("data_interval_end"), params.get("end"), getattr(dag_run, "run_after", None)
    )
    return {
        "end": end,
        "options": training_options(params),
        "emit": task_emit(context),
        "submission_prefix": submission_prefix(
            getattr(ti, "dag_id", DAG_ID), str(context.get("run_id")), label
        ),
        "kind": run_kind(dag_run),
    }


def run_kind(dag_run: Any) -> str:
    """``scheduled``, ``backfill`` or ``manual`` (asset-triggered and unknown runs count as manual)."""
    run_type = getattr(dag_run, "run_type", None)
    name = str(getattr(run_type, "value", run_type) or "")  # DagRunType enum or its string
    return name if name in ("scheduled", "backfill") else "manual"


def summarize_task(
    settings: Settings, results: Sequence[Mapping[str, Any] | None], context: Mapping[str, Any]
) -> dict[str, Any]:
    """``summarize``: collect the mapped results, set the Asset event's extra, optionally post to Discord."""
    expected = _xcom(context, "list_pairs") or []
    summary = summarize(results[:] if results else [], expected=expected)  # one slice: nothing past the end
    if not summary["results"]:
        from airflow.sdk.exceptions import AirflowSkipException

        raise AirflowSkipException(f"no pair trained (failed: {', '.join(summary['failed']) or 'none'})")
    extra = {k: summary[k] for k in ("pairs", "versions", "aliases", "champions", "reused", "failed")}
    extra["run_id"] = context.get("run_id")
    outlet_events = context.get("outlet_events")
    if outlet_events is not None:
        from airflow.sdk import Asset

        outlet_events[Asset(CHAMPIONS_ASSET_URI)].extra = extra
    log.info("summary: %s", json.dumps(extra, default=str))
    if settings.airflow.discord_notify_success:
        from mur.orchestration.alerts import send_summary

        send_summary(settings, context, summary)
    return summary


def check_all_trained_task(context: Mapping[str, Any]) -> None:
    """Leaf ``all_pairs_trained``: reached only when every pair trained (its trigger rule does the work)."""
    summary = _xcom(context, "summarize") or {}
    if summary.get("failed"):  # defensive: the trigger rule already stops here on a failed pair
        from mur.errors import JobError

        raise JobError(f"training failed for: {', '.join(summary['failed'])}")


def _variable(key: str) -> str | None:
    try:
        from airflow.sdk import Variable

        return Variable.get(key, default=None)
    except Exception as exc:  # no Airflow (unit tests) or no API: settings decide
        log.debug("variable %s unavailable: %s", key, exc)
        return None


def _xcom(context: Mapping[str, Any], task_id: str) -> Any:
    ti = context.get("ti")
    if ti is None:
        return None
    try:
        return ti.xcom_pull(task_ids=task_id)
    except Exception as exc:
        log.debug("xcom of %s unavailable: %s", task_id, exc)
        return None


# --- schedule ---------------------------------------------------------------------------------------
def schedule_for(expression: str | None, every_hours: int = 1) -> Any:
    """``MUR_TRAIN_SCHEDULE`` → an Airflow schedule: ``market`` (the default) runs once per market hour, or per
    ``every_hours`` of them (:class:`~mur.orchestration.timetable.MarketHourlyTimetable`, following the market
    clock); a cron expression/preset becomes a data-interval timetable on wall time (``every_hours`` unused).

    Interval semantics make backfills meaningful: the run for logical date D covers ``[D, D + 1h)`` and trains
    on candles before ``D + 1h``. ``none``/empty → no schedule (trigger/backfill only).
    """
    if expression is None or expression.strip().lower() in ("", "none", "null", "off"):
        return None
    if expression.strip().lower() in ("market", "@market", "@market-hourly"):
        from mur.orchestration.timetable import MarketHourlyTimetable

        return MarketHourlyTimetable(every_hours=every_hours)
    from airflow.sdk import CronDataIntervalTimetable

    return CronDataIntervalTimetable(expression.strip(), timezone="UTC")
