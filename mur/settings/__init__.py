"""Settings for every process, grouped by component (``settings.db.pg_host``, ``settings.training.epochs``;
the groups: :mod:`mur.settings.groups`, :mod:`mur.settings.services`). Every variable keeps its flat name
(``MUR_PG_HOST``, ``MUR_EPOCHS``).

Entry points create :class:`Settings` with :func:`get_settings` and pass it down; nothing here runs at
import time. Every field is documented in ``.env.example``, grouped the same way.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from mur.settings.groups import (
    DRIFT_FEATURES,
    PROJECT_ROOT,
    Clock,
    Data,
    General,
    ModelShape,
    Monitoring,
    Strategy,
    Training,
    Tuning,
    _Group,
)
from mur.settings.services import Airflow, Dashboard, Database, Ray, Registry, Serving

__all__ = [
    "DRIFT_FEATURES",
    "FIELD_GROUP",
    "GROUP_TYPES",
    "PROJECT_ROOT",
    "Settings",
    "check_option",
    "get_settings",
]
PLACEHOLDER_SECRETS = {"", "change-me", "changeme", "secret", "dev-secret-key", "placeholder"}


class Settings(BaseModel):
    """Configuration for training, serving, orchestration and the dashboard, one group per component.

    ``Settings(epochs=2, pg_port=5433)`` takes flat field names too (each goes to its group; the groups read
    the environment for the rest); ``settings.replace(epochs=2)`` is a copy with fields changed.
    """

    general: General = Field(default_factory=General)
    data: Data = Field(default_factory=Data)
    clock: Clock = Field(default_factory=Clock)
    model: ModelShape = Field(default_factory=ModelShape)
    training: Training = Field(default_factory=Training)
    tuning: Tuning = Field(default_factory=Tuning)
    ray: Ray = Field(default_factory=Ray)
    registry: Registry = Field(default_factory=Registry)
    db: Database = Field(default_factory=Database)
    serving: Serving = Field(default_factory=Serving)
    airflow: Airflow = Field(default_factory=Airflow)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    dashboard: Dashboard = Field(default_factory=Dashboard)
    strategy: Strategy = Field(default_factory=Strategy)

    def __init__(self, **values: Any) -> None:  # flat names and ``_env_file`` are routed by _by_group
        super().__init__(**values)

    @model_validator(mode="before")
    @classmethod
    def _by_group(cls, values: Any) -> Any:
        """Route flat keyword arguments to their group and build every group (a group built from a dict by
        pydantic would not read the environment)."""
        if not isinstance(values, dict):
            return values
        options = {k: values[k] for k in ("_env_file", "_secrets_dir") if k in values}
        # each group reads arguments, then MUR_* variables, then .env, then one file a secret in MUR_SECRETS_DIR
        # (named like its variable, e.g. mur_s3_secret_key: Docker/Kubernetes secrets, and how a Ray job gets
        # S3 keys without them in its runtime env)
        secrets_dir = os.environ.get("MUR_SECRETS_DIR")
        if secrets_dir and Path(secrets_dir).is_dir():
            options.setdefault("_secrets_dir", secrets_dir)
        given: dict[str, dict[str, Any]] = {name: {} for name in GROUP_TYPES}
        groups: dict[str, Any] = {}
        for key, value in values.items():
            if key in GROUP_TYPES:
                if isinstance(value, GROUP_TYPES[key]):
                    groups[key] = value
                else:
                    given[key].update(value)
            elif key in FIELD_GROUP:
                given[FIELD_GROUP[key]][key] = value
        for name, kind in GROUP_TYPES.items():
            if name not in groups or given[name]:
                base = groups[name].model_dump(exclude_unset=True) if name in groups else {}
                groups[name] = kind(**options, **{**base, **given[name]})
        return groups

    @model_validator(mode="after")
    def _production_secrets(self) -> Settings:
        if self.general.env == "production":
            d, r, db, ray = self.dashboard, self.registry, self.db, self.ray
            if (d.secret_key or "") in PLACEHOLDER_SECRETS:
                raise ValueError("MUR_SECRET_KEY must be set to a real secret in production")
            if r.s3_access_key in PLACEHOLDER_SECRETS | {"minioadmin"}:
                raise ValueError("MUR_S3_ACCESS_KEY must not be the default minioadmin in production")
            if r.s3_secret_key in PLACEHOLDER_SECRETS | {"minioadmin"}:
                raise ValueError("MUR_S3_SECRET_KEY must be set to a real secret in production")
            if r.mlflow_username and (r.mlflow_password or "") in PLACEHOLDER_SECRETS:
                raise ValueError("MUR_MLFLOW_PASSWORD must be set to a real password in production")
            if db.pg_password in PLACEHOLDER_SECRETS | {"postgres"}:
                raise ValueError("MUR_PG_PASSWORD must be set to a real password in production")
            if db.pg_app_user and db.pg_app_password in PLACEHOLDER_SECRETS:
                raise ValueError("MUR_PG_APP_PASSWORD must be set to a real password in production")
            if ray.ray_auth_mode != "token":
                raise ValueError("RAY_AUTH_MODE must be token in production (Ray runs code for its callers)")
            if ray.ray_auth_token is not None and len(ray.ray_auth_token) < 32:
                raise ValueError("RAY_AUTH_TOKEN must be a real secret in production (32+ characters)")
        return self

    @model_validator(mode="after")
    def _stale_after_the_cadence(self) -> Settings:
        stale, every = self.monitoring.stale_training_hours, self.airflow.train_every_hours
        if 0 < stale <= every:
            raise ValueError(
                f"MUR_STALE_TRAINING_HOURS ({stale}) must exceed MUR_TRAIN_EVERY_HOURS ({every}): every pair would"
                " be reported stale before each training (0 turns the check off)"
            )
        return self

    def replace(self, **changes: Any) -> Settings:
        """A copy with these fields (flat names) changed; not validated again, like ``model_copy``."""
        update: dict[str, dict[str, Any]] = {}
        for name, value in changes.items():
            update.setdefault(FIELD_GROUP[name], {})[name] = value
        return self.model_copy(update={g: getattr(self, g).model_copy(update=u) for g, u in update.items()})

    @classmethod
    def defaults(cls, **changes: Any) -> Settings:
        """The documented defaults, reading no variable, ``.env`` or secret file, with ``changes`` (flat
        names; nothing validated)."""
        groups = {n: kind.model_construct() for n, kind in GROUP_TYPES.items()}
        return cls.model_construct(None, **groups).replace(**changes)

    def flat(self, **dump: Any) -> dict[str, Any]:
        """Every group's ``model_dump(**dump)`` in one dict by field name (``exclude_unset=True``: the fields
        set by arguments, the environment, ``.env`` or secret files)."""
        return {k: v for name in GROUP_TYPES for k, v in getattr(self, name).model_dump(**dump).items()}

    @property
    def registration_mode(self) -> Literal["open", "invite", "closed"]:
        """``registration``, or its default: invite-only in production, open elsewhere."""
        if self.dashboard.registration is not None:
            return self.dashboard.registration
        return "invite" if self.general.env == "production" else "open"


GROUP_TYPES: dict[str, type[_Group]] = {
    name: info.default_factory  # type: ignore[misc]
    for name, info in Settings.model_fields.items()
}
"""Each group's name and class."""
FIELD_GROUP: dict[str, str] = {
    field: name for name, kind in GROUP_TYPES.items() for field in kind.model_fields
}
"""Each field's group: ``FIELD_GROUP["epochs"] == "training"``."""
GROUP_NAMES = frozenset(kind.__name__ for kind in GROUP_TYPES.values())


