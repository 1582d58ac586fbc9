"""Versioned model configurations in PostgreSQL (mur/db/model_configs.py, sql/0010): versions count up per
pair, one active at most, a rollback and a reset, and the active one survives a new pool (a restart)."""

from __future__ import annotations

import uuid

import pytest

from mur.db import Database
from mur.db import model_configs as mc
from mur.errors import DataValidationError
from mur.settings import Settings

pytestmark = pytest.mark.pg


def _pair() -> str:
    return f"t{uuid.uuid4().hex[:8]}_usdt"


def test_versions_and_the_one_active(database: Database, pg_settings: Settings) -> None:
    pair = _pair()
    assert mc.active_config(database, pair) is None
    first = mc.save_config(
        database,
        pair,
        {"arch": "gru", "hidden_size": 64},
        activate=True,
        search_id="s1",
        evidence={"gain": 0.1},
    )
    assert (first.version, first.active, first.config["arch"]) == (1, True, "gru")
    second = mc.save_config(database, pair, {"arch": "lstm"}, activate=False, search_id="s2")
    assert (second.version, second.active) == (2, False)
    active = mc.active_config(database, pair)
    assert active is not None and active.version == 1 and active.evidence == {"gain": 0.1}
    third = mc.save_config(database, pair.upper(), {"learning_rate": 0.002}, activate=True)
    assert third.version == 3 and third.pair == pair
    assert [r.version for r in mc.config_history(database, pair)] == [3, 2, 1]
    assert [r.active for r in mc.config_history(database, pair)] == [True, False, False]
    with Database(pg_settings, maxconn=1) as fresh:  # a new process sees the same active version
        again = mc.active_config(fresh, pair)
    assert again is not None and again.version == 3 and again.config == {"learning_rate": 0.002}


def test_rollback_reset_and_unknown_version(database: Database) -> None:
    pair = _pair()
    mc.save_config(database, pair, {"arch": "gru"}, activate=True)
    mc.save_config(database, pair, {"arch": "lstm"}, activate=True)
    back = mc.set_active(database, pair, 1)
    assert back is not None and back.version == 1
    with pytest.raises(DataValidationError, match="no model configuration version 9"):
        mc.set_active(database, pair, 9)
    still = mc.active_config(database, pair)
    assert still is not None and still.version == 1  # the failed switch rolled back
    assert mc.set_active(database, pair, None) is None
    assert mc.active_config(database, pair) is None
    with pytest.raises(DataValidationError):
        mc.save_config(database, pair, {}, activate=True)
