"""The pure parts of the hyper-parameter search (``mur tune``; the Ray Tune and MLflow glue is
:mod:`mur.training.tune`): what a configuration may set, the search space, where the folds and the
confirmation span lie, a fold's score and the confirmation comparison with its standard error.

Spans, on candles ``[first, end)``::

    ... fold 1 | fold 2 | ... | fold K |<- max_h - 1 ->| confirmation span (tune_confirm_hours) |end
        o_1      o_2            o_K      search end      confirm start

Fold ``k`` trains on the ``tune_train_days`` before its origin ``o_k`` and is scored on the forecasts made
for the ``fold_hours`` hours after it (the backtest's folds, :func:`mur.evaluation.backtest.fold_origins`).
The last fold ends ``max_h - 1`` hours before the confirmation span, so not even a 24 h target of the
search lies in it: the search never sees the confirmation span. There, the chosen configuration and the
default are each trained once on the candles before it and scored on the same forecasts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mur.errors import DataValidationError

if TYPE_CHECKING:
    from mur.db.model_configs import ModelConfigRecord
    from mur.settings import Settings

SEARCH_SPACE: dict[str, tuple[Any, ...]] = {
    "arch": ("choice", ["lstm", "gru"]),
    "hidden_size": ("choice", [16, 32, 64]),
    "num_layers": ("choice", [1, 2]),
    "dropout": ("choice", [0.0, 0.1, 0.2]),
    "seq_len": ("choice", [12, 24, 48]),
    "learning_rate": ("loguniform", 3e-4, 3e-3),
    "weight_decay": ("choice", [0.0, 1e-5, 1e-4, 1e-3]),
    "feature_set": ("choice", ["extended", "reference"]),
}
"""Settings field -> ``("choice", values)`` or ``("loguniform", low, high)``. The volatility structure's
half-lives are constants of the graph (:data:`mur.model.network.HALF_LIVES`), not parameters."""


class ModelConfiguration(BaseModel):
    """The values a stored configuration may set, as :class:`~mur.settings.Settings` field names (None: the
    settings' own value). Unknown keys are refused: a typo must not silently train the default."""

    model_config = ConfigDict(extra="forbid")

    arch: Literal["lstm", "gru"] | None = None
    hidden_size: int | None = Field(default=None, ge=1, le=1024)
    num_layers: int | None = Field(default=None, ge=1, le=8)
    dropout: float | None = Field(default=None, ge=0.0, lt=1.0)
    seq_len: int | None = Field(default=None, ge=2)
    learning_rate: float | None = Field(default=None, gt=0.0, lt=1.0)
    weight_decay: float | None = Field(default=None, ge=0.0, lt=1.0)
    feature_set: Literal["extended", "reference"] | None = None


def apply_config(settings: Settings, config: Mapping[str, Any]) -> Settings:
    """``settings`` with the configuration's values (a new object; ``settings`` is unchanged), validated (a
    one-line :class:`DataValidationError` otherwise)."""
    try:
        values = ModelConfiguration.model_validate(dict(config)).model_dump(exclude_none=True)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors())
        raise DataValidationError(f"invalid model configuration: {problems}") from None
    seq_len = int(values.get("seq_len", settings.model.seq_len))
    if settings.model.context_len < seq_len + 1:
        raise DataValidationError(
            f"seq_len {seq_len} needs context_len > {seq_len} (is {settings.model.context_len})"
        )
    return settings.replace(**values)


def default_config(settings: Settings) -> dict[str, Any]:
    """The settings' values of every searched field: the configuration the search must beat."""
    values = settings.flat()
    return {name: values[name] for name in SEARCH_SPACE}


