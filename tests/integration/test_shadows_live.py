"""Shadow challengers judged live (mur/monitoring/shadows.py, sql/0012) on a throwaway PostgreSQL database and a
throwaway MLflow registry (SQLite): a shadow's forecasts are scored against the served ones of the same resolved
targets, one score per (version, target, horizon); it waits for enough resolved targets, is promoted with
reason "live" (the alias moves, the move is recorded, its shadow alias goes) when its ranges are significantly
better, and is retired when expired; at most K shadows per pair."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from mur.db import Database
from mur.db.alias_history import list_moves
from mur.db.forecasts import fill_actuals, record_forecast, record_shadow_body, shadow_pairs
from mur.monitoring.shadows import review_shadows
from mur.registry.aliases import keep_shadows
from mur.registry.names import CHAMPION, model_name, shadow_alias
from mur.settings import Settings
from mur.timeutil import iso

pytestmark = pytest.mark.pg
T0 = datetime(2025, 1, 6, 0, tzinfo=UTC)
H = timedelta(hours=1)
N = 80


def _registered(client: Any, prefix: str, as_of: list[datetime]) -> tuple[str, str]:
    pair = f"t{uuid.uuid4().hex[:8]}_usdt"
    name = model_name(pair, prefix)
    client.create_registered_model(name)
    for when in as_of:
        client.create_model_version(name, source="/nowhere", tags={"as_of": iso(when), "gate_reason": "lost"})
    client.set_registered_model_alias(name, CHAMPION, "1")
    return pair, name


def _serve_hours(db: Database, pair: str) -> None:
    """N served 1 h forecasts of v1 (one width for calm and wild hours) and v2's in shadow (following the
    volatility), then the closes."""
    rng = np.random.default_rng(11)
    sigma = np.where((np.arange(N) // 12) % 2 == 0, 0.003, 0.015)
    r = sigma * rng.standard_normal(N)
    last = 100.0 * np.exp(np.cumsum(np.r_[0.0, r[:-1]]))
    width = 1.1 * float(sigma.mean())
    for i in range(N):
        target, close = T0 + (i + 1) * H, float(last[i])
        record_forecast(db, pair=pair, model_version="1", target_time=target, predicted=close, last_close=close,
                        lower=close * np.exp(-width), upper=close * np.exp(width), level=0.9, made_at=target - H)  # fmt: skip
        band = {"hours": 1, "target_time": iso(target), "median": close, "level": 0.9,
                "lower": close * np.exp(-1.645 * sigma[i]), "upper": close * np.exp(1.645 * sigma[i])}  # fmt: skip
        body = {"pair": pair, "model_version": 2, "last_close": close, "horizons": [band]}
        assert record_shadow_body(db, body, target - H) == 1
        twice = {**body, "horizons": [{**band, "median": close * 2, "upper": close * 3}]}
        assert record_shadow_body(db, twice, target - H) == 0  # one score per (version, target, horizon)
    fill_actuals(db, pair=pair, candles=[(T0 + (i + 1) * H, float(last[i] * np.exp(r[i]))) for i in range(N)])


def test_a_better_shadow_waits_for_evidence_then_is_promoted_live(registry: tuple[Settings, Any]) -> None:
    settings, client = registry
    pair, name = _registered(client, settings.registry.registry_prefix, [T0 - 2 * H, T0 - H])
    client.set_registered_model_alias(name, shadow_alias(2), "2")
    with Database(settings) as db:
        _serve_hours(db, pair)
        early = review_shadows(settings, db, client, pair, T0 + 20 * H)
        assert [(r.version, r.status) for r in early] == [(2, "shadow")]
        assert "too few resolved targets" in early[0].live_reason
        assert len(shadow_pairs(db, pair=pair, version=2, until=T0 + 20 * H)) == 19
        rows = review_shadows(settings, db, client, pair, T0 + (N + 2) * H)
        moves = list_moves(db, pair)
    assert [(r.version, r.status) for r in rows] == [(2, "promoted")], rows
    assert rows[0].live_reason.startswith("live: ranges significantly better")
    assert rows[0].horizons[0]["n"] == N and rows[0].horizons[0]["score_skill"] > 0
    assert int(client.get_model_version_by_alias(name, CHAMPION).version) == 2
    assert shadow_alias(2) not in (client.get_registered_model(name).aliases or {})
    assert (moves[0].version, moves[0].previous_version, moves[0].action) == (2, 1, "live")
    tag = json.loads(client.get_model_version(name, "2").tags["live_scores"])
    assert tag["rule"] == "live" and tag["horizons"][0]["p_better"] < 0.05


def test_expired_shadows_are_retired_and_at_most_k_are_kept(registry: tuple[Settings, Any]) -> None:
    settings, client = registry
    pair, name = _registered(client, settings.registry.registry_prefix, [T0, T0, T0, T0 - 200 * H])
    assert keep_shadows(client, name, keep=2, add=2) == [2]
    assert keep_shadows(client, name, keep=2, add=3) == [3, 2]
    assert keep_shadows(client, name, keep=2, add=4) == [4, 3]  # the newest K
    assert sorted(a for a in client.get_registered_model(name).aliases if a.startswith("shadow")) == [
        "shadow-v3",
        "shadow-v4",
    ]
    with Database(settings) as db:
        rows = review_shadows(settings, db, client, pair, T0 + 10 * H)
    assert {r.version: r.status for r in rows} == {4: "retired", 3: "shadow"}  # v4: 210 market hours old
    assert set(client.get_registered_model(name).aliases) == {CHAMPION, "shadow-v3"}
