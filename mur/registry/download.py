"""The one way to fetch a registered ONNX model from MLflow (and the S3 store behind it) as bytes."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from mur.errors import ModelError, RegistryUnavailableError, first_line

if TYPE_CHECKING:
    from mur.settings import Settings


def onnx_bytes(uri: str) -> bytes:
    """The ONNX model at ``uri`` (``models:/NAME/VERSION``, ``models:/NAME@alias``, ``runs:/...``) as one
    self-contained serialized graph.

    ``mlflow.onnx.log_model`` stores weights above 1 KiB in a side file by default; those are folded back
    in here, since onnxruntime cannot resolve external data for a model loaded from bytes.
    Raises RegistryUnavailableError when MLflow/S3 does not answer, ModelError for a broken artefact.
    """
    with tempfile.TemporaryDirectory() as tmp:
        try:
            import mlflow

            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        except Exception as exc:  # MlflowException, botocore and requests errors alike
            raise RegistryUnavailableError(f"cannot download {uri}: {first_line(exc, 300)}") from exc
        files = [local] if local.is_file() else sorted(local.rglob("*.onnx"))
        if not files:
            raise ModelError(f"{uri} has no .onnx file")
        if local.is_file():
            return local.read_bytes()
        import onnx

        try:
            return onnx.load(str(files[0]), load_external_data=True).SerializeToString()
        except Exception as exc:
            raise ModelError(f"cannot read {uri}: {first_line(exc, 300)}") from exc


def model_bytes(settings: Settings, pair: str, version: int) -> bytes:
    """Version ``version`` of ``pair``'s registered model (``{prefix}{pair}``), see :func:`onnx_bytes`."""
    from mur.registry.names import version_uri

    return onnx_bytes(version_uri(pair, version, settings.registry.registry_prefix))
