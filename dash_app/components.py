"""Small building blocks shared by the pages: notices, number formatting, metric tables."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from dash import dcc, html
from dash.development.base_component import Component

from mur.serving.contract import ModelOut

METRIC_COLUMNS = (
    ("mae", "MAE"),
    ("rmse", "RMSE"),
    ("mape", "MAPE"),
    ("directional_accuracy", "direction right"),
)
Columns = Sequence[tuple[str, Callable[[Any], Any]]]
"""A table's columns for :func:`column_table`: title, and the cell (text or component) of one item."""
HORIZON_COLUMNS: Columns = (
    ("horizon", lambda h: f"{h.hours} h"),
    ("point skill", lambda h: fmt_signed_pct(h.skill, 2)),
    ("coverage (nominal 90%)", lambda h: fmt_pct(h.interval.coverage)),
    ("range skill vs naive", lambda h: fmt_signed_pct(h.interval_skill)),
    ("vs EWMA", lambda h: fmt_signed_pct(h.interval_skill_vs_ewma)),
)


def notice(message: str | list[Any], kind: str = "warn", **kwargs: Any) -> Component:
    """A coloured message line (``kind``: ``warn``, ``bad`` or ``ok``)."""
    return html.Div(message, className=f"notice {kind}", role="status", **kwargs)


def muted(text: Any, **kwargs: Any) -> Component:
    """A paragraph of secondary text (``.muted``): what a section shows and how, or that it is empty."""
    return html.P(text, className="muted", **kwargs)


def card(title: str, *children: Any) -> Component:
    """A page section (``.card``): its ``<h3>`` title over ``children``."""
    return html.Div([html.H3(title), *children], className="card")


def row(*children: Any, **kwargs: Any) -> Component:
    """Controls side by side (``.row``: a flex row that wraps)."""
    return html.Div(list(children), className="row", **kwargs)


def field(label: str, control: Component, *extra: Component, labelled: bool = True) -> Component:
    """A form control under its label (``.field``); the label names the control (``htmlFor`` its id) unless
    ``labelled`` is False (a group of radio buttons or checkboxes has no one element to name)."""
    caption = html.Label(label, htmlFor=getattr(control, "id", None)) if labelled else html.Label(label)
    return html.Div([caption, control, *extra], className="field")


def pair_dropdown(dropdown_id: str, pairs: Sequence[str], width: str) -> Component:
    """A dropdown of ``pairs`` (shown upper case), the first one chosen."""
    return dcc.Dropdown(
        id=dropdown_id,
        options=[{"label": p.upper(), "value": p} for p in pairs],
        value=pairs[0] if pairs else None,
        clearable=False,
        style={"width": width},
    )


def fmt_number(value: float | None, digits: int = 6) -> str:
    """``value`` with ``digits`` significant digits, or an en dash when unknown."""
    return "–" if value is None else f"{value:.{digits}g}"


def fmt_time(value: datetime | None) -> str:
    return "–" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def fmt_span(seconds: float) -> str:
    """A duration in plain words: ``54 min``, ``3 h 5 min``, ``2 d 3 h``."""
    minutes = max(0, int(round(seconds / 60)))
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def fmt_close(close_time: datetime, now: datetime) -> str:
    """``close at 08:00 UTC (in 54 min, market time)``: when a forecast candle closes, relative to market
    ``now`` (the date is said when it is not today's)."""
    when = close_time.strftime("%H:%M UTC" if close_time.date() == now.date() else "%Y-%m-%d %H:%M UTC")
    delta = (close_time - now).total_seconds()
    relative = f"in {fmt_span(delta)}" if delta >= 0 else f"{fmt_span(-delta)} ago"
    return f"close at {when} ({relative}, market time)"


def fmt_age(trained_until: datetime, now: datetime) -> str:
    """``trained 3 market hours ago``: the model's age from its last training candle to market ``now``."""
    hours = max(0, int((now - trained_until).total_seconds() // 3600))
    if hours == 0:
        return "trained within the last market hour"
    unit = "market hour" if hours == 1 else "market hours"
    return (
        f"trained {hours} {unit} ago" if hours < 48 else f"trained {fmt_span(hours * 3600)} ago (market time)"
    )


def fmt_pct(value: float | None, digits: int = 1) -> str:
    """A share as a percentage (``0.883`` -> ``88.3%``), or an en dash."""
    return "–" if value is None else f"{value * 100:.{digits}f}%"


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


def column_table(columns: Columns, items: Iterable[Any], **kwargs: Any) -> Component:
    """A :func:`data_table` with one row per item: each column is its title and the item's cell."""
    rows = [[cell(item) for _, cell in columns] for item in items]
    return data_table([title for title, _ in columns], rows, **kwargs)


def metrics_table(model: ModelOut) -> Component:
    """Test metrics of the champion and its baselines (persistence, linear), as the registry recorded them."""
    rows = [
        [key, *(_metric_cell(key, name, getattr(scores, name)) for name, _ in METRIC_COLUMNS)]
        for key in ("model", "persistence", "linear")
        if (scores := getattr(model.metrics, key, None)) is not None
    ]
    if not rows:
        return muted("No test metrics recorded for this version.")
    return data_table(["", *(title for _, title in METRIC_COLUMNS)], rows)


def _metric_cell(predictor: str, name: str, value: float | None) -> str:
    """A test metric as people read it: MAPE in percent with two decimals, direction as a share; persistence
    predicts no change, so it has no direction to get right ("n/a", not "0"); nor has a model whose median
    stayed at the last close (exactly 0 right over the test hours: a forecast that moves is right about half
    the time)."""
    if name == "directional_accuracy":
        return "n/a (no change)" if predictor == "persistence" or value == 0 else fmt_pct(value)
    if name == "mape":
        return "–" if value is None else f"{value:.2f}%"
    return fmt_number(value, 5)


def fmt_signed_pct(value: float | None, digits: int = 1) -> str:
    """A signed percentage (``0.0123`` -> ``+1.2%``); one that rounds to zero is ``0.0%`` (never ``-0.0%``)."""
    if value is None:
        return "–"
    text = f"{value * 100:+.{digits}f}%"
    return text[1:] if float(text[:-1]) == 0 else text


def champion_summary(model: ModelOut) -> Component:
    """Version, training window, plain-language skills (point, range, coverage), a "no skill" badge when
    the point forecast does not beat persistence, and the metric tables."""
    window, metrics = model.trained_window, model.metrics
    window_text = f"{window.start or '?'} → {window.end or '?'}" if window else "–"
    skill, interval_skill, coverage = (
        (metrics.skill, metrics.interval_skill, metrics.coverage) if metrics else (None, None, None)
    )
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
    return (
        f"Point forecast: no better than 'no change' (skill {fmt_signed_pct(skill, 2)}); use the range, "
        "not the number."
    )


def _range_sentence(interval_skill: float) -> str:
    if interval_skill > 0:
        return (
            f"Range: {interval_skill:.0%} better interval score than fixed historical ranges "
            "(narrower where it can be, wider where it must)."
        )
    return f"Range: no better than fixed historical ranges (interval skill {fmt_signed_pct(interval_skill)})."


def horizon_table(model: ModelOut) -> Component:
    """Per horizon: point skill, coverage, interval skill vs the naive and the EWMA baselines."""
    rows = model.metrics.horizons if model.metrics else None
    if not rows:
        return html.Div()
    return column_table(HORIZON_COLUMNS, rows, id="horizon-metrics")
