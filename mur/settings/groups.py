"""The settings groups, one per component: each reads its own ``MUR_*`` variables (the field name,
upper-cased: ``MUR_PG_HOST``), then ``.env``, then one file a secret in ``MUR_SECRETS_DIR``. Here the groups
of what is forecast and how; the services' groups: :mod:`mur.settings.services`."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mur.model.quantile_config import check_quantile_config

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DRIFT_FEATURES = ("abs_log_return", "log_range", "log_volume")
"""The inputs whose drift monitoring measures (``mur.monitoring.compute.drift_inputs``)."""


def _split(value: object, lower: bool) -> object:
    """A comma list (or a JSON list) from the environment; lists pass through."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    items = json.loads(text) if lower and text.startswith("[") else text.strip("[]").split(",")
    return [str(p).strip().lower() if lower else str(p).strip() for p in items if str(p).strip()]


Names = Annotated[list[str], NoDecode, BeforeValidator(lambda v: _split(v, lower=True))]
_numbers = BeforeValidator(lambda v: _split(v, lower=False))


def _known_drift_features(value: list[str]) -> list[str]:
    unknown = [v for v in value if v not in DRIFT_FEATURES]
    if unknown:
        raise ValueError(f"unknown drift input(s) {unknown}: choose among {', '.join(DRIFT_FEATURES)}")
    return value


class _Group(BaseSettings):
    """One component's settings: ``MUR_<FIELD>`` variables, ``.env``, secret files."""

    model_config = SettingsConfigDict(
        env_prefix="MUR_", env_file=".env", extra="ignore", populate_by_name=True
    )


class General(_Group):
    """Which environment, where local state lives, the pairs."""

    env: Literal["development", "test", "production"] = "development"
    runtime_dir: Path = Field(default=PROJECT_ROOT / ".runtime", description="pids, logs, local state")
    log_retention_hours: float = Field(
        default=72.0,
        gt=0,
        description="the local stack's watchdog deletes Airflow task logs and ended Ray workers' logs older than this",
    )
    secrets_dir: Path | None = Field(
        default=None, description="a directory of secret files, one per setting (mur_s3_secret_key, …)"
    )
    pairs: Names = Field(
        default_factory=lambda: ["btc_usdt", "eth_usdt", "sol_usdt", "bnb_usdt", "xrp_usdt"],
        description="trading pairs trained and served",
    )
    git_commit: str | None = Field(
        default=None,
        description="the commit a training is tagged with (a Ray job's submitter sets it; None: git)",
    )


class Data(_Group):
    """Market data: bundled or Binance, synthetic and added pairs."""

    market_data: Literal["bundled", "binance"] = "bundled"
    synthetic_pairs: int = Field(
        default=0,
        ge=0,
        le=9999,
        description="offer N synthetic pairs syn001_usdt… derived from the bundled data (scale tests only)",
    )
    pair_min_history_hours: int = Field(
        default=1440,
        ge=200,
        description="hourly candles a pair added by an admin needs before market now (60 days; mur pairs add)",
    )
    binance_api_url: str | None = Field(default=None, description="override python-binance's API URL")
    binance_api_key: str | None = None
    binance_api_secret: str | None = None
    binance_max_retries: int = 4
    binance_backoff_s: float = 0.5


class Clock(_Group):
    """The market clock (mur/clock.py; ignored with market_data=binance: real time)."""

    clock_start: datetime | None = Field(
        default=None,
        description="market time at clock_origin (None: this week's weekday and hour in Nov 2024)",
    )
    clock_speed: float = Field(
        default=1.0,
        ge=0,
        le=100_000,
        description="market seconds per wall second (60: an hour a minute; 0: frozen)",
    )
    clock_origin: float | None = Field(
        default=None,
        description="wall time (Unix s) at which the market stood at clock_start (mur up sets it)",
    )


class ModelShape(_Group):
    """Features and network: what the model reads and forecasts."""

    seq_len: int = Field(default=24, ge=2, description="hours the recurrent core reads")
    context_len: int = Field(
        default=168, ge=26, description="hours of candles the model takes (volatility context, >= seq_len)"
    )
    feature_set: Literal["extended", "reference"] = Field(
        default="extended", description="extended = the reference 9 columns + hour + volume"
    )
    horizons: Annotated[list[int], NoDecode, _numbers] = Field(
        default_factory=lambda: [1, 4, 24], description="forecast horizons in hours (comma list)"
    )
    quantile_levels: Annotated[list[float], NoDecode, _numbers] = Field(
        default_factory=lambda: [0.05, 0.5, 0.95],
        description="quantile levels (comma list, >= 3 including 0.5; the outer two form the interval)",
    )
    normalization: Literal["relative", "reference"] = "relative"
    arch: Literal["lstm", "gru"] = "lstm"
    hidden_size: int = Field(default=32, ge=1)
    num_layers: int = Field(default=2, ge=1)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check_forecast_shape(self) -> ModelShape:
        check_quantile_config(tuple(self.horizons), tuple(self.quantile_levels))
        if self.context_len < self.seq_len + 1:
            raise ValueError(f"context_len ({self.context_len}) must exceed seq_len ({self.seq_len})")
        return self


class Training(_Group):
    """How a model is trained (Ray Train workers included)."""

    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=256, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    patience: int = Field(default=4, ge=1)
    seed: int = 42
    train_days: int | None = Field(
        default=365, ge=1, description="training window length before --end (None = all)"
    )
    warm_start_epochs: int = Field(
        default=3,
        ge=0,
        description="epochs of a scheduled run that starts from the champion's recurrent weights "
        "(mur/training/warm_start.py); 0 = every run trains fully",
    )
    full_retrain_hours: int = Field(
        default=24,
        ge=1,
        description="a scheduled run trains fully once the last full training is this many market hours old",
    )
    weight_decay: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="decoupled weight decay (AdamW); 0 = plain Adam"
    )
    num_workers: int = Field(default=2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0
    max_failures: int = 2
    checkpoint_every_epochs: int = Field(
        default=2,
        ge=1,
        description="Ray Train checkpoints a pair every N epochs and at its last (a restart redoes < N epochs)",
    )
    job_timeout_s: int = 3600
    job_poll_s: float = Field(
        default=10.0, gt=0, description="how often the training DAG's trigger asks Ray whether its jobs ended"
    )


class Tuning(_Group):
    """Hyper-parameter search (mur tune, docs/tuning.md)."""

    use_tuned_configs: bool = Field(
        default=True,
        description="registered trainings (scheduled, mur train --register) use the pair's active tuned "
        "configuration (mur tune); false: the settings' configuration",
    )
    tune_trials: int = Field(default=20, ge=1, le=500, description="configurations one search tries")
    tune_folds: int = Field(default=3, ge=1, le=12, description="walk-forward folds a trial is scored on")
    tune_fold_hours: int = Field(default=336, ge=24, description="hours scored after each fold's origin")
    tune_confirm_hours: int = Field(
        default=720,
        ge=48,
        description="the last hours of the data: the confirmation span the search never sees",
    )
    tune_train_days: int = Field(default=180, ge=14, description="training window of each fold's fit")
    tune_epochs: int = Field(default=8, ge=1, description="max epochs of each fold's fit (early stopping)")
    tune_concurrency: int = Field(default=2, ge=1, description="trials at once (one CPU each)")
    tune_schedule: str | None = Field(
        default=None, description="mur_tuning DAG schedule (cron or preset, e.g. @weekly); none = manual only"
    )


class Monitoring(_Group):
    """Monitoring and online calibration (mur/monitoring, docs/monitoring.md)."""

    monitor_window_hours: int = Field(
        default=48, ge=1, le=2000, description="resolved 1 h forecasts per rolling window"
    )
    monitor_min_resolved: int = Field(
        default=12, ge=1, description="fewer resolved forecasts: no skill/coverage alert"
    )
    monitor_skill_below: float = Field(
        default=-0.10, description="alert: rolling skill vs persistence below this"
    )
    monitor_coverage_below: float = Field(
        default=0.70, ge=0, le=1, description="alert: rolling coverage of the 90 % range below this"
    )
    monitor_drift_hours: int = Field(
        default=48, ge=12, le=2000, description="recent hours compared for drift"
    )
    monitor_psi_above: float = Field(default=1.0, gt=0, description="drift: an input's PSI above this ...")
    monitor_ks_p_below: float = Field(
        default=1e-4, gt=0, lt=1, description="... and its KS p-value below this"
    )
    monitor_drift_alert_features: Annotated[Names, AfterValidator(_known_drift_features)] = Field(
        default_factory=lambda: ["abs_log_return"],
        description="inputs whose drift raises an alert (the others are reported only)",
    )
    monitor_cooldown_hours: int = Field(default=24, ge=0, description="market hours between alerts of a pair")
    monitor_retrain: bool = Field(default=True, description="an alert requests a retraining of its pair")
    stale_training_hours: int = Field(
        default=6,
        ge=0,
        description="alert when a pair's newest training window ended this many market hours ago",
    )
    online_calibration: bool = Field(
        default=True,
        description="serving scales each horizon's range by its online conformal scale, stepped by the "
        "monitoring task with every resolved forecast (docs/forecasts.md); false: the graph's range as is",
    )
    online_calibration_eta: float = Field(
        default=0.02,
        gt=0,
        le=1,
        description="the online scale's step on the log scale at 1 h (eta / sqrt(h))",
    )
    online_calibration_cache_s: float = Field(
        default=30.0,
        ge=0,
        description="serving reads a pair's online scales at most this often (wall seconds)",
    )


class Strategy(_Group):
    """The sizing rule read from the ranges (mur/evaluation/sizing.py, docs/decisions.md): paper, not advice."""

    strategy_target_vol: float = Field(default=0.4, gt=0, description="annualised volatility aimed at")
    strategy_cap: float = Field(default=1.0, gt=0, le=10, description="largest exposure (1: no leverage)")
    strategy_horizon: int = Field(
        default=24, ge=1, description="hours between decisions; the horizon whose range sizes them"
    )
    strategy_fee_bps: float = Field(default=10.0, ge=0, description="fee, basis points of the notional")
    strategy_slippage_bps: float = Field(default=5.0, ge=0, description="slippage, basis points")
