"""A champion version loaded in an onnxruntime session, and what the API reports about it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from mur.timeutil import iso


@dataclass(frozen=True)
class LoadedModel:
    """One champion version in an onnxruntime session, with what the API reports about it."""

    pair: str
    version: int
    session: Any
    seq_len: int
    summary: dict[str, Any]
    loaded_at: datetime

    @classmethod
    def from_bytes(cls, pair: str, version: int, data: bytes, summary: Mapping[str, Any]) -> LoadedModel:
        """Open the ONNX bytes in onnxruntime, read the window length and warm the session up once."""
        from mur.model.export import load_session, run_session
        from mur.model.features import N_FEATURES
        from mur.model.inference import model_seq_len

        session = load_session(data)
        seq_len = model_seq_len(session)
        warm = np.ones((1, seq_len, N_FEATURES), dtype=np.float32)
        warm[..., 0] = 0.0
        run_session(session, warm)
        return cls(pair, int(version), session, seq_len, dict(summary), datetime.now(UTC))

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Forecasts ``(n,)`` for windows ``(n, seq_len, 9)`` in one onnxruntime call."""
        from mur.model.export import run_session

        return run_session(self.session, windows)

    def describe(self) -> dict[str, Any]:
        """What GET /v1/models shows: version, alias, trained window, test metrics incl. skill."""
        s = self.summary
        metrics = dict(s.get("metrics") or {})
        return {
            "pair": self.pair,
            "model_name": s.get("model_name"),
            "version": self.version,
            "alias": s.get("alias", "champion"),
            "aliases": s.get("aliases", []),
            "seq_len": self.seq_len,
            "trained_window": s.get("data_window"),
            "test_window": metrics.get("test_window"),
            "metrics": {
                "mae": s.get("mae"),
                "skill": s.get("skill"),
                "model": metrics.get("model"),
                "persistence": metrics.get("persistence"),
                "linear": metrics.get("linear"),
                "n_test": metrics.get("n_test"),
                "significance": metrics.get("significance"),
            },
            "gate": {"rule": s.get("gate_rule"), "reason": s.get("reason"), "kind": s.get("kind")},
            "run_id": s.get("run_id"),
            "loaded_at": iso(self.loaded_at),
        }
