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
    """Version, training window, plain-language skills (point, range, coverage), a "no skill" badge when
    the point forecast does not beat persistence, and the metric tables."""
    window = model.data_window
    window_text = f"{window.get('start') or '?'} → {window.get('end') or '?'}" if window else "–"
    skill, interval_skill, coverage = model.skill, model.interval_skill, model.coverage
    badge: Component | str = ""
    if skill is not None and skill <= 0:
        badge = html.Span(
            "no skill",
            className="badge warn",
            id="no-skill-badge",
            title="the next-hour point forecast does not beat 'no change' (persistence)",
        )
    lines: list[Any] = [
        html.Strong(f"{model.pair.upper()} champion: version {model.version}"),
        f" (alias {model.alias}) " if model.alias else " ",
        badge,
        html.Br(),
        html.Span(f"trained on {window_text}", className="muted", id="trained-window"),
    ]
    lines += [html.Br(), html.Span(_point_sentence(skill), id="point-skill")]
    if interval_skill is not None:
        lines += [html.Br(), html.Span(_range_sentence(interval_skill), id="interval-skill")]
    if coverage is not None:
        lines += [
            html.Br(),
            html.Span(
                f"Calibration: {coverage:.0%} of the test hours closed inside the 90 % range (ideal: 90 %).",
                id="coverage",
            ),
        ]
    return html.Div([html.P(lines), metrics_table(model), horizon_table(model)])


def _point_sentence(skill: float | None) -> str:
    if skill is None:
        return "Point forecast: no skill figure."
    if skill > 0:
        return f"Point forecast: {skill:.2%} smaller errors than 'no change' (persistence) on unseen hours."
    return f"Point forecast: no better than 'no change' (skill {skill:+.2%}); use the range, not the number."


def _range_sentence(interval_skill: float) -> str:
    if interval_skill > 0:
        return (
            f"Range: {interval_skill:.0%} better interval score than fixed historical ranges "
            "(narrower where it can be, wider where it must)."
        )
    return f"Range: no better than fixed historical ranges (interval skill {interval_skill:+.1%})."


def horizon_table(model: ChampionModel) -> Component:
    """Per horizon: point skill, coverage, interval skill vs the naive and the EWMA baselines."""
    rows = model.horizon_metrics
    if not rows:
        return html.Div()
    head = ["horizon", "point skill", "coverage", "range skill vs naive", "vs EWMA"]
    body = [
        [
            f"{h.get('hours')} h",
            fmt_number(h.get("skill"), 4),
            fmt_number((h.get("interval") or {}).get("coverage"), 3),
            fmt_number(h.get("interval_skill"), 3),
            fmt_number(h.get("interval_skill_vs_ewma"), 3),
        ]
        for h in rows
    ]
    return data_table(head, body, id="horizon-metrics")
