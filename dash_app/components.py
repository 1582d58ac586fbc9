"""Small building blocks shared by the pages: notices, number formatting, metric tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from dash import html
from dash.development.base_component import Component

from dash_app.clients import ChampionModel

METRIC_COLUMNS = (("mae", "MAE"), ("rmse", "RMSE"), ("mape", "MAPE %"), ("directional_accuracy", "direction"))
METRIC_ROWS = (("model", "model"), ("persistence", "persistence"), ("linear", "linear"))


def notice(message: str | list[Any], kind: str = "warn", **kwargs: Any) -> Component:
    """A coloured message line (``kind``: ``warn``, ``bad`` or ``ok``)."""
    return html.Div(message, className=f"notice {kind}", role="status", **kwargs)


def fmt_number(value: float | None, digits: int = 6) -> str:
    """``value`` with ``digits`` significant digits, or an en dash when unknown."""
    return "–" if value is None else f"{value:.{digits}g}"


def fmt_time(value: datetime | None) -> str:
    return "–" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def data_table(header: Sequence[str], rows: Sequence[Sequence[Any]], **kwargs: Any) -> Component:
    """A plain HTML table (``rows`` cells may be strings or components)."""
    return html.Table(
        [
            html.Thead(html.Tr([html.Th(h) for h in header])),
            html.Tbody([html.Tr([html.Td(cell) for cell in row]) for row in rows]),
        ],
        className="data",
        **kwargs,
    )


def metrics_table(model: ChampionModel) -> Component:
    """Test metrics of the champion and its baselines (persistence, linear), as the registry recorded them."""
    rows = []
    for key, label in METRIC_ROWS:
        if isinstance(model.metrics.get(key), dict):
            rows.append([label, *(fmt_number(model.metric(key, name), 5) for name, _ in METRIC_COLUMNS)])
    if not rows:
        return html.P("No test metrics recorded for this version.", className="muted")
    return data_table(["", *(title for _, title in METRIC_COLUMNS)], rows)


def champion_summary(model: ChampionModel) -> Component:
    """Version, alias, training data window, skill and metric table of a pair's champion."""
    window = model.data_window
    window_text = f"{window.get('start', '?')} → {window.get('end', '?')}" if window else "–"
    skill = model.skill
    return html.Div(
        [
            html.P(
                [
                    html.Strong(f"{model.pair.upper()} champion: version {model.version}"),
                    f" (alias {model.alias})" if model.alias else "",
                    html.Br(),
                    html.Span(f"trained on {window_text}", className="muted"),
                    html.Br(),
                    html.Span(
                        f"skill vs persistence: {fmt_number(skill, 4)}" if skill is not None else "skill: –",
                        className="muted",
                    ),
                ]
            ),
            metrics_table(model),
        ]
    )
