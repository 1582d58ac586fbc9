"""Retention of registered versions (docs/services.md, "Bounded disk and memory"). After each training a pair
keeps its newest ``MUR_KEEP_VERSIONS`` versions, every version an alias names (champion, challenger, shadows),
and the versions of its last ``MUR_KEEP_VERSIONS`` champion moves (rollback targets: the alias history, and
the gate's promotions tagged before it). An older version is deleted from the registry, then its run and
logged model with their artefacts (the ONNX model, ``weights.npz``, the metrics document). Its forecasts stay
in the track record; its number is never reused (MLflow numbers on after the highest, deleted or not).
"""

from __future__ import annotations

import logging
from typing import Any

from mur.db.alias_history import list_moves
from mur.db.pool import Database
from mur.errors import first_line
from mur.registry.names import CHAMPION, model_name
from mur.settings import Settings

log = logging.getLogger(__name__)


def kept_versions(versions: list[Any], aliased: set[int], moved: set[int], keep: int) -> set[int]:
    """The version numbers retention keeps of ``versions`` (MLflow ModelVersions)."""
    newest = sorted((int(v.version) for v in versions), reverse=True)
    # gate promotions from before the alias history
    promoted = [int(v.version) for v in versions if (v.tags or {}).get("gate_alias") == CHAMPION]
    return set(newest[:keep]) | aliased | moved | set(sorted(promoted, reverse=True)[:keep])


def prune_versions(settings: Settings, client: Any, pair: str) -> list[int]:
    """Delete ``pair``'s versions that retention does not keep; returns their numbers. Never raises: a
    version that could not be deleted is logged and tried again after the next training."""
    keep = settings.registry.keep_versions
    if keep <= 0:
        return []
    name = model_name(pair, settings.registry.registry_prefix)
    try:
        versions = list(client.search_model_versions(f"name = '{name}'"))
        if len(versions) <= keep:
            return []
        aliased = {
            int(v) for v in (getattr(client.get_registered_model(name), "aliases", None) or {}).values()
        }
        with Database(settings, maxconn=1, pool_timeout_s=10.0) as db:
            moves = list_moves(db, pair, limit=keep)
        moved = {v for m in moves for v in (m.version, m.previous_version) if v is not None}
        kept = kept_versions(versions, aliased, moved, keep)
    except Exception as exc:  # what to keep is unknown: delete nothing
        log.warning("%s: retention skipped: %s", name, first_line(exc))
        return []
    deleted = []
    for version in sorted((v for v in versions if int(v.version) not in kept), key=lambda v: int(v.version)):
        try:
            delete_version(client, name, version)
        except Exception as exc:
            log.warning("%s v%s: not deleted by retention: %s", name, version.version, first_line(exc))
            break
        deleted.append(int(version.version))
    if deleted:
        log.info("%s: retention deleted v%s (keeps %d)", name, ", v".join(map(str, deleted)), keep)
    return deleted


def delete_version(client: Any, name: str, version: Any) -> None:
    """Unregister ``version``, then delete its run and logged model with their artefacts (in that order: a
    failure leaves unreferenced objects behind, never a registered version without its model)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    client.delete_model_version(name, str(version.version))
    model_id = getattr(version, "model_id", None)
    # MLflow 3 leaves it empty in answers: the source names it
    if not model_id and str(version.source).startswith("models:/m-"):
        model_id = version.source.removeprefix("models:/")
    if model_id:
        get_artifact_repository(client.get_logged_model(model_id).artifact_location).delete_artifacts()
        client.delete_logged_model(model_id)
    if version.run_id:
        get_artifact_repository(client.get_run(version.run_id).info.artifact_uri).delete_artifacts()
        client.delete_run(version.run_id)
