"""The MLflow model registry: names (:mod:`.names`), the promotion gate (:mod:`.gate`), logging,
registration and look-ups of versions (:mod:`.versions`), the one ONNX download (:mod:`.download`).

Callers import from here; the submodules import each other, never this package.
"""

from mur.registry.client import configure, git_commit
from mur.registry.gate import Decision, Evidence, decide
from mur.registry.names import (
    BACKFILL,
    CHALLENGER,
    CHAMPION,
    MODEL_PREFIX,
    champion_uri,
    model_name,
    version_uri,
)
from mur.registry.versions import (
    champion_evidence,
    champion_version,
    find_version,
    log_and_register,
    registered_pairs,
    version_result,
    version_summary,
)

__all__ = [
    "BACKFILL",
    "CHALLENGER",
    "CHAMPION",
    "MODEL_PREFIX",
    "Decision",
    "Evidence",
    "champion_evidence",
    "champion_uri",
    "champion_version",
    "configure",
    "decide",
    "find_version",
    "git_commit",
    "log_and_register",
    "model_name",
    "registered_pairs",
    "version_result",
    "version_summary",
    "version_uri",
]
