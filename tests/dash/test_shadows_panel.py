"""The Monitoring page's "Champion and shadows" panel (issue 37): its render function (fast tier) and its
callback through the app as the renderer sends it (the report and the alias history stubbed, nothing stored)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import plotly.utils
import pytest
from dash_fakes import monitoring_report
from dash_helpers import callback_json, dash_update, logged_in, make_user, text_of
from flask.testing import FlaskClient

from dash_app import shadows_view
from dash_app.shadows_view import NO_SHADOW, shadows_panel
from mur.db import Database
from mur.db.alias_history import AliasMove
from mur.monitoring.report import ShadowRow

WHEN = datetime(2024, 11, 5, 12, tzinfo=UTC)
HORIZON = {
    "hours": 1,
    "n": 60,
    "nominal": 0.9,
    "coverage": 0.883,
    "champion_coverage": 0.85,
    "pinball": 0.0098,
    "champion_pinball": 0.0102,
    "p_worse": 0.97,
    "p_better": 0.031,
    "point_gap": -0.001,
    "point_p_worse": 0.9,
    "score_skill": 0.0392,
}
SHADOW = ShadowRow(
    version=9,
    gate_reason="worse-than-champion: 1 h pinball skill -0.012 vs champion v7 (p worse 0.04)",
    live_reason="live: too few resolved targets (1 h 60; 72 needed)",
    horizons=[HORIZON],
)


def champion_move(version: int = 7) -> AliasMove:
    return AliasMove(id=1, pair="btc_usdt", alias="champion", version=version, previous_version=None,
                     action="gate", actor="gate", reason="first version that beats persistence",
                     market_time=WHEN, wall_time=WHEN, scores={"gate_rule": "first"})  # fmt: skip


def as_text(component: Any) -> str:
    return text_of(json.loads(json.dumps(component, cls=plotly.utils.PlotlyJSONEncoder)))


def with_shadows(*shadows: ShadowRow) -> Any:
    return monitoring_report(as_of="2024-11-05T12:00:00Z").model_copy(update={"shadows": list(shadows)})


def test_one_shadow_beside_the_champion() -> None:
    text = as_text(shadows_panel(with_shadows(SHADOW), [champion_move()]))
    assert "A shadow is a version the promotion gate did not make champion" in text
    assert 'promoted with reason "live"' in text
    assert "v7" in text and "serving (champion)" in text and "first: first version that beats" in text
    assert "v9" in text and "shadow" in text and "worse-than-champion: 1 h pinball skill" in text
    assert "1 h: pinball skill +3.9% vs champion (+ better), n = 60" in text
    assert "coverage 88.3% vs 85.0% (nominal 90%)" in text and "p better 0.031 / worse 0.97" in text
    assert "live: too few resolved targets" in text
    assert NO_SHADOW not in text
    assert text.index("v7") < text.index("v9")  # the champion first


def test_no_shadow_and_an_unrecorded_champion() -> None:
    text = as_text(shadows_panel(with_shadows(), []))
    assert NO_SHADOW in text and "v7" in text and "not recorded" in text


def test_a_report_made_before_the_first_champion_names_it_from_the_alias_history() -> None:
    early = with_shadows().model_copy(update={"champion_version": None})  # the first hour's monitoring run
    text = as_text(shadows_panel(early, [champion_move(1)]))
    assert "v1" in text and "first: first version that beats" in text and "not recorded" not in text


def test_a_promoted_shadow_is_the_champion_row() -> None:
    promoted = SHADOW.model_copy(
        update={"status": "promoted", "live_reason": "live: ranges significantly better"}
    )
    text = as_text(shadows_panel(with_shadows(promoted), [champion_move(9), champion_move(7)]))
    assert text.index("v9") < text.index("serving (champion)") and "promoted" in text


def test_the_panel_through_the_app(
    client: FlaskClient, dash_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shadows_view, "latest_report", lambda _db, _pair: with_shadows(SHADOW))
    monkeypatch.setattr(shadows_view, "list_moves", lambda _db, _pair, limit: [champion_move()])
    logged_in(client, make_user(dash_database))
    show = {
        "inputs": [
            {"id": "monitoring-pair", "property": "value", "value": "btc_usdt"},
            {"id": "monitoring-refresh", "property": "n_intervals", "value": 0},
        ],
        "changed": ["monitoring-pair.value"],
    }
    out = callback_json(dash_update(client, "monitoring-shadows.children", **show))
    text = text_of(out["monitoring-shadows"])
    assert "v9" in text and "+3.9%" in text and "worse-than-champion" in text and "first: " in text