def same_config(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal on every searched field (floats to 12 significant digits: JSON round trips)."""

    def norm(v: Any) -> Any:
        return float(f"{v:.12g}") if isinstance(v, float) else v

    return all(norm(a.get(k)) == norm(b.get(k)) for k in SEARCH_SPACE)


@dataclass(frozen=True)
class SearchSpans:
    """Fold origins (oldest first), hours per fold, and the confirmation span ``[confirm_start, end)``."""

    origins: tuple[datetime, ...]
    fold_hours: int
    search_end: datetime
    confirm_start: datetime
    end: datetime

    def to_dict(self) -> dict[str, Any]:
        from mur.timeutil import iso

        return {
            "origins": [iso(o) for o in self.origins],
            "fold_hours": self.fold_hours,
            "search_end": iso(self.search_end),
            "confirm_start": iso(self.confirm_start),
            "end": iso(self.end),
        }


def search_spans(
    end: datetime, *, folds: int, fold_hours: int, confirm_hours: int, max_horizon: int
) -> SearchSpans:
    """Where the folds and the confirmation span lie for candles ending at ``end`` (module docstring)."""
    from mur.evaluation.backtest import fold_origins

    if confirm_hours <= max_horizon:
        raise DataValidationError(
            f"the confirmation span ({confirm_hours} h) must be longer than the longest horizon ({max_horizon} h)"
        )
    confirm_start = end - timedelta(hours=confirm_hours)
    search_end = confirm_start - timedelta(hours=max_horizon - 1)
    origins = tuple(fold_origins(search_end, folds, fold_hours))
    return SearchSpans(origins, fold_hours, search_end, confirm_start, end)


def fold_score(horizon_rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """A fold's score from its per-horizon evaluation (:func:`mur.evaluation.metrics.evaluate_horizons`):
    the model's mean Winkler score and mean pinball loss, each relative to the naive interval baseline on
    the same targets (1 = as good as the baseline) and averaged over horizons, so that every horizon weighs
    the same (a 24 h range is ~5 times as wide as a 1 h one); ``score`` is their mean (lower is better)."""
    if not horizon_rows:
        raise DataValidationError("a fold without forecasts cannot be scored")

    def ratio(row: Mapping[str, Any], metric: str) -> float:
        base = float(row["naive"][metric])
        return float(row["interval"][metric]) / base if base > 0 else math.inf

    winkler = float(np.mean([ratio(r, "winkler") for r in horizon_rows]))
    pinball = float(np.mean([ratio(r, "pinball") for r in horizon_rows]))
    return {
        "score": (winkler + pinball) / 2.0,
        "winkler_ratio": winkler,
        "pinball_ratio": pinball,
        "coverage": float(np.mean([r["interval"]["coverage"] for r in horizon_rows])),
        "n": float(horizon_rows[0]["n"]),
    }


def per_forecast_losses(
    quantiles: np.ndarray, y: np.ndarray, levels: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Winkler score of the outer interval and pinball loss (mean over levels) of each forecast and
    horizon: price quantiles ``(n, H, L)``, outcomes ``(n, H)`` -> two ``(n, H)`` arrays."""
    from mur.evaluation.intervals import pinball_per_target, winkler_scores

    q, y = np.asarray(quantiles, dtype=np.float64), np.asarray(y, dtype=np.float64)
    alpha = 1.0 - (levels[-1] - levels[0])
    horizons = range(q.shape[1])
    winkler = np.stack([winkler_scores(q[:, j, 0], q[:, j, -1], y[:, j], alpha) for j in horizons], axis=1)
    return winkler, np.stack([pinball_per_target(q[:, j], y[:, j], levels) for j in horizons], axis=1)


def _gain(chosen: np.ndarray, default: np.ndarray, horizon: int) -> dict[str, float | None]:
    """``gain = 1 - mean(chosen) / mean(default)`` (> 0: the chosen configuration's loss is lower) and its
    HAC standard error (:func:`mur.evaluation.significance.skill_standard_error`, lag ``horizon - 1``)."""
    from mur.evaluation.metrics import skill
    from mur.evaluation.significance import skill_standard_error

    se = skill_standard_error(chosen, default, horizon=horizon)
    return {
        "chosen": float(np.mean(chosen)),
        "default": float(np.mean(default)),
        "gain": skill(float(np.mean(chosen)), float(np.mean(default))),
        "se": se if math.isfinite(se) else None,
    }


def confirmation_comparison(
    chosen: tuple[np.ndarray, np.ndarray], default: tuple[np.ndarray, np.ndarray], horizons: Sequence[int]
) -> dict[str, Any]:
    """The chosen configuration against the default on the same confirmation forecasts.

    ``chosen`` and ``default`` are ``(winkler, pinball)`` pairs of ``(n, H)`` per-forecast losses
    (:func:`per_forecast_losses`). Per horizon: each loss's gain with its standard error. Overall: each
    forecast's losses divided by the default's mean loss at that horizon and averaged over horizons (every
    horizon weighs the same), the gain of those with the standard error at the longest horizon's lag."""
    out: dict[str, Any] = {"n": int(chosen[0].shape[0]), "horizons": []}
    for j, h in enumerate(horizons):
        out["horizons"].append(
            {
                "hours": int(h),
                "winkler": _gain(chosen[0][:, j], default[0][:, j], int(h)),
                "pinball": _gain(chosen[1][:, j], default[1][:, j], int(h)),
            }
        )
    lag = int(max(horizons))
    for k, name in enumerate(("winkler", "pinball")):
        scale = default[k].mean(axis=0, keepdims=True)
        scale[scale <= 0] = 1.0
        out[name] = _gain((chosen[k] / scale).mean(axis=1), (default[k] / scale).mean(axis=1), lag)
    return out


def verdict(comparison: Mapping[str, Any], z: float = 2.0) -> str:
    """One honest sentence about the overall Winkler gain (``z`` standard errors for "better"/"worse")."""
    if comparison.get("same_as_default"):
        return "the search kept the default configuration (no gain to confirm)"
    if comparison.get("identical_forecasts"):
        return (
            "both configurations made the same forecasts on the confirmation span (no gain): neither training "
            "beat the data-fitted start on validation, so the recurrent core's settings did not matter"
        )
    w = comparison["winkler"]
    gain, se = float(w["gain"]), w["se"]
    text = f"Winkler gain {gain:+.4f}" + ("" if se is None else f" ± {se:.4f} (1 s.e.)")
    if se is None or se <= 0:
        return f"{text}: too few forecasts to judge"
    if gain > z * se:
        return f"{text}: the tuned configuration is better on the confirmation span"
    if gain < -z * se:
        return f"{text}: the tuned configuration is WORSE on the confirmation span"
    return f"{text}: no significant difference on the confirmation span"


@dataclass(frozen=True)
class TuneBudget:
    """How much one search may spend (defaults: the ``MUR_TUNE_*`` settings)."""

    trials: int
    folds: int
    fold_hours: int
    confirm_hours: int
    train_days: int
    epochs: int
    concurrency: int
    seed: int

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: int | None) -> TuneBudget:
        """The ``MUR_TUNE_*`` settings with ``overrides`` (a command's options: ``trials``, ``folds``, ...),
        each held to its setting's bounds (``--trials 0`` is refused as ``MUR_TUNE_TRIALS=0`` would be)."""
        from mur.settings import check_option

        for name, value in overrides.items():
            check_option(name.replace("_", "-"), f"tune_{name}", value)
        values = {f.name: getattr(settings.tuning, f"tune_{f.name}") for f in fields(cls) if f.name != "seed"}
        values |= {k: v for k, v in overrides.items() if v is not None}
        return cls(seed=settings.training.seed, **values)


