"""The one way to fetch a registered ONNX model from MLflow (and the S3 store behind it) as bytes."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from mur.errors import ModelError, RegistryUnavailableError, first_line

if TYPE_CHECKING:
    from mur.settings import Settings


def onnx_bytes(uri: str, sha256: str | None = None) -> bytes:
    """The ONNX model at ``uri`` (``models:/NAME/VERSION``, ``models:/NAME@alias``, ``runs:/...``) as one
    self-contained serialized graph.

    ``mlflow.onnx.log_model`` stores weights above 1 KiB in a side file by default; those are folded back
    in here, since onnxruntime cannot resolve external data for a model loaded from bytes. With ``sha256``
    (recorded at registration) the file's bytes must have that digest (ChecksumError otherwise), and only
    that file is fetched (``URI/model.onnx``: not the six other files MLflow keeps beside it, a request each).
    Raises RegistryUnavailableError when MLflow/S3 does not answer, ModelError for a broken artefact.
    """
    from mur.registry.checksums import check

    with tempfile.TemporaryDirectory() as tmp:
        try:
            import mlflow

            wanted = f"{uri}/model.onnx" if sha256 is not None and uri.startswith("models:/") else uri
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=wanted, dst_path=tmp))
        except Exception as exc:  # MlflowException, botocore and requests errors alike
            raise RegistryUnavailableError(f"cannot download {uri}: {first_line(exc, 300)}") from exc
        files = [local] if local.is_file() else sorted(local.rglob("*.onnx"))
        if not files:
            raise ModelError(f"{uri} has no .onnx file")
        raw = check(files[0].read_bytes(), sha256, uri)
        if local.is_file() or sha256 is not None:  # a checksum is recorded for one self-contained file
            return raw
        import onnx

        try:
            return onnx.load(str(files[0]), load_external_data=True).SerializeToString()
        except Exception as exc:
            raise ModelError(f"cannot read {uri}: {first_line(exc, 300)}") from exc


def model_bytes(settings: Settings, pair: str, version: int) -> bytes:
    """Version ``version`` of ``pair``'s registered model (``{prefix}{pair}``), see :func:`onnx_bytes`,
    checked against the SHA-256 recorded at its registration (:mod:`mur.registry.checksums`)."""
    from mur.registry.checksums import recorded
    from mur.registry.names import version_uri

    expected = recorded(settings, pair, version)
    return onnx_bytes(version_uri(pair, version, settings.registry.registry_prefix), expected)
