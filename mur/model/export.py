"""ONNX export with the normalization folded into the graph.

The exported model takes raw features ``(batch, seq_len, 9)`` float32 (see :mod:`mur.model.features` for the
column contract) and returns the raw next-hour close ``(batch, 1)``. It is one self-contained ``.onnx``
file (weights embedded), validated with ``onnx.checker`` and against the torch model in onnxruntime.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mur.errors import ModelError
from mur.model.features import CALENDAR_DOMAIN, CLOSE_IDX, FeatureSpec

INPUT_NAME = "candles"
OUTPUT_NAME = "next_close"
RTOL, ATOL = 1e-3, 1e-5


class NormalizedForecaster(nn.Module):
    """Raw features → normalization → recurrent core → de-normalized next close (all in one graph)."""

    lo: torch.Tensor
    span: torch.Tensor

    def __init__(self, core: nn.Module, spec: FeatureSpec) -> None:
        super().__init__()
        self.core = core
        self.reference = spec.normalization == "reference"
        self.scale = float(spec.relative_scale)
        if self.reference:
            lo = torch.tensor(spec.col_min, dtype=torch.float32)
            hi = torch.tensor(spec.col_max, dtype=torch.float32)
        else:
            lo = torch.tensor([d[0] for d in CALENDAR_DOMAIN], dtype=torch.float32)
            hi = torch.tensor([d[1] for d in CALENDAR_DOMAIN], dtype=torch.float32)
        span = torch.where(hi - lo == 0, torch.ones_like(hi), hi - lo)
        self.register_buffer("lo", lo)
        self.register_buffer("span", span)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reference:
            z = 2.0 * (x - self.lo) / self.span - 1.0
            out = self.core(z)
            return (out + 1.0) / 2.0 * self.span[CLOSE_IDX] + self.lo[CLOSE_IDX]
        last = x[:, -1:, CLOSE_IDX : CLOSE_IDX + 1]  # (B, 1, 1)
        cal = 2.0 * (x[..., :4] - self.lo) / self.span - 1.0
        prices = (x[..., 4:8] / last - 1.0) * self.scale
        spread = x[..., 8:9] / last * self.scale
        out = self.core(torch.cat([cal, prices, spread], dim=-1))  # (B, 1)
        return last[:, 0, :] * (1.0 + out / self.scale)


def export_onnx(core: nn.Module, spec: FeatureSpec, path: Path, sample: np.ndarray) -> Path:
    """Export ``core`` with ``spec`` folded in to a single ``.onnx`` file and validate it.

    ``sample`` is a batch of raw windows used for the onnxruntime-vs-torch check; a mismatch beyond
    rtol=1e-3/atol=1e-5 (relative to the price scale) raises :class:`ModelError`.
    """
    import onnx

    wrapper = NormalizedForecaster(core, spec).eval()
    example = torch.from_numpy(np.ascontiguousarray(sample[:1], dtype=np.float32))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # the LSTM batch-size warning does not apply: the graph is validated at batch 64 below
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(
            wrapper,
            (example,),
            buf,  # type: ignore[arg-type]  # the TorchScript exporter (dynamo=False) writes to file objects too
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    model = onnx.load_from_string(buf.getvalue())
    model.doc_string = (
        f"Make Us Rich next-hour close forecaster. Input '{INPUT_NAME}': float32 (batch, {spec.seq_len}, 9) raw "
        "features [day_of_week(Mon=0), day_of_month, iso_week, month, open, high, low, close, close-open], "
        f"oldest first. Output '{OUTPUT_NAME}': float32 (batch, 1) next close. normalization={spec.normalization}"
    )
    onnx.checker.check_model(model, full_check=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path), save_as_external_data=False)
    validate_against_torch(path, wrapper, sample)
    return path


def validate_against_torch(path: Path, wrapper: nn.Module, sample: np.ndarray) -> float:
    """Compare onnxruntime with torch on ``sample``; return the max abs error or raise ModelError."""
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    with torch.no_grad():
        expected = wrapper.eval()(torch.from_numpy(sample)).numpy()
    got = load_session(path).run(None, {INPUT_NAME: sample})[0]
    # Prices are O(1e4); compare in the normalized (relative) space so atol is meaningful.
    last = sample[:, -1, CLOSE_IDX : CLOSE_IDX + 1]
    exp_rel, got_rel = expected / last, got / last
    if not np.allclose(got_rel, exp_rel, rtol=RTOL, atol=ATOL):
        err = float(np.max(np.abs(got_rel - exp_rel)))
        raise ModelError(
            f"ONNX export does not match torch (max relative error {err:.2e}); refusing to save it"
        )
    return float(np.max(np.abs(got - expected)))


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
        raise ModelError(f"cannot load ONNX model from {where}: {str(exc).splitlines()[0][:200]}") from exc


def run_session(session, windows: np.ndarray) -> np.ndarray:
    """Next-close forecasts ``(n,)`` for raw windows ``(n, seq_len, 9)``."""
    x = np.ascontiguousarray(windows, dtype=np.float32)
    return session.run(None, {INPUT_NAME: x})[0].reshape(-1).astype(np.float64)
