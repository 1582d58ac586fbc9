"""The settings groups, one per component: each reads its own ``MUR_*`` variables (the field name,
upper-cased: ``MUR_PG_HOST``), then ``.env``, then one file a secret in ``MUR_SECRETS_DIR``."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, AliasChoices, BeforeValidator, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then ``MUR_*`` variables, then ``.env``, then one file a secret in ``MUR_SECRETS_DIR``
        (named like its variable, e.g. ``mur_s3_secret_key``: Docker/Kubernetes secrets, and how a Ray job
        gets S3 keys without them in its runtime env)."""
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings, dotenv_settings)
        secrets_dir = os.environ.get("MUR_SECRETS_DIR")
        if secrets_dir and Path(secrets_dir).is_dir():
            sources += (SecretsSettingsSource(settings_cls, secrets_dir=secrets_dir),)
        return sources


class General(_Group):
    """Which environment, where local state lives, the pairs."""

    env: Literal["development", "test", "production"] = "development"
    runtime_dir: Path = Field(default=PROJECT_ROOT / ".runtime", description="pids, logs, local state")
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
    gap_policy: Literal["ffill"] = "ffill"


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


class Ray(_Group):
    """The Ray cluster."""

    ray_address: str = "http://127.0.0.1:8265"
    ray_auth_mode: Literal["token", "disabled"] = Field(
        default="token",
        validation_alias=AliasChoices("RAY_AUTH_MODE", "MUR_RAY_AUTH_MODE"),
        description="Ray's authentication (RAY_AUTH_MODE): token on every Ray API; disabled only for tests of it",
    )
    ray_auth_token: str | None = Field(
        default=None,
        validation_alias=AliasChoices("RAY_AUTH_TOKEN", "MUR_RAY_AUTH_TOKEN"),
        description="Ray's bearer token (RAY_AUTH_TOKEN); the local stack generates one into its secrets file",
    )
    ray_gcs_port: int = Field(default=6380, description="Ray GCS port (6379 is Redis here)")
    ray_dashboard_port: int = 8265
    ray_storage_path: str | None = Field(default=None, description="Ray Train storage (s3://… or a dir)")
    ray_num_cpus: int | None = Field(default=None, description="Ray head's CPUs (None: max(4, cores))")
    ray_object_store_mb: int = Field(default=1024, ge=100, description="Ray head's object store size")
    ray_nodes: int = Field(
        default=1,
        ge=1,
        le=8,
        description="Ray nodes of the local stack (`mur up --nodes N`): the head, and N-1 worker nodes on "
        "127.0.0.2.. that join it with the token (docs/scale-out.md)",
    )
    ray_placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        default="PACK",
        description="how Ray Train places a training's workers: PACK (fewest nodes), SPREAD, STRICT_SPREAD "
        "(one worker per node, e.g. DDP across machines)",
    )

    def headers(self) -> dict[str, str]:
        """HTTP headers for Ray's dashboard, Jobs and Serve REST APIs (the bearer token when auth is on)."""
        if self.ray_auth_mode == "token" and self.ray_auth_token:
            return {"Authorization": f"Bearer {self.ray_auth_token}"}
        return {}

    def auth_env(self) -> dict[str, str]:
        """``RAY_AUTH_MODE``/``RAY_AUTH_TOKEN`` for a process that runs Ray (a head, a node, a driver)."""
        env: dict[str, str] = {"RAY_AUTH_MODE": self.ray_auth_mode}
        if self.ray_auth_mode == "token" and self.ray_auth_token:
            env["RAY_AUTH_TOKEN"] = self.ray_auth_token
        return env


