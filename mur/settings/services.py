"""The settings groups of the services a process reaches: the Ray cluster, MLflow and S3, PostgreSQL, Ray
Serve, Airflow and the dashboard (where they listen, how to log in, how they scale). The groups of what is
forecast and how (data, model, training, monitoring, the sizing rule): :mod:`mur.settings.groups`."""

from __future__ import annotations

from typing import Literal
from urllib.parse import quote

from pydantic import AliasChoices, Field

from mur.settings.groups import Names, _Group


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
    ray_redis_port: int = Field(
        default=6381, description="the local stack's Redis, the GCS's tables (fault tolerance)"
    )
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
    keep_versions: int = Field(
        default=48,
        ge=0,
        description="registered versions kept per pair beside the aliased ones and the last as many champions; "
        "older ones are deleted with their runs' artefacts (0: keep all)",
    )

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
        return self._url(self.pg_user, self.pg_password, database or self.pg_database)

    def app_dsn(self) -> str:
        """libpq DSN of the application's own role (``pg_app_user``) on the app database; ``dsn()``
        without one. Migrations and provisioning connect as ``pg_user`` (the owner) instead."""
        if not self.pg_app_user:
            return self.dsn()
        return self._url(self.pg_app_user, self.pg_app_password, self.pg_database)

    def _url(self, user: str, password: str | None, database: str) -> str:
        """A ``postgresql://`` URL; user and password percent-encoded (a password may hold ``@ / : #``)."""
        auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
        return f"postgresql://{auth}@{self.pg_host}:{self.pg_port}/{database}"

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
    train_every_hours: int = Field(
        default=1,
        ge=1,
        le=24,
        description="'market' schedule: train every N market hours (closing at N*k h UTC)",
    )
    max_parallel_trainings: int = 2
    train_batch_size: int = Field(
        default=25,
        ge=1,
        description="At most this many pairs per training job (one Ray Train run); see docs/scale-out.md",
    )
    discord_webhook_url: str | None = None
    discord_notify_success: bool = False


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
