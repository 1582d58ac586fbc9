"""A champion version loaded in an onnxruntime session, and what the API reports about it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from mur.serving.contract import ModelMetricsOut
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
    features: tuple[str, ...] = ()
    """The model's input columns (metadata ``mur.features``): build windows with these."""
    horizons: tuple[int, ...] = ()
    quantile_levels: tuple[float, ...] = ()
    calibration_recipe: str | None = None
    """The offline calibration of the graph's ranges (metadata ``mur.calibration_recipe``; None: older model)."""

    @classmethod
    def from_bytes(cls, pair: str, version: int, data: bytes, summary: Mapping[str, Any]) -> LoadedModel:
        """Open the ONNX bytes in onnxruntime, read the window length and warm the session up once."""
        from mur.model.export import load_session, model_metadata, run_forecast
        from mur.model.inference import model_seq_len

        session = load_session(data)
        seq_len = model_seq_len(session)
        meta = model_metadata(session)
        warm = np.ones((1, seq_len, len(meta["features"])), dtype=np.float32)
        warm[..., 0] = 0.0
        run_forecast(session, warm)
        return cls(
            pair,
            int(version),
            session,
            seq_len,
            dict(summary),
            datetime.now(UTC),
            features=tuple(meta["features"]),
            horizons=tuple(meta["horizons"]),
            quantile_levels=tuple(meta["quantile_levels"]),
            calibration_recipe=meta.get("calibration_recipe"),
        )

    def window(self, candles: Any) -> np.ndarray:
        """This model's ``(seq_len, n_features)`` input for the last ``seq_len`` of ``candles``."""
        from mur.model.inference import window_from_candles

        return window_from_candles(candles, self.seq_len, self.features)

    def forecast(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(next close (n,), price quantiles (n, H, L) or None)`` in one onnxruntime call."""
        from mur.model.export import run_forecast

        return run_forecast(self.session, windows)

    def horizon_rows(self, quantiles: np.ndarray | None, candle_time: Any) -> list[dict[str, Any]]:
        """The body's ``horizons`` for one window's quantiles ``(H, L)``."""
        from mur.model.inference import horizon_rows

        return horizon_rows(quantiles, self.horizons, self.quantile_levels, candle_time)

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
            "features": list(self.features),
            "horizons": list(self.horizons),
            "quantile_levels": list(self.quantile_levels),
            "trained_window": s.get("data_window"),
            "test_window": metrics.get("test_window"),
            # every field of ModelMetricsOut from the version's metrics, but its MAE and skill from the summary
            "metrics": {k: metrics.get(k) for k in ModelMetricsOut.model_fields}
            | {"mae": s.get("mae"), "skill": s.get("skill")},
            "gate": {"rule": s.get("gate_rule"), "reason": s.get("reason"), "kind": s.get("kind")},
            "run_id": s.get("run_id"),
            "loaded_at": iso(self.loaded_at),
        }
