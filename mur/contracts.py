"""Data that crosses a process boundary, as pydantic models used on both sides.

* :class:`MetricsDocument`: what ``metrics.json`` holds, what a training logs to its MLflow run, and what
  Serve's ``/v1/models`` reports about a registered version (rebuilt from the version's tags by
  :meth:`MetricsDocument.from_version_tags`). Field names are those of the JSON document (README,
  "metrics.json").
* :class:`TrainingResult`: what one training returns: in a Ray job's result document
  (:class:`TrainingResults`, left in S3 under the job's submission id: :mod:`mur.orchestration.job_submission`),
  the CLI's output, and, compacted to ids and two metrics (:class:`CompactResult`), the XCom the DAG passes.

Import-light on purpose (pydantic and the standard library only): the DAG file's imports reach it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer


def json_ready(value: Any) -> Any:
    """``value`` as JSON can carry it: numpy scalars as numbers, non-finite numbers (an unknown standard error
    is ``inf``, the Sharpe ratio of a flat series NaN) as null, at any depth."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def digest(value: Any, length: int) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``value`` as JSON with sorted keys (same value →
    same digest): the idempotency key, a search's id, the warm start's architecture key."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:length]


VERSION_TAG_KEYS = (
    "model",
    "persistence",
    "linear",
    "skill",
    "test_window",
    "n_test",
    "significance",
    "quantile_levels",
    "interval_skill",
    "coverage",
    "horizons",
)
"""The part of a metrics document stored on a registered version (tag ``metrics_json``)."""
PREDICTORS = ("model", "persistence", "linear")
MAX_MOVES = 1000  # the most champion-alias moves one history answer lists (API, CLI, mur.db.alias_history)


class Window(BaseModel):
    """A span of candle open times, ISO-8601 UTC strings (``data_window`` is half-open ``[start, end)``)."""

    start: str | None = None
    end: str | None = None


class PredictorMetrics(BaseModel):
    """Errors of one predictor on the test targets (see :func:`mur.evaluation.metrics.regression_metrics`)."""

    mae: float
    rmse: float
    mape: float
    """Percent."""
    directional_accuracy: float


class Significance(BaseModel):
    """How sure we are of the point forecast's edge over persistence on the test span (out-of-sample).

    Diebold-Mariano on absolute errors with the Harvey-Leybourne-Newbold correction, and an exact binomial
    test of directional accuracy (:func:`mur.evaluation.significance.point_evidence`).
    """

    dm_statistic: float
    """Negative when the model's absolute error is lower than persistence's."""
    dm_p_better: float
    """One-sided p-value of "the model beats persistence"."""
    dm_p_worse: float
    """One-sided p-value of "the model is worse than persistence" (the gate's persistence rule)."""
    skill_se: float | None = None
    """Standard error of ``skill``; None when it cannot be estimated."""
    direction_hits: int
    direction_n: int
    """Hours where both the forecast and the actual close moved (a flat forecast has no direction)."""
    direction_p_value: float
    """One-sided exact binomial p-value of "directions right more often than a coin flip"."""


class IntervalMetrics(BaseModel):
    """Scores of one interval forecast (the outer two quantile levels) on the test targets
    (:func:`mur.evaluation.intervals.interval_metrics`)."""

    coverage: float
    """Share of outcomes inside the interval (nominal: ``interval_level``)."""
    width: float
    """Mean width relative to the last close."""
    winkler: float
    """Mean Winkler (interval) score, in the quote currency: lower is better."""
    pinball: float
    """Mean pinball loss over all quantile levels, in the quote currency."""


class HorizonMetrics(BaseModel):
    """Out-of-sample scores of the forecast ``hours`` ahead: the median vs persistence, the interval vs
    baselines (a) ``naive`` (fixed empirical quantiles), (b) ``ewma`` (EWMA volatility x hour of day) and (c)
    ``garch``."""

    hours: int
    n: int
    model: PredictorMetrics
    persistence: PredictorMetrics
    skill: float
    """Point skill of the median: ``1 - MAE_model / MAE_persistence``."""
    dm_p_worse: float
    dm_p_better: float
    direction_p_value: float
    interval_level: float
    interval: IntervalMetrics
    naive: IntervalMetrics
    ewma: IntervalMetrics
    interval_skill: float
    """``1 - Winkler_model / Winkler_naive`` (> 0: better ranges than baseline (a))."""
    interval_skill_vs_ewma: float
    interval_skill_se: float | None = None
    interval_dm_p_worse: float
    """One-sided DM p-value of "the model's Winkler score is larger than the naive one's"."""
    interval_dm_p_better: float
    garch: IntervalMetrics | None = None
    """(c) GARCH(1,1)-t (:mod:`mur.evaluation.garch`; None in documents written before it was recorded)."""
    interval_skill_vs_garch: float | None = None
    interval_skill_se_vs_garch: float | None = None
    interval_dm_p_worse_vs_garch: float | None = None
    interval_dm_p_better_vs_garch: float | None = None


_TRAINING_EXTRAS = ("best_epoch", "epochs_run", "train_seconds", "num_workers", "filled_hours")


