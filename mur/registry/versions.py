"""Registered versions: log and register one training (with the gate), and look versions up.

Every training is one MLflow run; the ONNX model is registered as ``{prefix}{pair}``. A version's tags
carry its data window, idempotency key, gate decision and the test-span part of its metrics document.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mur.clock import market_clock
from mur.contracts import MetricsDocument, TrainingResult, Window
from mur.errors import RegistryUnavailableError
from mur.registry.aliases import keep_shadows, record_gate_move
from mur.registry.client import configure, git_commit
from mur.registry.gate import BACKFILL, Coverage, Evidence, HorizonComparison, compare_horizon, decide
from mur.registry.names import (
    CHALLENGER,
    CHAMPION,
    MODEL_PREFIX,
    model_name,
    version_uri,
)
from mur.registry.retention import prune_versions
from mur.settings import Settings

if TYPE_CHECKING:
    from mur.model.features import Dataset

log = logging.getLogger(__name__)


def find_version(client: Any, pair: str, idempotency_key: str, prefix: str = MODEL_PREFIX) -> Any | None:
    """An existing version of ``mur-{pair}`` trained for the same key (window end + config), if any.

    A registry that does not answer is an error (RegistryUnavailableError), never "not found": a flaky
    registry must fail the task (Airflow retries it), not cause a duplicate training.
    """
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(
            f"name = '{model_name(pair, prefix)}' and tags.idempotency_key = '{idempotency_key}'"
        )
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":  # no such model yet
            return None
        raise RegistryUnavailableError(f"model registry error while looking up {pair}: {exc}") from exc
    except OSError as exc:  # requests' ConnectionError and friends
        raise RegistryUnavailableError(f"model registry unreachable while looking up {pair}: {exc}") from exc
    return max(found, key=lambda v: int(v.version)) if found else None


def version_result(version: Any, prefix: str = MODEL_PREFIX) -> TrainingResult:
    """A registered version described from its tags (what the job, Airflow and the API report)."""
    tags = dict(version.tags or {})
    aliases = list(getattr(version, "aliases", []) or [])
    metrics = MetricsDocument.from_version_tags(tags)
    return TrainingResult(
        pair=tags.get("pair", version.name.removeprefix(prefix)),
        model_name=version.name,
        version=int(version.version),
        alias=CHAMPION if CHAMPION in aliases else tags.get("gate_alias", CHALLENGER),
        aliases=aliases,
        reason=tags.get("gate_reason", ""),
        gate_rule=tags.get("gate_rule"),
        kind=tags.get("kind"),
        run_id=version.run_id,
        data_window=Window(start=tags.get("data_window_start"), end=tags.get("data_window_end")),
        mae=metrics.model.mae if metrics else None,
        skill=metrics.skill if metrics else None,
        metrics=metrics,
    )


def evidence_of(
    metrics: MetricsDocument | None, window_end: str | None, version: int | None = None
) -> Evidence | None:
    """The gate's view of a version: its window end and out-of-sample skill with uncertainty."""
    if metrics is None or not window_end:
        return None
    sig = metrics.significance
    h1 = metrics.horizons[0] if metrics.horizons else None
    return Evidence(
        window_end=tag_time(window_end),
        skill=float(metrics.skill),
        skill_se=math.inf if sig is None or sig.skill_se is None else float(sig.skill_se),
        dm_p_worse=1.0 if sig is None else float(sig.dm_p_worse),
        version=version,
        interval_skill=None if h1 is None else float(h1.interval_skill),
        interval_skill_se=math.inf
        if h1 is None or h1.interval_skill_se is None
        else float(h1.interval_skill_se),
        interval_p_worse=1.0 if h1 is None else float(h1.interval_dm_p_worse),
        coverage=tuple(
            Coverage(h.hours, h.n, float(h.interval.coverage), float(h.interval_level))
            for h in metrics.horizons or []
        ),
    )