class Registry(_Group):
    """MLflow, its S3 artifact store, and the promotion gate."""

    mlflow_tracking_uri: str = "http://127.0.0.1:5000"
    mlflow_port: int = 5000
    mlflow_experiment: str = "make-us-rich"
    s3_endpoint_url: str = "http://127.0.0.1:9000"
    s3_port: int = 9000
    s3_bucket: str = "mur-artifacts"
    s3_access_key: str = "minioadmin"
    s3_secret_key: str = "minioadmin"
    mlflow_username: str | None = Field(
        default=None,
        description="this process's MLflow account (MLFLOW_TRACKING_USERNAME); the local stack gives each "
        "component its own in its secrets dir (docs/services.md)",
    )
    mlflow_password: str | None = Field(default=None, description="that account's password")
    promotion_skill_floor: float = Field(
        default=-0.01,
        description="a version below this skill vs persistence never becomes champion (see the gate rules)",
    )
    promotion_alpha: float = Field(
        default=0.05, gt=0, lt=1, description="significance level of the gate's DM and champion tests"
    )
    registry_prefix: str = Field(
        default="mur-", description="registered model name prefix (mur-{pair}); tests use a private one"
    )
    promotion_coverage_tolerance: float = Field(
        default=0.02, ge=0, lt=0.5, description="gate: coverage slack"
    )
    promotion_point_margin: float = Field(
        default=0.005, ge=0, description="gate: median's margin vs champion"
    )
    shadow_max_per_pair: int = Field(default=2, ge=0, description="shadow versions served per pair (0: none)")
    shadow_ttl_hours: int = Field(default=168, ge=1, description="market hours a shadow is served")
    shadow_min_resolved: int = Field(default=48, ge=3, description="live targets per horizon to promote")

    def s3_env(self) -> dict[str, str]:
        """Environment that points boto3/MLflow at the S3 server."""
        return {
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint_url,
            "AWS_ACCESS_KEY_ID": self.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": self.s3_secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }


class Database(_Group):
    """PostgreSQL."""

    pg_host: str = "127.0.0.1"
    pg_port: int = 5432
    pg_user: str = "postgres"
    pg_password: str = ""
    pg_app_user: str | None = Field(
        default="mur_app",
        description="the role the application connects to its database with (read/write on its tables only; "
        "migrations create it and run as pg_user, the owner); None: connect as pg_user",
    )
    pg_app_password: str = ""
    pg_database: str = "mur"
    mlflow_database: str = "mlflow"
    airflow_database: str = "airflow"
    pg_statement_timeout_s: float | None = Field(
        default=15.0, gt=0, description="cancel application statements running longer (None: no limit)"
    )

    def dsn(self, database: str | None = None) -> str:
        """libpq DSN for ``database`` (default: the app database)."""
        auth = self.pg_user + (f":{self.pg_password}" if self.pg_password else "")
        return f"postgresql://{auth}@{self.pg_host}:{self.pg_port}/{database or self.pg_database}"

    def app_dsn(self) -> str:
        """libpq DSN of the application's own role (``pg_app_user``) on the app database; ``dsn()``
        without one. Migrations and provisioning connect as ``pg_user`` (the owner) instead."""
        if not self.pg_app_user:
            return self.dsn()
        auth = self.pg_app_user + (f":{self.pg_app_password}" if self.pg_app_password else "")
        return f"postgresql://{auth}@{self.pg_host}:{self.pg_port}/{self.pg_database}"

    def sqlalchemy_url(self, database: str) -> str:
        """SQLAlchemy URL with the psycopg2 driver (SQLAlchemy 2.1 defaults to psycopg 3)."""
        return self.dsn(database).replace("postgresql://", "postgresql+psycopg2://", 1)


class Serving(_Group):
    """Ray Serve and the API."""

    serve_host: str = "127.0.0.1"
    serve_port: int = 8000
    serve_app_name: str = Field(default="mur", description="Ray Serve application name")
    serve_min_replicas: int = 1
    serve_max_replicas: int = 2
    serve_target_ongoing_requests: float = 8
    serve_upscale_delay_s: float = Field(
        default=10.0, ge=0, description="autoscaling: load held before adding"
    )
    serve_downscale_delay_s: float = Field(
        default=120.0, ge=0, description="autoscaling: idle before removing"
    )
    serve_batch_max_size: int = 32
    serve_batch_wait_s: float = 0.001
    serve_models_per_replica: int = Field(
        default=256, ge=1, description="multiplexed Forecaster: models kept per replica (LRU size)"
    )
    serve_preload_champions: bool = Field(
        default=True, description="a new Forecaster replica loads the champions (up to the LRU size) at start"
    )
    serve_cold_load_timeout_s: float = Field(
        default=10.0, gt=0, description="how long a request waits for a model not in the LRU (then 503)"
    )
    serve_answer_ttl_s: float = Field(
        default=10.0,
        ge=0,
        description="GETs of a multiplexed pair's latest forecast share one computed answer this long "
        "(same champion, same market hour; 0: every GET asks the Forecaster)",
    )
    serve_dedicated_pairs: Names = Field(
        default_factory=list, description="hot pairs served by their own autoscaled deployment"
    )
    registry_poll_s: float = 30.0
    market_refresh_s: float = 60.0
    default_monthly_quota: int = 1000

    @property
    def url(self) -> str:
        return f"http://{self.serve_host}:{self.serve_port}"


class Airflow(_Group):
    """Airflow: the schedules, training batches, alerts to Discord."""

    airflow_port: int = 8080
    airflow_url: str = "http://127.0.0.1:8080"
    airflow_user: str = "admin"
    airflow_password: str | None = None
    train_schedule: str | None = Field(
        default="market",
        description="'market': every market hour (the market clock); a cron expression (wall time); 'none'",
    )
    max_parallel_trainings: int = 2
    train_batch_size: int = Field(
        default=25,
        ge=1,
        description="At most this many pairs per training job (one Ray Train run); see docs/scale-out.md",
    )
    discord_webhook_url: str | None = None
    discord_notify_success: bool = False


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
    strategy_long_only: bool = Field(default=True, description="exposure floored at 0 (no short)")


class Dashboard(_Group):
    """The dashboard and its accounts (sessions, login limits, registration)."""

    dash_host: str = "127.0.0.1"
    dash_port: int = 8050
    api_public_url: str | None = Field(default=None, description="Serve API URL shown in curl examples")
    secret_key: str | None = Field(
        default=None, description="Flask session key; required outside development"
    )
    login_max_attempts: int = Field(
        default=5, ge=1, description="failed logins per (username, client IP) within the window"
    )
    login_ip_max_attempts: int = Field(
        default=30, ge=1, description="failed logins from one client IP (any usernames) within the window"
    )
    login_user_max_attempts: int = Field(
        default=100, ge=1, description="failed logins of one username from all IPs (locks the account)"
    )
    login_window_s: int = Field(default=300, ge=1)
    hashing_concurrency: int = Field(
        default=4, ge=1, description="argon2 checks at once per dashboard process (64 MiB each); more: 503"
    )
    trusted_proxy_hops: int = Field(
        default=0, ge=0, description="reverse proxies in front of the dashboard whose X-Forwarded-* to trust"
    )
    registration: Literal["open", "invite", "closed"] | None = Field(
        default=None, description="who may create accounts (None: invite in production, open otherwise)"
    )
    registration_max_per_ip: int = Field(
        default=5, ge=1, description="registration attempts per client IP within registration_window_s"
    )
    registration_window_s: int = Field(default=3600, ge=1)
