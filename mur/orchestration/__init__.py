"""Orchestration: the training DAG's task bodies, Ray job submission, alerts and the Airflow REST client.

Names shared by the DAG files, the local stack and the dashboard live here, once: the DAG ids, and what the
DAG files declare alike (their start, failure alerts and trigger-form Params; Airflow is imported when they
are called, while a DAG file is parsed).
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any

DAG_ID = "mur_training"
"""The hourly training DAG (``dags/mur_training.py``)."""
MONITORING_DAG_ID = "mur_monitoring"
"""The hourly monitoring DAG (``dags/mur_monitoring.py``)."""


def dag_arguments(*, run_alert: bool = True, **default_args: Any) -> dict[str, Any]:
    """The ``@dag`` arguments every DAG file shares: a static start (the bundled candles' first year: backfills
    can go back there), no catch-up, owner ``mur`` and the Discord alert of a failed task (``run_alert``: also
    of a failed run), bound to where they get their settings when they run (``partial(task_failure_alert,
    get_settings)``: Airflow calls them with the context alone); ``default_args`` (retries…) join them."""
    from mur.orchestration.alerts import dag_failure_alert, task_failure_alert
    from mur.settings import get_settings

    alert = {"on_failure_callback": partial(task_failure_alert, get_settings)}
    shared = {"start_date": datetime(2023, 1, 1, tzinfo=UTC), "catchup": False}
    if run_alert:
        shared["on_failure_callback"] = partial(dag_failure_alert, get_settings)
    return shared | {"default_args": {"owner": "mur", **alert, **default_args}}


def pairs_param(description: str) -> Any:
    """The trigger form's ``pairs``: the pair rule in any case (the form accepts ``ETH_USDT``, the task
    lower-cases it); the type admits null so that the form does not mark it required (empty is allowed)."""
    from airflow.sdk import Param

    from mur.pairs import PAIR_PATTERN

    items = {"type": "string", "pattern": PAIR_PATTERN.replace("a-z0-9", "A-Za-z0-9")}
    return Param([], type=["null", "array"], items=items, title="Pairs", description=description)


def optional_int(title: str, description: str, minimum: int, maximum: int) -> Any:
    """A whole number the trigger form may leave empty (then the setting its description names applies)."""
    from airflow.sdk import Param

    return Param(
        None, type=["null", "integer"], minimum=minimum, maximum=maximum, title=title, description=description
    )
