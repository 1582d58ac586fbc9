"""MLflow tracking and model registry glue, and the promotion gate.

Every training is one MLflow run; the ONNX model is registered as ``mur-{pair}``. The gate gives the
``champion`` alias only to a version that is not worse than the current champion on the *same* most
recent holdout windows and whose skill vs persistence clears a floor; otherwise ``challenger``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mur.settings import PROJECT_ROOT, Settings

log = logging.getLogger(__name__)
CHAMPION, CHALLENGER = "champion", "challenger"
MODEL_PREFIX = "mur-"


def model_name(pair: str, prefix: str = MODEL_PREFIX) -> str:
    """Registered model name for a pair (``settings.registry_prefix`` + pair)."""
    return f"{prefix}{pair}"


def champion_uri(pair: str, prefix: str = MODEL_PREFIX) -> str:
    """``models:/mur-{pair}@champion``."""
    return f"models:/{model_name(pair, prefix)}@{CHAMPION}"


@dataclass(frozen=True)
class Decision:
    """The gate's verdict for a new version."""

    alias: str
    reason: str
    champion_mae: float | None = None


def decide_promotion(
    new_mae: float, new_skill: float, champion_mae: float | None, skill_floor: float
) -> Decision:
    """Pure gate: champion iff MAE ≤ the champion's (same windows) and skill ≥ floor."""
    if new_skill < skill_floor:
        return Decision(
            CHALLENGER,
            f"skill {new_skill:+.4f} below the floor {skill_floor:+.4f} (persistence is better)",
            champion_mae,
        )
    if champion_mae is None:
        return Decision(CHAMPION, f"first model for this pair (skill {new_skill:+.4f})", None)
    if champion_mae == float("inf"):
        return Decision(CHAMPION, "the current champion's model cannot be loaded; replacing it", None)
    if new_mae <= champion_mae:
        return Decision(
            CHAMPION,
            f"MAE {new_mae:.6g} <= champion MAE {champion_mae:.6g} on the same holdout",
            champion_mae,
        )
    return Decision(
        CHALLENGER, f"MAE {new_mae:.6g} > champion MAE {champion_mae:.6g} on the same holdout", champion_mae
    )


def configure(settings: Settings) -> Any:
    """Point the MLflow client at the tracking server; return an ``MlflowClient``."""
    import mlflow
    from mlflow import MlflowClient

    for key, value in settings.s3_env().items():
        os.environ.setdefault(key, value)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    return MlflowClient(settings.mlflow_tracking_uri)


