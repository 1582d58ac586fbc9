"""Settings: production refuses placeholder secrets, development keeps working defaults."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mur.settings import Settings

REAL = {
    "secret_key": "k" * 40,
    "s3_access_key": "mur-app",
    "s3_secret_key": "s" * 40,
    "pg_password": "p" * 24,
    "pg_app_password": "a" * 24,
    "ray_auth_token": "r" * 64,
}


def test_development_defaults_need_no_secrets() -> None:
    s = Settings(env="development", _env_file=None)
    assert s.pg_password == "" and s.s3_secret_key == "minioadmin"


def test_production_with_real_secrets_is_accepted() -> None:
    assert Settings(env="production", _env_file=None, **REAL).env == "production"


@pytest.mark.parametrize(
    ("field", "value", "variable"),
    [
        ("secret_key", "change-me", "MUR_SECRET_KEY"),
        ("s3_secret_key", "minioadmin", "MUR_S3_SECRET_KEY"),
        ("s3_access_key", "minioadmin", "MUR_S3_ACCESS_KEY"),
        ("s3_access_key", "", "MUR_S3_ACCESS_KEY"),
        ("pg_password", "", "MUR_PG_PASSWORD"),
        ("pg_password", "postgres", "MUR_PG_PASSWORD"),
        ("pg_app_password", "", "MUR_PG_APP_PASSWORD"),
        ("ray_auth_token", "change-me", "RAY_AUTH_TOKEN"),
        ("ray_auth_mode", "disabled", "RAY_AUTH_MODE"),
    ],
)
def test_production_refuses_placeholders(field: str, value: str, variable: str) -> None:
    with pytest.raises(ValidationError, match=variable):
        Settings(env="production", _env_file=None, **{**REAL, field: value})


def test_gate_alpha_is_a_probability() -> None:
    with pytest.raises(ValidationError):
        Settings(promotion_alpha=1.0, _env_file=None)