class MetricsDocument(BaseModel):
    """The evaluation of one trained model on its test span next to the persistence and linear baselines.

    Unknown keys are kept (``extra="allow"``), so a document written by a newer version still reads.
    Training details that a fit does not report are left out of the JSON rather than written as null.
    """

    model_config = ConfigDict(extra="allow")

    pair: str
    arch: str
    normalization: str
    data_window: Window
    test_window: Window
    model: PredictorMetrics
    persistence: PredictorMetrics
    linear: PredictorMetrics
    skill: float
    """``1 - MAE_model / MAE_persistence`` (> 0 beats persistence)."""
    beats_persistence: bool
    n_test: int
    significance: Significance | None = None
    """None in documents written before significance was recorded."""
    quantile_levels: list[float] | None = None
    interval_skill: float | None = None
    """1 h interval skill vs the naive baseline (None: a point-only model)."""
    coverage: float | None = None
    """1 h coverage of the interval of the outer levels."""
    horizons: list[HorizonMetrics] | None = None
    """Per-horizon scores (None in documents of point-only models)."""
    best_epoch: int | None = None
    epochs_run: int | None = None
    train_seconds: float | None = None
    num_workers: int | None = None
    filled_hours: list[str] | None = None
    """Hours the gap policy forward-filled in the data window (written by ``mur train --out``)."""

    @model_serializer(mode="wrap")
    def _leave_out_unreported(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None or k not in _TRAINING_EXTRAS}

    def to_json(self) -> str:
        """``metrics.json`` text."""
        return json.dumps(self.model_dump(mode="json"), indent=2)

    def mlflow_metrics(self) -> dict[str, float]:
        """Flat final metrics logged to the run: ``model_mae`` … ``linear_directional_accuracy``, ``skill``."""
        flat = {
            f"{who}_{key}": float(value)
            for who in PREDICTORS
            for key, value in getattr(self, who).model_dump().items()
        }
        flat["skill"] = float(self.skill)
        for h in self.horizons or []:
            flat[f"h{h.hours}_skill"] = h.skill
            flat[f"h{h.hours}_interval_skill"] = h.interval_skill
            flat[f"h{h.hours}_interval_skill_vs_ewma"] = h.interval_skill_vs_ewma
            flat[f"h{h.hours}_coverage"] = h.interval.coverage
            flat[f"h{h.hours}_winkler"] = h.interval.winkler
            flat[f"h{h.hours}_naive_winkler"] = h.naive.winkler
            flat[f"h{h.hours}_ewma_winkler"] = h.ewma.winkler
        return flat

    def version_tag_json(self) -> str:
        """The tag ``metrics_json`` of a registered version: the test-span part of the document."""
        data = self.model_dump(mode="json")
        return json.dumps({k: data.get(k) for k in VERSION_TAG_KEYS}, separators=(",", ":"))

    @classmethod
    def from_version_tags(cls, tags: Mapping[str, str]) -> MetricsDocument | None:
        """The document of a registered version, rebuilt from its tags (training details left out).

        None when the version carries no (readable) ``metrics_json`` tag.
        """
        try:
            part = json.loads(tags.get("metrics_json") or "null")
            if not isinstance(part, dict):
                return None
            return cls.model_validate(
                {
                    "pair": tags.get("pair", ""),
                    "arch": tags.get("arch", ""),
                    "normalization": tags.get("normalization", ""),
                    "data_window": {
                        "start": tags.get("data_window_start"),
                        "end": tags.get("data_window_end"),
                    },
                    "beats_persistence": float(part.get("skill", 0.0)) > 0,
                    **part,
                }
            )
        except ValueError:  # bad JSON, or a document pydantic refuses (ValidationError is a ValueError)
            return None


class CompactResult(BaseModel):
    """What a ``train_pair`` task returns through XCom: ids, the gate's decision and two metrics, never data."""

    pair: str
    model_name: str | None = None
    version: int | None = None
    alias: str | None = None
    reason: str = ""
    mae: float | None = None
    skill: float | None = None
    interval_skill: float | None = None
    reused: bool = False
    run_id: str | None = None
    job_id: str | None = None
    data_window_start: str | None = None
    data_window_end: str | None = None


class TrainingResult(BaseModel):
    """The outcome of one training (or of finding the version already trained for the same window).

    ``error`` is set (and nothing else need be) when the training failed; ``version`` is None for a model
    that was trained but not registered (``mur train --out``).
    """

    pair: str
    model_name: str | None = None
    version: int | None = None
    alias: str | None = None
    """``champion`` or ``challenger``: the promotion gate's decision."""
    aliases: list[str] = []
    reason: str = ""
    run_id: str | None = None
    job_id: str | None = None
    reused: bool = False
    """True when the version had been trained for this window and configuration before."""
    mae: float | None = None
    skill: float | None = None
    champion_version_before: int | None = None
    gate_rule: str | None = None
    """Which promotion rule decided (:func:`mur.registry.gate.decide`)."""
    kind: str | None = None
    """What asked for the training: ``scheduled``, ``backfill`` or ``manual``."""
    data_window: Window | None = None
    metrics: MetricsDocument | None = None
    error: str | None = None

    @classmethod
    def failure(cls, pair: str, message: str) -> TrainingResult:
        """An error result (what the job prints when it fails with a known error)."""
        return cls(pair=pair, error=message)

    @property
    def ok(self) -> bool:
        return self.error is None

    def compact(self) -> CompactResult:
        """Ids, decision and rounded metrics (for XCom)."""
        window = self.data_window or Window()
        metrics = {
            "mae": self.mae,
            "skill": self.skill,
            "interval_skill": None if self.metrics is None else self.metrics.interval_skill,
        }
        return CompactResult.model_validate(
            self.model_dump(include=set(CompactResult.model_fields))
            | {k: None if v is None else round(float(v), 8) for k, v in metrics.items()}
            | {"data_window_start": window.start, "data_window_end": window.end}
        )


class TrainingResults(BaseModel):
    """What a training job leaves under its submission id: the result of each pair it trained (failures
    included)."""

    results: list[TrainingResult]
