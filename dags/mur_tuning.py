"""Hyper-parameter search per pair with Ray Tune (docs/tuning.md): manual trigger, or ``MUR_TUNE_SCHEDULE``
(e.g. ``@weekly``).

    list_pairs ──► tune_pair[pair] (mapped; one search at a time: each one uses the cluster's CPUs)

Each ``tune_pair`` submits ``ray_jobs/tune_pair.py`` (:mod:`mur.orchestration.tuning_job`): ASHA over
walk-forward folds, the chosen configuration scored once against the default on a confirmation span the
search never saw, trials logged to MLflow, the configuration stored as the pair's next version (active when
it beat the default there), which the hourly ``mur_training`` runs then use; the promotion gate still
decides on every version they train. Configuration only: the task imports its body when it runs and passes
it the settings it creates then (``get_settings()``), as the failure callbacks do when they run.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, get_current_context, task

from mur.orchestration import dag_arguments, optional_int, pairs_param
from mur.orchestration.tasks import schedule_for
from mur.orchestration.tuning_job import TUNING_DAG_ID
from mur.settings import get_settings

settings = get_settings()


@dag(
    dag_id=TUNING_DAG_ID,
    description="Ray Tune search per pair → confirmation span → MLflow + versioned model configuration",
    schedule=schedule_for(settings.tuning.tune_schedule),
    max_active_runs=1,
    tags=["mur", "tuning", "ray", "mlflow"],
    params={
        "pairs": pairs_param(
            "Pairs to tune, e.g. btc_usdt. Empty: Variable mur_pairs, else every configured pair."
        ),
        "trials": optional_int(
            "Trials",
            f"Configurations per pair. Empty: MUR_TUNE_TRIALS ({settings.tuning.tune_trials}).",
            1,
            500,
        ),
    },
    doc_md=__doc__,
    **dag_arguments(retries=0),
)
def mur_tuning() -> None:
    @task
    def list_pairs() -> list[str]:
        """Pairs to tune this run: params → Variable ``mur_pairs`` → settings."""
        from mur.orchestration.tasks import list_pairs_task

        return list_pairs_task(get_settings(), get_current_context())

    @task(
        max_active_tis_per_dag=1,
        map_index_template="{{ task.op_kwargs['pair'] }}",
        execution_timeout=timedelta(seconds=settings.training.job_timeout_s + 600),
    )
    def tune_pair(pair: str) -> dict:
        """One Ray job searches the pair's configuration; its result (chosen config, gain ± s.e., version)."""
        from mur.orchestration.tuning_job import tune_pair_task

        return tune_pair_task(get_settings(), pair, get_current_context())

    tune_pair.expand(pair=list_pairs())


mur_tuning()
