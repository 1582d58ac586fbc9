"""The last known champions on disk: their summaries and ONNX files, under the runtime directory.

The registry watcher writes them after every successful registry poll; the app builder and a fresh watcher
read them when MLflow does not answer, so that redeploying the Serve app (``mur serve``, the keeper, a new
pair) while MLflow is down builds and serves what was served before instead of failing. Writes are atomic
(temporary file, then rename); a store that cannot be written is logged, never fatal.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mur.pairs import PAIR_RE

if TYPE_CHECKING:
    from mur.settings import Settings

log = logging.getLogger("mur.serving")
STORE_DIR = "serve-champions"
"""Under ``settings.general.runtime_dir``; one folder per registry prefix."""


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ChampionStore:
    """Champion summaries (``champions.json``) and ONNX files (``{pair}-v{version}.onnx``) of one prefix."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._summaries = directory / "champions.json"

    @classmethod
    def for_settings(cls, settings: Settings) -> ChampionStore:
        """The store of ``settings.registry.registry_prefix`` under ``settings.general.runtime_dir``."""
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", settings.registry.registry_prefix) or "_"
        return cls(Path(settings.general.runtime_dir) / STORE_DIR / safe)

    def _model_path(self, pair: str, version: int) -> Path:
        if not PAIR_RE.match(pair):
            raise ValueError(f"not a pair: {pair!r}")
        return self.directory / f"{pair}-v{int(version)}.onnx"

    def save_champions(self, found: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace the stored summaries with ``found`` (``{pair: version summary}``)."""
        try:
            _write_atomic(self._summaries, json.dumps(found, default=str, sort_keys=True).encode())
        except OSError as exc:
            log.warning("cannot store the champions in %s: %s", self.directory, exc)

    def champions(self, pairs: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """The stored summaries (only ``pairs`` when given); ``{}`` when none are stored or readable."""
        try:
            data = json.loads(self._summaries.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        wanted = None if pairs is None else set(pairs)
        return {
            p: dict(s)
            for p, s in data.items()
            if isinstance(s, dict) and "version" in s and PAIR_RE.match(p) and (wanted is None or p in wanted)
        }

    def save_models(self, models: Mapping[tuple[str, int], bytes]) -> None:
        """Keep exactly the ONNX files of ``models`` (``{(pair, version): bytes}``): write the ones not stored
        yet, delete the others."""
        wanted = {self._model_path(pair, version): data for (pair, version), data in models.items()}
        for path, data in wanted.items():
            try:
                if not path.exists():
                    _write_atomic(path, data)
            except OSError as exc:
                log.warning("cannot store %s: %s", path, exc)
        for path in self.directory.glob("*.onnx"):
            if path not in wanted:
                path.unlink(missing_ok=True)

    def model(self, pair: str, version: int) -> bytes | None:
        """The stored ONNX file of ``pair`` ``version``, or None."""
        try:
            return self._model_path(pair, version).read_bytes()
        except OSError:
            return None