def git_commit() -> str:
    """The project's git commit (``MUR_GIT_COMMIT`` wins, e.g. inside a Ray job's working_dir copy)."""
    if os.environ.get("MUR_GIT_COMMIT"):
        return os.environ["MUR_GIT_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def find_version(client: Any, pair: str, idempotency_key: str, prefix: str = MODEL_PREFIX) -> Any | None:
    """An existing version of ``mur-{pair}`` trained for the same key (window end + config), if any."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(
            f"name = '{model_name(pair, prefix)}' and tags.idempotency_key = '{idempotency_key}'"
        )
    except MlflowException:
        return None
    return max(found, key=lambda v: int(v.version)) if found else None


def version_summary(client: Any, version: Any, prefix: str = MODEL_PREFIX) -> dict[str, Any]:
    """A small dict describing a registered version (what jobs, Airflow and the API return)."""
    tags = dict(version.tags or {})
    aliases = list(getattr(version, "aliases", []) or [])
    metrics = json.loads(tags.get("metrics_json", "{}"))
    return {
        "pair": tags.get("pair", version.name.removeprefix(prefix)),
        "model_name": version.name,
        "version": int(version.version),
        "alias": CHAMPION if CHAMPION in aliases else tags.get("gate_alias", CHALLENGER),
        "aliases": aliases,
        "reason": tags.get("gate_reason", ""),
        "run_id": version.run_id,
        "data_window": {"start": tags.get("data_window_start"), "end": tags.get("data_window_end")},
        "mae": metrics.get("model", {}).get("mae"),
        "skill": metrics.get("skill"),
        "metrics": metrics,
    }


def onnx_bytes_for(uri: str) -> bytes:
    """Download a registered ONNX model (``models:/…``) and return the file's bytes."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        files = [local] if local.is_file() else sorted(local.rglob("*.onnx"))
        if not files:
            raise FileNotFoundError(f"no .onnx file under {uri}")
        return files[0].read_bytes()


def champion_mae_on(
    pair: str, client: Any, x_test: np.ndarray, y_test: np.ndarray, prefix: str = MODEL_PREFIX
) -> tuple[float | None, int | None]:
    """Re-score the current champion on the given windows; ``(None, None)`` when there is none."""
    from mlflow.exceptions import MlflowException

    from mur.export import load_session, run_session

    try:
        current = client.get_model_version_by_alias(model_name(pair, prefix), CHAMPION)
    except MlflowException:
        return None, None
    try:
        session = load_session(onnx_bytes_for(f"models:/{model_name(pair, prefix)}/{current.version}"))
    except Exception as exc:  # artefact gone (e.g. S3 wiped) or unreadable: it cannot defend its title
        log.warning("champion %s v%s cannot be loaded (%s); it will be replaced", pair, current.version, exc)
        return float("inf"), int(current.version)
    pred = run_session(session, x_test)
    return float(np.mean(np.abs(pred - y_test))), int(current.version)


@dataclass
class RegistrationResult:
    """Outcome of logging, registering and gating one trained model."""

    pair: str
    version: int
    alias: str
    reason: str
    run_id: str
    champion_version_before: int | None
    champion_mae_before: float | None
    mae: float
    skill: float
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def log_and_register(
    settings: Settings,
    *,
    pair: str,
    onnx_path: Path,
    feature_spec: dict[str, Any],
    metrics_doc: dict[str, Any],
    params: dict[str, Any],
    history: list[dict[str, Any]],
    x_test: np.ndarray,
    y_test: np.ndarray,
    idempotency_key: str,
) -> RegistrationResult:
    """Log one run (params, per-epoch and final metrics, tags, ONNX + spec), register it and apply the gate."""
    import mlflow
    import onnx
    from mlflow.models import infer_signature

    from mur.export import load_session, run_session

    client = configure(settings)
    mlflow.set_experiment(settings.mlflow_experiment)
    prefix = settings.registry_prefix
    name = model_name(pair, prefix)
    window = metrics_doc["data_window"]
    tags = {
        "pair": pair,
        "data_window_start": window["start"],
        "data_window_end": window["end"],
        "test_window_start": metrics_doc["test_window"]["start"],
        "test_window_end": metrics_doc["test_window"]["end"],
        "git_commit": git_commit(),
        "idempotency_key": idempotency_key,
        "normalization": metrics_doc["normalization"],
        "arch": metrics_doc["arch"],
    }
    example = x_test[:2].astype(np.float32)
    signature = infer_signature(
        example, run_session(load_session(onnx_path), example).reshape(-1, 1).astype(np.float32)
    )
    with mlflow.start_run(run_name=f"{pair}-{window['end']}") as run:
        mlflow.set_tags(tags)
        mlflow.log_params({k: v for k, v in params.items() if v is not None})
        for row in history:
            step = int(row.get("epoch", 0))
            mlflow.log_metrics(
                {k: float(row[k]) for k in ("train_loss", "val_loss", "epoch_seconds") if k in row}, step=step
            )
        flat = {
            f"{who}_{k}": float(v)
            for who in ("model", "persistence", "linear")
            for k, v in metrics_doc[who].items()
        }
        flat["skill"] = float(metrics_doc["skill"])
        mlflow.log_metrics(flat)
        mlflow.log_dict(feature_spec, "feature_spec.json")
        mlflow.log_dict(metrics_doc, "metrics.json")
        info = mlflow.onnx.log_model(
            onnx.load(str(onnx_path)),
            name="model",
            registered_model_name=name,
            signature=signature,
            input_example=example,
            onnx_execution_providers=["CPUExecutionProvider"],
            save_as_external_data=False,  # one self-contained model.onnx in the registry
        )
    version = info.registered_model_version
    champ_mae, champ_version = champion_mae_on(pair, client, x_test, y_test, prefix)
    if champ_version == version:
        champ_mae, champ_version = None, None
    decision = decide_promotion(
        metrics_doc["model"]["mae"], metrics_doc["skill"], champ_mae, settings.promotion_skill_floor
    )
    version_tags = {
        **tags,
        "gate_alias": decision.alias,
        "gate_reason": decision.reason,
        "skill": f"{metrics_doc['skill']:.6f}",
        "mae": f"{metrics_doc['model']['mae']:.6f}",
        "metrics_json": json.dumps(
            {k: metrics_doc[k] for k in ("model", "persistence", "linear", "skill", "test_window", "n_test")}
        ),
    }
    for key, value in version_tags.items():
        client.set_model_version_tag(name, str(version), key, str(value))
    client.set_registered_model_alias(name, decision.alias, str(version))
    log.info("gate for %s v%s: %s (%s)", name, version, decision.alias, decision.reason)
    return RegistrationResult(
        pair=pair,
        version=int(version),
        alias=decision.alias,
        reason=decision.reason,
        run_id=run.info.run_id,
        champion_version_before=champ_version,
        champion_mae_before=champ_mae,
        mae=float(metrics_doc["model"]["mae"]),
        skill=float(metrics_doc["skill"]),
    )


def registered_pairs(client: Any, prefix: str = MODEL_PREFIX) -> list[str]:
    """Pairs that have a registered ``mur-*`` model."""
    return sorted(
        m.name.removeprefix(prefix) for m in client.search_registered_models(f"name LIKE '{prefix}%'")
    )


def champion_version(client: Any, pair: str, prefix: str = MODEL_PREFIX) -> Any | None:
    """The champion ModelVersion of a pair, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model_name(pair, prefix), CHAMPION)
    except MlflowException:
        return None
