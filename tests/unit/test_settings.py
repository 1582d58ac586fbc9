"""Settings: production refuses placeholder secrets, development keeps working defaults; flat arguments and
variables reach their group."""

from __future__ import annotations

from pathlib import Path

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
    assert s.db.pg_password == "" and s.registry.s3_secret_key == "minioadmin"


def test_production_with_real_secrets_is_accepted() -> None:
    assert Settings(env="production", _env_file=None, **REAL).general.env == "production"


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


def test_database_urls_percent_encode_user_and_password() -> None:
    from psycopg.conninfo import conninfo_to_dict
    from sqlalchemy.engine import make_url

    s = Settings(_env_file=None, pg_password="p@ss/w:rd#%", pg_app_user="mur app", pg_app_password="x@y")
    assert conninfo_to_dict(s.db.dsn())["password"] == "p@ss/w:rd#%"
    assert conninfo_to_dict(s.db.app_dsn()) == {
        "user": "mur app",
        "password": "x@y",
        "dbname": "mur",
        "host": "127.0.0.1",
        "port": "5432",
    }
    assert make_url(s.db.sqlalchemy_url("airflow")).password == "p@ss/w:rd#%"


def test_gate_alpha_is_a_probability() -> None:
    with pytest.raises(ValidationError):
        Settings(promotion_alpha=1.0, _env_file=None)


def test_the_staleness_alert_must_wait_longer_than_the_training_cadence() -> None:
    # stale after 6 h by default: a training every 4 h is fine, every 6 h is refused
    assert Settings(train_every_hours=4, _env_file=None).airflow.train_every_hours == 4
    with pytest.raises(
        ValueError, match=r"MUR_STALE_TRAINING_HOURS \(6\) must exceed MUR_TRAIN_EVERY_HOURS \(6\)"
    ):
        Settings(train_every_hours=6, _env_file=None)
    assert (
        Settings(train_every_hours=12, stale_training_hours=0, _env_file=None).monitoring.stale_training_hours
        == 0
    )


def test_flat_arguments_go_to_their_group() -> None:
    s = Settings(_env_file=None, epochs=2, pg_port=5433, horizons=[1, 4])
    assert (s.training.epochs, s.db.pg_port, s.model.horizons) == (2, 5433, [1, 4])
    assert s.training.batch_size == 256 and s.db.pg_host == "127.0.0.1"  # the rest: defaults


def test_every_group_reads_its_flat_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MUR_EPOCHS", "7")
    monkeypatch.setenv("MUR_PAIRS", "BTC_usdt, eth_usdt")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "t" * 32)
    dotenv = tmp_path / ".env"
    dotenv.write_text("MUR_PG_HOST=db.internal\nMUR_HORIZONS=1,4\n")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "mur_s3_secret_key").write_text("from-a-file")
    monkeypatch.setenv("MUR_SECRETS_DIR", str(secrets))
    s = Settings(_env_file=dotenv, seed=5)
    assert s.training.epochs == 7 and s.training.seed == 5
    assert s.general.pairs == ["btc_usdt", "eth_usdt"] and s.ray.ray_auth_token == "t" * 32
    assert s.db.pg_host == "db.internal" and s.model.horizons == [1, 4]
    assert s.registry.s3_secret_key == "from-a-file"
    assert {"epochs", "pairs", "ray_auth_token", "pg_host", "s3_secret_key"} <= set(
        s.flat(exclude_unset=True)
    )


def test_replace_changes_a_copy() -> None:
    s = Settings(_env_file=None)
    changed = s.replace(epochs=3, pg_port=1)
    assert (changed.training.epochs, changed.db.pg_port) == (3, 1)
    assert (s.training.epochs, s.db.pg_port) == (30, 5432)
    with pytest.raises(KeyError):
        s.replace(no_such_field=1)


def test_unknown_drift_inputs_are_refused() -> None:
    with pytest.raises(ValidationError, match="unknown drift input"):
        Settings(_env_file=None, monitor_drift_alert_features="abs_log_return,nope")