def invalid_settings(exc: Exception) -> str | None:
    """One line for a :class:`pydantic.ValidationError` raised while reading the settings (an invalid
    ``MUR_*`` variable, a placeholder secret refused in production), naming each variable and what is wrong,
    never its value (it may be a secret); None for any other error."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError) or exc.title not in {"Settings", *GROUP_NAMES}:
        return None
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        message = error["msg"].removeprefix("Value error, ")
        if error["loc"]:  # a field: its variable (an alias such as RAY_AUTH_MODE is one already)
            name = str(error["loc"][0])
            message = (
                f"{name if name.isupper() else 'MUR_' + name.upper()}: {message[:1].lower()}{message[1:]}"
            )
        parts.append(message)
    return "invalid settings: " + "; ".join(parts)


def check_option(option: str, field: str, value: Any) -> None:
    """A command's ``--option value`` that overrides the setting ``field``, held to that setting's bounds:
    ``--epochs 0`` is refused as ``MUR_EPOCHS=0`` is (:class:`mur.errors.ConfigError`, one line naming both).
    ``None`` (the option not given) passes."""
    if value is None:
        return
    from pydantic import TypeAdapter, ValidationError

    from mur.errors import ConfigError

    info = GROUP_TYPES[FIELD_GROUP[field]].model_fields[field]
    try:
        constrained: Any = Annotated[(info.annotation, *info.metadata)]  # the field's type with its bounds
        TypeAdapter(constrained).validate_python(value)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].lower()
        raise ConfigError(f"--{option} {value}: {reason} (the bounds of MUR_{field.upper()})") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings (read from the environment once)."""
    return Settings()
