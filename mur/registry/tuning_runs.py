"""A hyper-parameter search in MLflow: one parent run per search (its spans, budget, chosen configuration
and the confirmation comparison; ``tuning.json``), one child run per trial (its configuration, score after
each fold, and how it ended), in the experiment ``<MUR_MLFLOW_EXPERIMENT>-tuning``. A search logged before
(same search id: a rerun that restored a finished Ray Tune experiment) is not logged twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from mur.clock import market_clock
from mur.errors import RegistryUnavailableError
from mur.settings import Settings

if TYPE_CHECKING:
    from mur.training.tuning import TuningReport


def check_tracking(settings: Settings) -> None:
    """Raise a one-line :class:`RegistryUnavailableError` when the tracking server does not answer."""
    url = f"{settings.registry.mlflow_tracking_uri.rstrip('/')}/health"
    try:
        response = httpx.get(url, timeout=5, trust_env=False)
        if response.status_code == 200:
            return
        reason = f"HTTP {response.status_code}"
    except httpx.HTTPError as exc:
        reason = str(exc)
    raise RegistryUnavailableError(
        f"MLflow at {settings.registry.mlflow_tracking_uri} does not answer ({reason}): start it (mur up) or pass --no-mlflow"
    )


def _numbers(values: dict[str, Any], prefix: str = "") -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in values.items() if isinstance(v, int | float)}


def log_search(settings: Settings, report: TuningReport) -> str:
    """Log ``report`` (parent run + one child per trial); the parent run's id."""
    import mlflow

    from mur.registry.client import configure

    configure(settings, quiet=True)  # stdout is the report's
    experiment = f"{settings.registry.mlflow_experiment}-tuning"
    home = mlflow.set_experiment(experiment)  # its id: see log_and_register
    found = mlflow.search_runs(
        experiment_names=[experiment],
        filter_string=f"tags.search_id = '{report.search_id}' and tags.kind = 'tuning'",
        output_format="list",
        max_results=1,
    )
    if found:
        return str(found[0].info.run_id)
    comparison = report.comparison
    with mlflow.start_run(experiment_id=home.experiment_id, run_name=f"tune-{report.pair}") as parent:
        market_time = market_clock(settings).now().isoformat(timespec="seconds")
        mlflow.set_tags(
            {"pair": report.pair, "kind": "tuning", "search_id": report.search_id, "market_time": market_time}
        )
        mlflow.log_params({f"budget_{k}": v for k, v in report.evidence()["budget"].items()})
        mlflow.log_params({f"chosen_{k}": v for k, v in report.chosen.items()})
        mlflow.log_params({k: v for k, v in report.spans.to_dict().items() if k in ("confirm_start", "end")})
        metrics = {"confirm_n": comparison["n"], **_numbers(report.seconds, "seconds_")}
        for name in ("winkler", "pinball"):  # a standard error that is None is left out
            gain = {"gain": comparison[name]["gain"], "gain_se": comparison[name]["se"]}
            metrics |= _numbers(gain, f"confirm_{name}_")
        mlflow.log_metrics(metrics)
        mlflow.log_dict(
            {"chosen": report.chosen, **report.evidence(), "trial_results": [vars(t) for t in report.trials]},
            "tuning.json",
        )
        for t in report.trials:
            with mlflow.start_run(
                experiment_id=home.experiment_id, run_name=f"trial-{t.trial_id}", nested=True
            ):
                mlflow.set_tags(
                    {
                        "pair": report.pair,
                        "kind": "tuning-trial",
                        "search_id": report.search_id,
                        "status": t.status,
                        "chosen": str(t.trial_id == comparison.get("chosen_trial")).lower(),
                    }
                )
                mlflow.log_params(t.config)
                for step, fold in enumerate(t.folds, start=1):
                    mlflow.log_metrics(_numbers(fold, "fold_"), step=step)
                if t.folds:
                    mlflow.log_metrics({"score": t.score, "folds": len(t.folds)})
                if t.error:
                    mlflow.set_tag("error", t.error[:500])
        return str(parent.info.run_id)
