"""The Monitoring page's "Champion and shadows" panel (issue 37): the served champion and every version in
shadow side by side, from the latest monitoring report's ``shadows`` (:mod:`mur.monitoring.shadows`) and the
champion's latest alias move (:mod:`mur.db.alias_history`: the gate's rule and reason, or ``live`` /
``rollback``). See ``docs/monitoring.md``, "Shadows".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from dash import Dash, Input, Output, html
from dash.development.base_component import Component
from pydantic import ValidationError

from dash_app.components import data_table, fmt_number, fmt_pct, fmt_signed_pct, muted, notice
from dash_app.context import get_context, require_user
from dash_app.monitoring_charts import NO_REPORT
from mur.db.alias_history import AliasMove, list_moves
from mur.errors import MurError
from mur.monitoring.report import MonitoringReport, ShadowRow
from mur.monitoring.store import latest_report

logger = logging.getLogger(__name__)

WHAT = (
    "A shadow is a version the promotion gate did not make champion but that passed its sanity checks: it "
    "forecasts every recorded candle beside the champion, never served, and each market hour monitoring "
    "scores it against the champion's forecasts of the same resolved targets; a shadow significantly better "
    'at some horizon (and worse at none) is promoted with reason "live".'
)
NO_SHADOW = "No version in shadow for this pair."
MOVES_LOOKED_AT = 20


def horizon_line(h: Mapping[str, float]) -> str:
    """One horizon's live scores: pinball skill vs the champion, n, both coverages, the DM p-values."""
    return (
        f"{int(h.get('hours', 0))} h: pinball skill {fmt_signed_pct(h.get('score_skill'))} vs champion "
        f"(+ better), n = {int(h.get('n', 0))}, coverage {fmt_pct(h.get('coverage'))} vs "
        f"{fmt_pct(h.get('champion_coverage'))} (nominal {fmt_pct(h.get('nominal'), 0)}), "
        f"p better {fmt_number(h.get('p_better'), 3)} / worse {fmt_number(h.get('p_worse'), 3)}"
    )


def champion_row(version: str | None, moves: Sequence[AliasMove]) -> dict[str, Any]:
    """The champion's row (column: cell): the reason of its latest alias move (the gate's rule, ``live`` or a
    rollback)."""
    move = next((m for m in moves if str(m.version) == str(version)), None)
    gate = (
        f"{move.scores.get('gate_rule') or move.action}: {move.reason}"
        if move
        else "not recorded (promoted before the alias history; see /v1/models)"
    )
    return {
        "version": f"v{version}" if version is not None else "–",
        "status": "serving (champion)",
        "gate": gate,
        "live scores per horizon": "–",
        "live decision": "–",
    }


def shadow_row(row: ShadowRow) -> dict[str, Any]:
    lines = [html.Div(horizon_line(h)) for h in row.horizons]
    return {
        "version": f"v{row.version}",
        "status": row.status,
        "gate": row.gate_reason or "–",
        "live scores per horizon": html.Div(lines) if lines else "–",
        "live decision": row.live_reason or "–",
    }


def shadows_panel(report: MonitoringReport | None, moves: Sequence[AliasMove] = ()) -> Component:
    """The champion's row and one per shadow of ``report`` (the latest), or the empty state."""
    if report is None:
        return muted(NO_REPORT)
    promoted = next((s.version for s in report.shadows if s.status == "promoted"), None)
    latest = str(moves[0].version) if moves else None  # the alias's last move (a report made before it: none)
    version = str(promoted) if promoted is not None else report.champion_version or latest
    rows = [champion_row(version, moves), *(shadow_row(s) for s in report.shadows)]
    empty = [] if report.shadows else [muted(NO_SHADOW, id="shadows-none")]
    table = data_table(list(rows[0]), [list(row.values()) for row in rows], id="shadows-rows")
    return html.Div([muted(WHAT), table, *empty])


def update(pair: str | None, _n_intervals: int | None = None) -> Component | str:
    """The panel for ``pair`` (again on the Monitoring page's refresh timer)."""
    require_user()
    context = get_context()
    if pair not in context.pairs():
        return ""
    try:
        report = latest_report(context.db, pair)
        moves = list_moves(context.db, pair, limit=MOVES_LOOKED_AT) if report else []
    except (MurError, psycopg.Error, ValidationError) as exc:
        logger.error("monitoring page: cannot read the shadows of %s: %s", pair, exc)
        return notice("The champion and shadows cannot be read right now; try again shortly.", "bad")
    return shadows_panel(report, moves)


def register_callbacks(app: Dash) -> None:
    app.callback(
        Output("monitoring-shadows", "children"),
        Input("monitoring-pair", "value"),
        Input("monitoring-refresh", "n_intervals"),
    )(update)