@dataclass
class TrialResult:
    """One trial: its configuration, its running score after each fold, and how it ended."""

    trial_id: str
    config: dict[str, Any]
    folds: list[dict[str, float]]
    status: str  # completed | stopped (by ASHA) | error
    error: str | None = None

    @property
    def score(self) -> float:
        return float(np.mean([f["score"] for f in self.folds])) if self.folds else math.inf


@dataclass
class TuningReport:
    """What ``mur tune`` prints and stores (``evidence`` of the configuration version)."""

    pair: str
    search_id: str
    spans: SearchSpans
    budget: TuneBudget
    trials: list[TrialResult]
    chosen: dict[str, Any]
    default: dict[str, Any]
    comparison: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    stored: ModelConfigRecord | None = None

    def summary(self) -> dict[str, Any]:
        """The short JSON result (what the Ray job leaves under its submission id, the DAG task's XCom)."""
        c = self.comparison
        return {
            "pair": self.pair,
            "search_id": self.search_id,
            "chosen": self.chosen,
            "same_as_default": bool(c.get("same_as_default")),
            "confirmation": {
                "span": c.get("span"),
                "n": c["n"],
                **{f"{k}_gain": c[k]["gain"] for k in ("winkler", "pinball")},
                **{f"{k}_gain_se": c[k]["se"] for k in ("winkler", "pinball")},
            },
            "verdict": verdict(c),
            "mlflow_run_id": self.mlflow_run_id,
            "stored_version": None if self.stored is None else self.stored.version,
            "active": None if self.stored is None else self.stored.active,
            "seconds": self.seconds,
        }

    def evidence(self) -> dict[str, Any]:
        best = min((t for t in self.trials if t.status == "completed"), key=lambda t: t.score, default=None)
        return {
            "search_id": self.search_id,
            "spans": self.spans.to_dict(),
            "budget": asdict(self.budget),
            "trials": len(self.trials),
            "completed": sum(t.status == "completed" for t in self.trials),
            "best_search_score": None if best is None else best.score,
            "default": self.default,
            "confirmation": self.comparison,
            "seconds": self.seconds,
        }