def champion_evidence(
    client: Any, pair: str, prefix: str = MODEL_PREFIX
) -> tuple[Evidence | None, bytes | None, dict[str, str]]:
    """The current champion's evidence (from its tags), its ONNX bytes (None when its artefact can no longer
    be loaded) and its tags. ``(None, None, {})`` when the pair has no champion. A champion registered before
    evidence was recorded gets ``skill_se = inf``: it is never called better than a newer version on noise.
    """
    from mur.model.export import load_session
    from mur.registry.checksums import TAG
    from mur.registry.download import onnx_bytes

    current = champion_version(client, pair, prefix)
    if current is None:
        return None, None, {}
    tags = dict(current.tags or {})
    metrics = MetricsDocument.from_version_tags(tags)
    evidence = evidence_of(metrics, tags.get("data_window_end"), int(current.version))
    if evidence is None:  # no readable metrics: treat as an old champion without evidence
        evidence = Evidence(
            window_end=tag_time(tags.get("data_window_end") or "1970-01-01T00:00:00Z"),
            skill=float(tags.get("skill") or 0.0),
            version=int(current.version),
        )
    try:
        model = onnx_bytes(version_uri(pair, current.version, prefix), tags.get(TAG))
        load_session(model)
    except Exception as exc:  # artefact gone (e.g. S3 wiped) or unreadable: it cannot defend its title
        log.warning("champion %s v%s cannot be loaded (%s)", pair, current.version, exc)
        return evidence, None, tags
    return evidence, model, tags


MIN_SAME_TARGETS = 48
"""Fewer unseen test targets than this and the gate compares scale-free scores instead (its fallback)."""


def same_target_scores(
    settings: Settings, candidate: Path | bytes, champion: bytes, champion_tags: dict[str, str], ds: Dataset
) -> list[HorizonComparison]:
    """Candidate and champion forecasts of the candidate's test targets that the champion never trained on
    (windows whose first target is at or after the champion's own test span began), scored per common
    horizon (:func:`mur.registry.gate.compare_horizon`). Empty when they cannot be compared: other quantile
    levels, features the dataset lacks, a longer input or fewer than :data:`MIN_SAME_TARGETS` targets."""
    from mur.evaluation.metrics import persistence_forecast
    from mur.model.export import load_session, model_metadata, run_forecast
    from mur.model.inference import model_seq_len

    sessions = [load_session(candidate), load_session(champion)]
    meta = [model_metadata(s) for s in sessions]
    seen_until = np.datetime64(
        tag_time(champion_tags.get("test_window_start") or "9999-01-01T00:00:00Z").replace(tzinfo=None)
    )
    idx = ds.split.test[ds.timestamps[ds.split.test] >= seen_until]
    names = list(ds.feature_names)
    lens = [model_seq_len(s) for s in sessions]
    if (
        len(idx) < MIN_SAME_TARGETS
        or meta[0]["quantile_levels"] != meta[1]["quantile_levels"]
        or not set(meta[1]["features"]) <= set(names)
        or max(lens) > ds.spec.seq_len
    ):
        return []
    x = ds.x[idx]
    forecasts = []
    for session, m, length in zip(sessions, meta, lens, strict=True):
        q = run_forecast(session, x[:, -length:, [names.index(f) for f in m["features"]]])[1]
        if q is None:
            return []
        forecasts.append(q)
    levels, last, targets = meta[0]["quantile_levels"], persistence_forecast(x), ds.horizon_targets[idx]
    margin = settings.registry.promotion_point_margin
    return [
        compare_horizon(
            forecasts[0][:, j],
            forecasts[1][:, meta[1]["horizons"].index(h)],
            targets[:, ds.horizons.index(h)],
            last,
            levels,
            h,
            point_margin=margin,
        )
        for j, h in enumerate(meta[0]["horizons"])
        if h in meta[1]["horizons"] and h in ds.horizons
    ]


