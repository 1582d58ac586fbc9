"""Training uses the pair's active tuned configuration (mur/training/tuned.py over sql/0010): ``mur train
--tuned`` trains it, a plain ``mur train`` does not, and the DAG's look-up computes the same idempotency key
as the job's driver will (with the configuration's version in it)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cli_in_process import run_mur

from mur.db import Database
from mur.db.model_configs import save_config
from mur.orchestration.tasks import expected_idempotency_key
from mur.settings import Settings
from mur.training.driver import PreparedTraining, prepare_training
from mur.training.ray_fit import RayFit
from mur.training.tuned import PARAM, tuned_settings

pytestmark = pytest.mark.pg
END = datetime(2025, 3, 1, 5, tzinfo=UTC)
TUNED = {"arch": "gru", "hidden_size": 8, "seq_len": 12, "feature_set": "reference", "weight_decay": 1e-4}


@pytest.fixture
def tuned_db(pg_database_factory: Callable[..., Settings]) -> Settings:
    """A fresh database whose btc_usdt has an active tuned configuration (version 2; version 1 inactive)."""
    settings = pg_database_factory()
    with Database(settings, maxconn=1) as db:
        save_config(db, "btc_usdt", {"arch": "lstm", "hidden_size": 4}, activate=False)
        save_config(db, "btc_usdt", TUNED, activate=True, search_id="test")
    return settings


def test_tuned_settings_and_the_dag_key_match_the_driver(tuned_db: Settings) -> None:
    settings = tuned_db.replace(train_days=30)
    tuned, params = tuned_settings(settings, "btc_usdt")
    assert params == {PARAM: 2} and (tuned.model.arch, tuned.model.seq_len, tuned.training.weight_decay) == (
        "gru",
        12,
        1e-4,
    )
    assert tuned_settings(settings, "eth_usdt") == (settings, {})  # no configuration: the settings
    prep = prepare_training(
        settings,
        "btc_usdt",
        fit=RayFit.from_settings(settings),
        end=END,
        register=False,
        tuned=True,
        epochs=1,
    )
    assert isinstance(prep, PreparedTraining)
    assert prep.params[PARAM] == 2 and prep.params["arch"] == "gru" and prep.params["rnn_len"] == 12
    assert expected_idempotency_key(settings, "btc_usdt", END, {"epochs": 1, "num_workers": 2}) == prep.key
    off = settings.replace(use_tuned_configs=False)
    assert expected_idempotency_key(off, "btc_usdt", END, {"epochs": 1}) != prep.key


def _mur_train(settings: Settings, out: Path, *flags: str) -> dict:
    args = ("train", "btc_usdt", "--epochs", "1", "--end", "2025-03-01T05:00:00Z", "--out", str(out), *flags)
    proc = run_mur(*args, env={"MUR_PG_DATABASE": settings.db.pg_database, "MUR_TRAIN_DAYS": "30"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((out / "metrics.json").read_text())


def test_mur_train_tuned_trains_the_stored_configuration(tuned_db: Settings, tmp_path: Path) -> None:
    tuned = _mur_train(tuned_db, tmp_path / "tuned", "--tuned")
    assert tuned["arch"] == "gru"
    spec = json.loads((tmp_path / "tuned" / "feature_spec.json").read_text())
    assert "volume" not in spec["feature_names"]  # the reference feature set
    plain = _mur_train(tuned_db, tmp_path / "plain")  # not registering: the settings' configuration
    assert plain["arch"] == "lstm"
