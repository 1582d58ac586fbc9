"""ONNX export: the whole forecaster (normalization, volatility structure, recurrent core, calibration) in
one graph.

Contract (README, "ONNX model"): input ``candles`` float32 ``(batch, seq_len, n_features)``, raw candles
oldest first, one column per name in the metadata ``mur.features``; outputs ``next_close`` float32
``(batch, 1)`` (the 1 h median) and ``quantiles`` float32 ``(batch, n_horizons, n_levels)`` (raw price levels,
non-decreasing along the last axis) for the hours in ``mur.horizons`` and the levels in
``mur.quantile_levels``. One self-contained file (weights embedded, no pickle), validated with
``onnx.checker`` and against the torch model in onnxruntime.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mur.errors import ModelError, first_line
from mur.model.features import CLOSE_IDX, FEATURE_NAMES
from mur.model.network import QuantileForecaster

INPUT_NAME = "candles"
OUTPUT_NAME = "next_close"
QUANTILES_NAME = "quantiles"
RTOL, ATOL = 1e-3, 1e-5
META_FEATURES, META_HORIZONS, META_LEVELS = "mur.features", "mur.horizons", "mur.quantile_levels"
META_CALIBRATION = "mur.calibration"
META_RECIPE = "mur.calibration_recipe"
"""Which offline calibration made the graph's ranges (the online scale's generation, docs/forecasts.md)."""


class CalibratedForecaster(nn.Module):
    """The trained quantile model with its conformal calibration folded in, answering in prices.

    Every level's distance from the median is multiplied by the horizon's calibration factor ``k_h``
    (:func:`mur.evaluation.intervals.block_conformal_scale`), so the outer interval reaches its nominal coverage
    on data the model did not fit and the quantiles stay ordered (``k_h > 0``).
    """

    scale: torch.Tensor

    def __init__(self, net: QuantileForecaster, scale: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.mid = int(net.cfg.median_index)
        self.register_buffer("scale", torch.tensor(list(scale), dtype=torch.float32).view(1, -1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.net(x)  # (B, H, L) log returns, percent
        med = q[:, :, self.mid : self.mid + 1]
        calibrated = med + self.scale * (q - med)
        last = x[:, -1, CLOSE_IDX].reshape(-1, 1, 1)
        prices = last * torch.exp(calibrated / 100.0)
        return prices[:, 0, self.mid : self.mid + 1], prices


def export_onnx(model: CalibratedForecaster, path: Path, sample: np.ndarray) -> Path:
    """Export ``model`` to a single ``.onnx`` file with the contract's metadata, and validate it.

    ``sample`` is a batch of raw windows used for the onnxruntime-vs-torch check; a mismatch beyond
    rtol=1e-3/atol=1e-5 (relative to the last close) raises :class:`ModelError`.
    """
    import onnx

    from mur.evaluation.intervals import CALIBRATION_RECIPE

    cfg = model.net.cfg
    model = model.eval()
    example = torch.from_numpy(np.ascontiguousarray(sample[:1], dtype=np.float32))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # the LSTM batch-size warning does not apply: the graph is validated at batch 64 below
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            buf,  # type: ignore[arg-type]  # the TorchScript exporter (dynamo=False) writes to file objects too
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME, QUANTILES_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}, QUANTILES_NAME: {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    proto = onnx.load_from_string(buf.getvalue())
    names = list(cfg.feature_names)
    proto.doc_string = (
        f"Make Us Rich quantile forecaster. Input '{INPUT_NAME}': float32 (batch, {cfg.input_len}, {len(names)}) "
        f"raw candles, oldest first, columns {names}. Outputs '{OUTPUT_NAME}' float32 (batch, 1): next-hour "
        f"close (1 h median); '{QUANTILES_NAME}' float32 (batch, {len(cfg.horizons)}, {len(cfg.quantile_levels)}): "
        f"price quantiles for horizons {list(cfg.horizons)} h at levels {list(cfg.quantile_levels)}."
    )
    meta = {
        META_FEATURES: json.dumps(names),
        META_HORIZONS: json.dumps(list(cfg.horizons)),
        META_LEVELS: json.dumps(list(cfg.quantile_levels)),
        META_CALIBRATION: json.dumps([round(float(k), 6) for k in model.scale.reshape(-1).tolist()]),
        META_RECIPE: json.dumps(CALIBRATION_RECIPE),
        "mur.arch": cfg.arch,
        "mur.normalization": cfg.normalization,
    }
    onnx.helper.set_model_props(proto, meta)  # the exporter writes none of its own
    onnx.checker.check_model(proto, full_check=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(path), save_as_external_data=False)
    validate_against_torch(path, model, sample)
    return path


def validate_against_torch(path: Path, wrapper: nn.Module, sample: np.ndarray) -> float:
    """Compare onnxruntime with torch on ``sample`` (both outputs); return the max abs error or raise."""
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    with torch.no_grad():
        expected = [t.numpy() for t in wrapper.eval()(torch.from_numpy(sample))]
    got = load_session(path).run(None, {INPUT_NAME: sample})
    # Prices are O(1e4); compare relative to the last close so atol is meaningful.
    last = sample[:, -1, CLOSE_IDX].astype(np.float64)
    worst = 0.0
    for exp, out in zip(expected, got, strict=True):
        scale = last.reshape((-1,) + (1,) * (exp.ndim - 1))
        exp_rel, got_rel = exp / scale, out / scale
        if not np.allclose(got_rel, exp_rel, rtol=RTOL, atol=ATOL):
            err = float(np.max(np.abs(got_rel - exp_rel)))
            raise ModelError(
                f"ONNX export does not match torch (max relative error {err:.2e}); refusing to save it"
            )
        worst = max(worst, float(np.max(np.abs(out - exp))))
    return worst


def load_session(path: Path | str | bytes):
    """An onnxruntime CPU session for a model file or serialized bytes; unreadable → ModelError."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        src = path if isinstance(path, bytes) else str(path)
        return ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several unrelated types
        where = "model bytes" if isinstance(path, bytes) else f"'{path}'"
        raise ModelError(f"cannot load ONNX model from {where}: {first_line(exc, 200)}") from exc


