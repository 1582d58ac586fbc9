"""Ray job payloads carry no secret; a registry error is never mistaken for "not trained yet"."""

from __future__ import annotations

import json

import pytest

from mur.errors import RegistryUnavailableError
from mur.orchestration.job_submission import SECRET_FIELDS, runtime_env
from mur.settings import FIELD_GROUP, Settings

SECRETS = {
    "pg_password": "pg-secret-value-123",
    "secret_key": "flask-secret-value-456",
    "s3_access_key": "s3-access-value-789",
    "s3_secret_key": "s3-secret-value-abc",
    "airflow_password": "airflow-secret-value-def",
    "discord_webhook_url": "https://discord.example/api/webhooks/1/secret-token-ghi",
    "binance_api_key": "binance-key-value-jkl",
    "binance_api_secret": "binance-secret-value-mno",
    "pg_app_password": "pg-app-secret-value-stu",
    "ray_auth_token": "ray-token-value-pqr-0123456789abcdef0123456789",
    "mlflow_username": "mlflow-user-value-vwx",
    "mlflow_password": "mlflow-password-value-yz0",
}


def test_no_secret_value_reaches_the_submitted_runtime_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():  # set both in the environment and explicitly
        monkeypatch.setenv(f"MUR_{name.upper()}", value)
    settings = Settings(_env_file=None, epochs=7, **SECRETS)
    env = runtime_env(settings)
    dumped = json.dumps(env)
    for name, value in SECRETS.items():
        assert value not in dumped, f"{name} leaked into the job payload"
    assert set(SECRETS) == set(SECRET_FIELDS)
    assert env["env_vars"]["MUR_EPOCHS"] == "7"  # the job still sees the caller's training settings
    assert "AWS_SECRET_ACCESS_KEY" not in env["env_vars"]


def test_every_secret_looking_setting_is_kept_out_of_job_payloads() -> None:
    """A new credential setting cannot slip into job payloads by being forgotten in SECRET_FIELDS."""
    import re

    secret_name = re.compile(r"password|secret|_key$|token|webhook")
    looks_secret = {name for name in FIELD_GROUP if secret_name.search(name) and not name.endswith("_dir")}
    assert looks_secret <= SECRET_FIELDS, looks_secret - SECRET_FIELDS


def test_find_version_fails_on_a_registry_error_instead_of_retraining() -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE

    from mur.registry.versions import find_version

    class Flaky:
        def search_model_versions(self, _query: str) -> list:
            raise MlflowException(
                "API request to endpoint failed with error code 503", error_code=TEMPORARILY_UNAVAILABLE
            )

    class Missing:
        def search_model_versions(self, _query: str) -> list:
            raise MlflowException(
                "Registered Model with name=mur-x_usdt not found", error_code=RESOURCE_DOES_NOT_EXIST
            )

    with pytest.raises(RegistryUnavailableError, match="registry"):
        find_version(Flaky(), "btc_usdt", "key")
    assert find_version(Missing(), "btc_usdt", "key") is None
