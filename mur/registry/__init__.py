"""The MLflow model registry: names (:mod:`.names`), the promotion gate (:mod:`.gate`), logging,
registration and look-ups of versions (:mod:`.versions`), the one ONNX download (:mod:`.download`).

Callers import the common names from here, the rest from the submodules; the submodules import each other,
never this package.
"""

from mur.registry.client import configure
from mur.registry.names import CHALLENGER, CHAMPION, model_name
from mur.registry.versions import registered_pairs, version_result

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "configure",
    "model_name",
    "registered_pairs",
    "version_result",
]