def log_and_register(
    settings: Settings,
    *,
    pair: str,
    onnx_path: Path,
    feature_spec: dict[str, Any],
    metrics_doc: MetricsDocument,
    params: dict[str, Any],
    history: list[dict[str, Any]],
    ds: Dataset,
    idempotency_key: str,
    kind: str = "manual",
    weights: Path | None = None,
    training_tags: dict[str, str] | None = None,
) -> TrainingResult:
    """Log one run (params, per-epoch and final metrics, tags, ONNX + spec), register it and apply the gate.

    ``kind`` says what asked for the training (``scheduled``, ``backfill`` or ``manual``); the gate itself
    treats any version older than the champion as a backfill (:func:`mur.registry.gate.decide`).
    ``weights`` (the ``weights.npz`` file, plain arrays) and ``training_tags`` (full or warm, from which
    version: see :mod:`mur.training.warm_start`) let a later hourly run start from this version.
    """
    import mlflow
    import mlflow.onnx
    import onnx
    from mlflow.entities import Metric
    from mlflow.models import infer_signature

    from mur.model.export import load_session, run_session
    from mur.monitoring.backtest_record import record_backtest
    from mur.registry.checksums import TAG, sha256

    client = configure(settings)
    graph = onnx.load(str(onnx_path))  # log_model writes its serialization as model.onnx
    # the id passed on: when two jobs create the experiment at once, MLflow's set_experiment returns it without
    # making it active, and the run would land in "Default" (then untrusted: trained_here)
    experiment = mlflow.set_experiment(settings.registry.mlflow_experiment)
    prefix = settings.registry.registry_prefix
    name = model_name(pair, prefix)
    window, test_window = metrics_doc.data_window, metrics_doc.test_window
    tags = {
        "pair": pair,
        "data_window_start": window.start,
        "data_window_end": window.end,
        "test_window_start": test_window.start,
        "test_window_end": test_window.end,
        "git_commit": git_commit(settings),
        "idempotency_key": idempotency_key,
        "normalization": metrics_doc.normalization,
        "arch": metrics_doc.arch,
        "market_time": market_clock(settings).now().isoformat(timespec="seconds"),  # MLflow's times are wall
        TAG: sha256(graph.SerializeToString()),
    }
    example = ds.x[ds.split.test][:2].astype(np.float32)
    signature = infer_signature(
        example, run_session(load_session(onnx_path), example).reshape(-1, 1).astype(np.float32)
    )
    with mlflow.start_run(experiment_id=experiment.experiment_id, run_name=f"{pair}-{window.end}") as run:
        mlflow.set_tags(tags)
        mlflow.log_params({k: v for k, v in params.items() if v is not None})
        mlflow.log_dict(feature_spec, "feature_spec.json")
        mlflow.log_dict(metrics_doc.model_dump(mode="json"), "metrics.json")
        if weights is not None:
            mlflow.log_artifact(str(weights))
        info = mlflow.onnx.log_model(
            graph,
            name="model",
            signature=signature,
            input_example=example,
            onnx_execution_providers=["CPUExecutionProvider"],
            save_as_external_data=False,  # one self-contained model.onnx in the registry
            # onnx and onnxruntime at the versions installed: what inference would find, without the subprocess
            # that imports the model to find it (a second or more per registration)
            pip_requirements=mlflow.onnx.get_default_pip_requirements(),
        )
        # after the model (log_model copies each metric the run has onto it, a request per name), in one batch
        now, losses = int(datetime.now().timestamp() * 1000), ("train_loss", "val_loss", "epoch_seconds")
        per_epoch = [Metric(k, r[k], now, int(r.get("epoch", 0))) for r in history for k in losses if k in r]
        scores = [Metric(k, v, now, 0) for k, v in metrics_doc.mlflow_metrics().items()]
        client.log_batch(run.info.run_id, metrics=per_epoch + scores)
    champion, champion_onnx, champion_tags = champion_evidence(client, pair, prefix)
    candidate = evidence_of(metrics_doc, window.end)  # judged before it is registered: it has no number yet
    assert candidate is not None  # the document has a window end and metrics
    gate = settings.registry
    same = (
        same_target_scores(settings, onnx_path, champion_onnx, champion_tags, ds)
        if champion is not None and champion_onnx is not None and candidate.window_end >= champion.window_end
        else []
    )
    decision = decide(
        candidate,
        champion,
        alpha=gate.promotion_alpha,
        skill_floor=gate.promotion_skill_floor,
        champion_loadable=champion is None or champion_onnx is not None,
        same_targets=same,
        coverage_tolerance=gate.promotion_coverage_tolerance,
        point_margin=gate.promotion_point_margin,
    )
    mae, skill = metrics_doc.model.mae, metrics_doc.skill
    sig = metrics_doc.significance
    version_tags = {  # the run's and the gate's, set as the version is created: it never shows without them
        **tags,
        "kind": BACKFILL if decision.rule == "backfill" else kind,
        "as_of": window.end,
        "gate_alias": decision.alias,
        "gate_rule": decision.rule,
        "gate_reason": decision.reason,
        "skill": f"{skill:.6f}",
        "mae": f"{mae:.6f}",
        "dm_p_worse": "" if sig is None else f"{sig.dm_p_worse:.4g}",
        "dm_p_better": "" if sig is None else f"{sig.dm_p_better:.4g}",
        "interval_skill": "" if metrics_doc.interval_skill is None else f"{metrics_doc.interval_skill:.6f}",
        "coverage": "" if metrics_doc.coverage is None else f"{metrics_doc.coverage:.4f}",
        "metrics_json": metrics_doc.version_tag_json(),
        "gate_scores": json.dumps(decision.scores_json()),
        **(training_tags or {}),
    }
    # one request for every tag (MLflow's client asks for the model again before each tag or alias it sets)
    version = mlflow.register_model(info.model_uri, name, tags=version_tags).version
    if decision.alias != BACKFILL:  # a backfill stays reachable by version number only
        client.set_registered_model_alias(name, decision.alias, str(version))
    if decision.shadow:  # sane but not promoted: served in shadow, scored on the hours it would have served
        keep_shadows(client, name, add=int(version), keep=gate.shadow_max_per_pair)
    if decision.promoted:
        record_gate_move(
            settings,
            pair=pair,
            version=int(version),
            previous_version=None if champion is None else champion.version,
            reason=decision.reason,
            scores={"gate_rule": decision.rule, "horizons": decision.scores_json()},
        )
        record_backtest(settings, pair=pair, version=int(version), model=onnx_path, ds=ds)  # labelled, apart
    log.info("gate for %s v%s: %s (%s)", name, version, decision.alias, decision.reason)
    prune_versions(settings, client, pair)  # after the gate: the aliases it set are kept
    return TrainingResult(
        pair=pair,
        model_name=name,
        version=int(version),
        alias=decision.alias,
        reason=decision.reason,
        run_id=run.info.run_id,
        champion_version_before=None if champion is None else champion.version,
        gate_rule=decision.rule,
        kind=version_tags["kind"],
        mae=float(mae),
        skill=float(skill),
        data_window=window,
        metrics=metrics_doc,
    )


