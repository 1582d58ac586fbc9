"""SHA-256 of each registered ONNX artefact, the second line behind the object store's keys.

Recorded at registration as the version tag :data:`TAG` (:func:`mur.registry.versions.log_and_register`: the
digest of the serialized graph that ``mlflow.onnx.log_model`` writes as ``model.onnx``) and checked whenever a
version's bytes are fetched (:func:`mur.registry.download.model_bytes`): Serve never loads a version whose
bytes differ, keeps the previous champion serving, and raises an alert naming the pair and version
(:func:`refused`). ``mur models verify [PAIR]`` checks every served version. A version registered before
checksums has no tag: it loads unchecked, and ``mur models verify`` says so.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING

from mur.errors import ModelError, RegistryUnavailableError, first_line
from mur.registry.names import model_name

if TYPE_CHECKING:
    from mur.settings import Settings

log = logging.getLogger(__name__)
TAG = "onnx_sha256"


class ChecksumError(ModelError):
    """A registered version's ONNX bytes differ from the SHA-256 recorded at its registration."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check(data: bytes, expected: str | None, what: str) -> bytes:
    """``data`` if ``expected`` is None or its digest; else :class:`ChecksumError` naming ``what``."""
    actual = sha256(data)
    if expected is not None and actual != expected:
        raise ChecksumError(f"{what}: SHA-256 {actual} differs from {expected}, recorded at its registration")
    return data


def recorded(settings: Settings, pair: str, version: int) -> str | None:
    """The SHA-256 recorded on ``pair`` ``version`` (None: registered before checksums)."""
    from mur.registry.client import configure

    name = model_name(pair, settings.registry.registry_prefix)
    try:
        found = configure(settings).get_model_version(name, str(version))  # with this process's account
    except Exception as exc:  # MlflowException, requests errors
        raise RegistryUnavailableError(f"cannot read {name} v{version}: {first_line(exc, 300)}") from exc
    return (found.tags or {}).get(TAG)


def refused(settings: Settings, pair: str, version: int, error: ChecksumError) -> None:
    """The alert for a version Serve refused to load: an error in the log and a Discord message."""
    from mur.orchestration.alerts import Alert, send

    title = f"Serve refused {pair} v{version}: its ONNX bytes differ from the registered checksum"
    log.error("%s (%s); the previous champion keeps serving", title, error)
    send(
        Alert(title=title, dag_id="serve", run_id="registry watcher", pair=pair, reason=str(error)), settings
    )
