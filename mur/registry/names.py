"""Registered model names and aliases: ``{prefix}{pair}`` (``settings.registry.registry_prefix``, default ``mur-``)."""

from __future__ import annotations

from collections.abc import Mapping

CHAMPION, CHALLENGER = "champion", "challenger"
BACKFILL = "backfill"
"""Not an alias: the gate's verdict for a version trained on data older than the champion's."""
MODEL_PREFIX = "mur-"
NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})
"""MLflow error codes that mean "no such model, version or alias" (not "the registry is down")."""
WEIGHTS_ARTIFACT = "weights.npz"
"""The run artefact with a version's recurrent weights (plain arrays, no pickle) for warm starts."""


def model_name(pair: str, prefix: str = MODEL_PREFIX) -> str:
    """Registered model name for a pair (``settings.registry.registry_prefix`` + pair)."""
    return f"{prefix}{pair}"


def version_uri(pair: str, version: int | str, prefix: str = MODEL_PREFIX) -> str:
    """``models:/mur-{pair}/{version}``."""
    return f"models:/{model_name(pair, prefix)}/{int(version)}"


SHADOW_ALIAS_PREFIX = "shadow-v"
"""A version served in shadow carries the alias ``shadow-v{version}`` (one per version: MLflow aliases are
unique per model; an admin marks a version by adding one, in MLflow or with ``mur models shadow``)."""


def shadow_alias(version: int | str) -> str:
    return f"{SHADOW_ALIAS_PREFIX}{int(version)}"


def shadow_versions(aliases: Mapping[str, int | str]) -> list[int]:
    """The versions a model's ``{alias: version}`` serves in shadow, newest first."""
    return sorted({int(v) for a, v in aliases.items() if a.startswith(SHADOW_ALIAS_PREFIX)}, reverse=True)
