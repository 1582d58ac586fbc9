"""CLI tables on a narrow terminal keep their key columns (id and name, pair and state) whole; the rest wraps."""

from __future__ import annotations

import re

import pytest
from rich.table import Table

from mur.commands.db import print_table


def test_key_columns_stay_whole_on_a_narrow_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")  # a terminal, as rich sees it
    monkeypatch.setenv("COLUMNS", "60")
    monkeypatch.delenv("NO_COLOR", raising=False)
    table = Table(title="tokens of alice")
    for column in ("id", "name", "prefix", "created", "last used", "expires", "status"):
        table.add_column(column)
    table.add_row(
        "1234", "laptop-at-home", "mur_AbCdEfGh…", "2026-11-25 08:00", "2026-11-25 09:00", "never", "active"
    )
    print_table(table)
    text = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)
    assert max(len(line) for line in text.splitlines()) <= 60  # it did have to squeeze
    assert re.search(r"│ 1234 │ laptop-at-home │", text), text


def test_the_ranges_table_shows_every_figure_whole_for_a_small_priced_pair(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`mur train`/`mur backtest`'s per-horizon table, piped (no terminal): XRP-sized Winkler and pinball scores
    and every interval skill in full (at 150 characters they were cut to "+0.0…")."""
    from rich.console import Console

    from mur.commands.ml import TABLE_WIDTH, horizon_table
    from mur.contracts import HorizonMetrics, IntervalMetrics, PredictorMetrics

    point = PredictorMetrics(mae=0.0012345, rmse=0.0023456, mape=0.31, directional_accuracy=0.5)
    band = IntervalMetrics(coverage=0.9012, width=0.013567, winkler=0.019741234, pinball=0.00081764321)
    horizons = [
        HorizonMetrics(
            hours=hours,
            n=313,
            model=point,
            persistence=point,
            skill=0.00061,
            dm_p_worse=0.85,
            dm_p_better=0.15,
            direction_p_value=0.5,
            interval_level=0.9,
            interval=band,
            naive=band,
            ewma=band,
            garch=band,
            interval_skill=0.080912,
            interval_skill_vs_ewma=-0.018234,
            interval_dm_p_worse=0.01,
            interval_dm_p_better=0.99,
            interval_skill_vs_garch=0.036411,
        )  # fmt: skip
        for hours in (1, 4, 24)
    ]
    Console(width=TABLE_WIDTH).print(horizon_table("xrp_usdt", horizons, "walk-forward ranges"))
    text = capsys.readouterr().out
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= TABLE_WIDTH
    for figure in ("+0.0809", "-0.0182", "+0.0364", "0.019741", "0.00081764", "int. skill vs (a)", "vs (c)"):
        assert figure in text, figure
