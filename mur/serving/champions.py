"""Champion models in the MLflow registry: which pairs have one, and whether the registry and the artefact
store behind it answer (blocking; MLflow imported lazily). The ONNX download is
:func:`mur.registry.download.model_bytes`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from mur.errors import RegistryUnavailableError, first_line
from mur.pairs import PAIR_RE, normalize_pair
from mur.registry.names import NOT_FOUND_CODES, shadow_versions

if TYPE_CHECKING:
    from mur.settings import Settings


def registry_client(settings: Settings, *, timeout_s: float = 10.0) -> Any:
    """An MlflowClient that fails fast (MLflow's default retries take minutes when the server is down)."""
    from mur import registry

    return registry.configure(settings, fail_fast_s=timeout_s)


def champions(
    client: Any,
    *,
    prefix: str,
    experiment: str,
    pairs: Iterable[str] | None = None,
    known: Mapping[tuple[str, int], Mapping[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """``{pair: version summary}`` for every registered ``{prefix}{pair}`` that has a champion alias made by
    ``experiment``'s runs (the trainer's), with
    ``shadows``: the versions served in shadow beside it, newest first.

    Only names that are valid pairs after the prefix count (so ``mur-test-x-btc_usdt`` is not a pair of
    the ``mur-`` registry). ``known``: summaries already read, by ``(pair, version)``; the search answers
    every model's aliases, so a champion found there costs no further request (a poller's steady state is
    one search for any number of pairs; a version's tags are final before the gate sets an alias). Raises
    :class:`RegistryUnavailableError` when MLflow does not answer, so that "unreachable" is never mistaken
    for "no champion".
    """
    from mlflow.exceptions import MlflowException

    from mur import registry

    wanted = {normalize_pair(p) for p in pairs} if pairs is not None else None
    try:
        models = registry.registered_pairs(client, prefix, experiment)
    except MlflowException as exc:
        raise RegistryUnavailableError(f"model registry unreachable: {first_line(exc, 300)}") from exc
    found: dict[str, dict[str, Any]] = {}
    for pair, aliases in models.items():
        number = aliases.get(registry.CHAMPION)
        if number is None or not PAIR_RE.match(pair) or (wanted is not None and pair not in wanted):
            continue
        shadows = [v for v in shadow_versions(aliases) if v != number]
        if known is not None and (pair, number) in known:
            found[pair] = dict(known[(pair, number)]) | {"shadows": shadows}
            continue
        try:
            version = client.get_model_version_by_alias(registry.model_name(pair, prefix), registry.CHAMPION)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") in NOT_FOUND_CODES:
                continue
            raise RegistryUnavailableError(f"model registry unreachable: {first_line(exc, 300)}") from exc
        found[pair] = registry.version_result(version, prefix).model_dump(mode="json") | {"shadows": shadows}
    return found


def probe_artifacts(client: Any, run_id: str | None) -> None:
    """List a run's artefacts: proves the artefact store (S3, proxied by MLflow) answers."""
    if not run_id:
        return
    try:
        client.list_artifacts(run_id)
    except Exception as exc:  # MlflowException (S3 error proxied as HTTP 500), requests errors
        raise RegistryUnavailableError(f"artifact store unreachable: {first_line(exc, 300)}") from exc