def run_session(session: Any, windows: np.ndarray) -> np.ndarray:
    """Next-close forecasts ``(n,)`` for raw windows ``(n, seq_len, n_features)``."""
    x = np.ascontiguousarray(windows, dtype=np.float32)
    return session.run([OUTPUT_NAME], {INPUT_NAME: x})[0].reshape(-1).astype(np.float64)


def run_forecast(session: Any, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``(next_close (n,), quantiles (n, H, L) or None)`` from one onnxruntime call (None: a point-only
    model from before quantiles existed)."""
    x = np.ascontiguousarray(windows, dtype=np.float32)
    if QUANTILES_NAME not in {o.name for o in session.get_outputs()}:
        return run_session(session, x), None
    point, quantiles = session.run([OUTPUT_NAME, QUANTILES_NAME], {INPUT_NAME: x})
    return point.reshape(-1).astype(np.float64), quantiles.astype(np.float64)


def model_metadata(session: Any) -> dict[str, Any]:
    """The contract's metadata of a session: ``features``, ``horizons``, ``quantile_levels``, ``calibration``,
    ``calibration_recipe`` (None for a model exported before it was written; a point-only model: the
    reference features and no horizons)."""
    props = session.get_modelmeta().custom_metadata_map or {}

    def read(key: str, default: Any) -> Any:
        try:
            return json.loads(props[key]) if key in props else default
        except ValueError as exc:
            raise ModelError(f"model metadata {key!r} is not JSON: {props[key][:80]!r}") from exc

    return {
        "features": [str(f) for f in read(META_FEATURES, list(FEATURE_NAMES))],
        "horizons": [int(h) for h in read(META_HORIZONS, [])],
        "quantile_levels": [float(q) for q in read(META_LEVELS, [])],
        "calibration": [float(k) for k in read(META_CALIBRATION, [])],
        "calibration_recipe": None if (recipe := read(META_RECIPE, None)) is None else str(recipe),
    }