def registered_pairs(client: Any, prefix: str, experiment: str) -> dict[str, dict[str, int]]:
    """Pairs that have a registered ``{prefix}*`` model, each with its aliases (``{alias: version}``); a model
    whose champion the trainer did not make (:func:`trained_here`, runs of ``experiment``) is left out."""
    from mlflow.utils import get_results_from_paginated_fn

    found: dict[str, dict[str, int]] = {}
    models = get_results_from_paginated_fn(  # every page (MLflow answers 100 models per page by default)
        lambda size, token: client.search_registered_models(
            f"name LIKE '{prefix}%'", max_results=size, page_token=token
        ),
        1000,
    )
    for model in models:
        aliases = {alias: int(v) for alias, v in (getattr(model, "aliases", None) or {}).items()}
        if CHAMPION not in aliases or trained_here(client, model, aliases[CHAMPION], experiment):
            found[model.name.removeprefix(prefix)] = aliases
    return dict(sorted(found.items()))


_TRUST: dict[tuple[str, int, int], bool] = {}


def trained_here(client: Any, model: Any, version: int, experiment: str) -> bool:
    """Whether ``version`` of ``model`` comes from the trainer: its run lies in the training experiment, where
    only the trainer's MLflow account writes. Any logged-in account can create a registered model and
    register versions of its own runs in it: Serve and the dashboard do not trust those. Remembered per
    model (by creation time) and version."""
    key = (model.name, int(getattr(model, "creation_timestamp", 0) or 0), version)
    if key not in _TRUST:
        run_id = client.get_model_version(model.name, str(version)).run_id
        run = client.get_run(run_id) if run_id else None
        home = client.get_experiment_by_name(experiment)
        _TRUST[key] = bool(run and home and run.info.experiment_id == home.experiment_id)
        if not _TRUST[key]:
            log.warning("%s v%s was not registered by the trainer: not trusted", model.name, version)
    return _TRUST[key]


def champion_version(client: Any, pair: str, prefix: str = MODEL_PREFIX) -> Any | None:
    """The champion ModelVersion of a pair, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model_name(pair, prefix), CHAMPION)
    except MlflowException:
        return None


def recent_versions(
    client: Any, pair: str, prefix: str = MODEL_PREFIX, limit: int = 10
) -> list[TrainingResult]:
    """The newest ``limit`` versions of a pair, newest first, each described from its tags."""
    newest = client.search_model_versions(
        f"name = '{model_name(pair, prefix)}'", max_results=limit, order_by=["version_number DESC"]
    )
    champion = champion_version(client, pair, prefix)  # search results carry no aliases: one look-up
    results = [version_result(v, prefix) for v in newest]
    return [
        r.model_copy(update={"alias": CHAMPION, "aliases": [CHAMPION]})
        if champion is not None and r.version == int(champion.version)
        else r
        for r in results
    ]


def tag_time(text: str) -> datetime:
    """A tag's ISO time as an aware datetime (:func:`mur.timeutil.parse_time`, never None here)."""
    from mur.timeutil import parse_time

    parsed = parse_time(text)
    assert parsed is not None
    return parsed
