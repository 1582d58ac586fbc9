"""Train every pair on Ray, register the models in MLflow, announce the run on the Asset ``mur://champions``.

Once per market hour, or per ``MUR_TRAIN_EVERY_HOURS`` of them (:class:`~mur.orchestration.timetable.
MarketHourlyTimetable`: the market clock of :mod:`mur.clock`; each run's data interval is the market hour it
stands for).

    list_pairs ──► plan_batches ──► train_batch[i] (mapped, bounded: one Ray job trains a batch of pairs)
               └──────────────────► train_pair[pair] (mapped: the pair's result; retries train it alone)
    (both deferrable: they submit the job and wait for it in Airflow's triggerer, holding no worker slot)
                                      ──► summarize (Asset event) ──► all_pairs_trained

Configuration only: each task imports :mod:`mur.orchestration.tasks` when it runs, creates the settings
(``get_settings()``) and passes them down; the failure callbacks get theirs the same way when they run
(``partial(task_failure_alert, get_settings)``). Parsing this file loads the Airflow SDK, :mod:`mur.settings`
and the import-light :mod:`mur.orchestration.tasks` / :mod:`mur.orchestration.alerts` (no torch, ray, mlflow
or pandas). Schedule, parallelism and defaults come from ``MUR_*`` settings; the trigger form (Params)
overrides pairs, window end and hyper-parameters for one run.
"""

from __future__ import annotations

from datetime import timedelta
from typing import cast

from airflow.sdk import Asset, Param, dag, get_current_context, task

from mur.orchestration import DAG_ID, dag_arguments, optional_int, pairs_param
from mur.orchestration.tasks import CHAMPIONS_ASSET_URI, schedule_for
from mur.orchestration.triggers import TrainBatch, TrainPair
from mur.settings import get_settings

settings = get_settings()
CHAMPIONS = Asset(CHAMPIONS_ASSET_URI)


@dag(
    dag_id=DAG_ID,
    description="Per-pair training on Ray → MLflow registry + promotion gate → Asset mur://champions",
    schedule=schedule_for(settings.airflow.train_schedule, settings.airflow.train_every_hours),
    max_active_runs=2,
    tags=["mur", "training", "ray", "mlflow"],
    params={
        "pairs": pairs_param(
            "Pairs to train, e.g. btc_usdt. Empty: Variable mur_pairs, else the pair catalogue (mur pairs list)."
        ),
        "end": Param(
            None,
            type=["null", "string"],
            format="date-time",
            title="Training window end",
            description=(
                "Train on candles strictly before this market time (UTC; after market now: market now). "
                "Empty: the run's data interval end (the market hour it stands for). Dates here are the "
                "market's (mur clock), not the wall clock's: the Logical Date field above is pre-filled with "
                "your browser's clock; kept as it is, the run stands for the market hour that closed last; a "
                "logical date you type must lie before market now (a later one is refused)."
            ),
        ),
        "epochs": optional_int(
            "Epochs", "Max epochs (early stopping may end sooner). Empty: MUR_EPOCHS.", 1, 1000
        ),
        "arch": Param(
            None,
            type=["null", "string"],
            enum=[None, "lstm", "gru"],
            values_display={
                "null": f"default (MUR_ARCH: {settings.model.arch})",
                "lstm": "LSTM",
                "gru": "GRU",
            },
            title="Architecture",
            description="Recurrent cell. Empty: MUR_ARCH.",
        ),
        "hidden_size": optional_int("Hidden size", "Recurrent hidden size. Empty: MUR_HIDDEN_SIZE.", 1, 1024),
        "train_days": optional_int(
            "Training days", "Length of the training window before its end. Empty: MUR_TRAIN_DAYS.", 14, 3650
        ),
        "horizons": Param(
            None,
            type=["null", "string"],
            pattern=r"^\s*1\s*(,\s*[0-9]+\s*)*$",
            title="Forecast horizons (hours)",
            description="Comma list, ascending, starting with 1 (e.g. 1,4,24). Empty: MUR_HORIZONS.",
        ),
        "quantile_levels": Param(
            None,
            type=["null", "string"],
            pattern=r"^\s*0?\.[0-9]+\s*(,\s*0?\.[0-9]+\s*)+$",
            title="Quantile levels",
            description="Comma list, at least three including 0.5 (e.g. 0.05,0.5,0.95). Empty: MUR_QUANTILE_LEVELS.",
        ),
        "num_workers": optional_int(
            "Ray Train workers", "Workers per training job. Empty: MUR_NUM_WORKERS.", 1, 16
        ),
    },
    doc_md=__doc__,
    **dag_arguments(
        retries=2,
        retry_delay=timedelta(seconds=30),
        retry_exponential_backoff=2.0,
        max_retry_delay=timedelta(minutes=10),
    ),
)
def mur_training() -> None:
    @task
    def list_pairs() -> list[str]:
        """Pairs to train this run: params → Variable ``mur_pairs`` → the pair catalogue, read when the run
        starts (configured + added by an admin - removed; parsing this file never touches the database)."""
        from mur.orchestration.tasks import list_pairs_task

        return list_pairs_task(get_settings(), get_current_context())

    @task
    def plan_batches(pairs: list[str]) -> list[list[str]]:
        """The pairs in batches: one per training slot at least, at most MUR_TRAIN_BATCH_SIZE pairs each."""
        from mur.orchestration.batches import plan_batches_task

        return plan_batches_task(get_settings(), pairs)

    @task(outlets=[CHAMPIONS], trigger_rule="all_done", retries=0)
    def summarize(results: list[dict]) -> dict:
        """Collect the mapped results (failed pairs listed) and emit the Asset event with them as extra."""
        from mur.orchestration.tasks import summarize_task

        return summarize_task(get_settings(), results, get_current_context())

    @task(trigger_rule="all_success", retries=0)
    def all_pairs_trained() -> None:
        """Fails the run (and alerts) when a pair failed, after ``summarize`` published the others."""
        from mur.orchestration.tasks import check_all_trained_task

        check_all_trained_task(get_current_context())

    # deferrable: each submits its Ray job and waits in the triggerer (mur/orchestration/triggers.py); a
    # deferred task holds no worker slot but counts towards max_active_tis_per_dag(run)
    slots = settings.airflow.max_parallel_trainings
    bounds = {
        "max_active_tis_per_dagrun": slots,
        "max_active_tis_per_dag": slots,
        "execution_timeout": timedelta(seconds=settings.training.job_timeout_s + 600),
    }
    pairs = list_pairs()
    batches = TrainBatch.partial(
        task_id="train_batch",
        retries=0,  # a pair that failed here is retried by its own train_pair task
        **bounds,
    ).expand(pairs=plan_batches(cast("list[str]", pairs)))
    trained = TrainPair.partial(
        task_id="train_pair",
        batches=batches.output,
        map_index_template="{{ task.pair }}",
        trigger_rule="all_done",  # a batch task that failed as a whole: the pairs train on their own
        **bounds,
    ).expand(pair=pairs)
    summary = summarize(cast("list[dict]", trained.output))  # the mapped results when it runs
    [trained, summary] >> all_pairs_trained()


mur_training()
