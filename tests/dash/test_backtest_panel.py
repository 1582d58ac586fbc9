"""The Forecast page's reliability card and the Monitoring page on a new stack (issue 40): the champion's
backtest track record (sql/0013_backtest_forecasts.sql) is shown under its own label beside an empty live
part, never counted in the live figures, and left out once the live track record has grown (real
PostgreSQL, no browser)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import plotly.utils
from dash_helpers import logged_in, make_user, monitoring_page, text_of
from flask.testing import FlaskClient

from dash_app.monitoring_charts import NO_REPORT
from dash_app.pages.monitoring import OUTPUT_IDS, render
from dash_app.track_view import BACKTEST_BELOW, reliability_table, track_record_view
from mur.db import Database, fill_actuals, record_forecast
from mur.db.forecasts import record_backtest
from mur.monitoring.backtest_record import LABEL
from mur.settings import Settings

PAIR = "btc_usdt"
T0 = datetime(2025, 2, 1, tzinfo=UTC)
H = timedelta(hours=1)


def shown(component: object) -> str:
    return text_of(json.loads(json.dumps(component, cls=plotly.utils.PlotlyJSONEncoder)))


def test_backtest_is_labelled_apart_until_live_grows(pg_database_factory: Callable[..., Settings]) -> None:
    with Database(pg_database_factory(), maxconn=2) as db:
        backtest = [  # 20 hours of 1 h forecasts by v3, every other close inside its range
            {"pair": PAIR, "version": 3, "target": T0 + i * H, "hours": 1, "made_at": T0 + i * H}
            | {"median": 100.0, "lower": 99.0, "upper": 101.0, "level": 0.9, "last_close": 100.5}
            | {"actual": 100.0 if i % 2 else 103.0}
            for i in range(20)
        ]
        assert record_backtest(db, backtest) == 20
        hour = T0 + 24 * H
        view = track_record_view(db, PAIR, market_hour=hour)
        assert view.counts.total == 0 and view.summary["n"] == 0 and view.reliability == []
        assert view.backtest is not None and view.backtest.version == "3"
        assert view.backtest.summary["n"] == 20 and view.backtest.summary["mae_model"] == 1.5
        assert [(r.n, r.coverage) for r in view.backtest.reliability] == [(20, 0.5)]
        text = shown(reliability_table(view.reliability, view.backtest))
        assert LABEL == "Backtest (out-of-sample, before serving)" and LABEL in text
        assert "Live (served forecasts)" in text and "No resolved forecast with a range" in text
        assert "Model v3's forecasts of its own test span" in text and "50.0% of 20 (nominal 90%)" in text
        assert "Not part of the live scores, monitoring or alerts" in text
        # the Monitoring page: the same figures under the summary, before any report (and never in it)
        out = dict(zip(OUTPUT_IDS, render(PAIR, [], [], backtest=view.backtest), strict=True))
        summary = shown(out["monitoring-summary"])
        assert NO_REPORT in summary and LABEL in summary and "50.0% of 20 (nominal 90%)" in summary
        assert LABEL not in shown(out["monitoring-status"]) + shown(out["monitoring-alerts"])

        # once the live track record holds BACKTEST_BELOW resolved forecasts, the backtest is left out
        start = hour - BACKTEST_BELOW * H
        for i in range(BACKTEST_BELOW):
            record_forecast(
                db, pair=PAIR, model_version="3", target_time=start + i * H, predicted=100.0, last_close=100.0
            )
        fill_actuals(db, pair=PAIR, candles=[(start + i * H, 100.0) for i in range(BACKTEST_BELOW)])
        view = track_record_view(db, PAIR, market_hour=hour)
        assert view.counts.resolved == BACKTEST_BELOW and view.backtest is None
        assert LABEL not in shown(reliability_table(view.reliability, view.backtest))


def test_the_paper_portfolio_shows_the_backtest_before_live_decisions(
    pg_database_factory: Callable[..., Settings],
) -> None:
    """The sizing rule on the backtest track record (labelled backtest), while no live decision exists."""
    import pytest

    from dash_app.paper_view import paper_panel
    from mur.errors import NotFoundError
    from mur.evaluation.sizing import SizingRule
    from mur.monitoring.paper import backtest_paper, paper_portfolio

    rule = SizingRule.from_settings(Settings())
    with Database(pg_database_factory(), maxconn=2) as db:
        made = [T0 + i * H for i in range(72)]  # the close of the candle each forecast was made from
        record_backtest(
            db,
            [
                {"pair": PAIR, "version": 3, "target": t + (h - 1) * H, "hours": h, "made_at": t}
                | {"median": 100.0, "lower": 100.0 - h, "upper": 100.0 + h, "level": 0.9}
                | {"last_close": 100.0 + (t - T0) / H % 3, "actual": 100.0 + ((t - T0) / H + h) % 3}
                for t in made
                for h in (1, rule.horizon)
            ],
        )
        with pytest.raises(NotFoundError):  # nothing live
            paper_portfolio(db, PAIR, market_hour=T0 + 80 * H, rule=rule)
        body = backtest_paper(db, PAIR, rule=rule)
        assert (
            body["source"] == "backtest" and body["decisions"] >= 2 and body["label"] == "paper, not advice"
        )
        assert body["strategies"]["model"] is not None and body["strategies"]["ewma"] is None  # no candles
        assert body["strategies"]["model"]["exposure_now"] is None  # its span ended: no exposure "now"
        assert "paper, not advice" in shown(paper_panel(body))
        with pytest.raises(NotFoundError):
            backtest_paper(db, "eth_usdt", rule=rule)


def test_the_backtests_naive_range_knows_only_the_closes_before_its_span(
    pg_database_factory: Callable[..., Settings],
) -> None:
    """The backtest's interval skill was measured against a naive range fitted on the last 30 days of closes,
    its own test span included (look-ahead): a Forecast page said 24 h skill -8.2 % where the champion's
    evaluation of the same forecasts, against the naive range of the closes before them, said +12.1 %."""
    with Database(pg_database_factory(), maxconn=2) as db:
        record_backtest(
            db,
            [
                {"pair": PAIR, "version": 3, "target": T0 + i * H, "hours": 1, "made_at": T0 + i * H}
                | {"median": 100.0, "lower": 99.0, "upper": 101.0, "level": 0.9, "last_close": 100.5}
                | {"actual": 100.0 if i % 2 else 103.0}
                for i in range(20)
            ],
        )
        hour = T0 + 24 * H
        before = [100.0 * 1.002 ** (i % 3) for i in range(3 * 24)]  # 3 days of small moves before the span

        def skill(span_closes: list[float]) -> float | None:
            view = track_record_view(db, PAIR, market_hour=hour, closes=before + span_closes)
            assert view.backtest is not None
            return view.backtest.reliability[0].interval_skill

        calm = skill([100.0] * 25)  # the closes from the first forecast's origin to the market hour
        assert calm is not None and skill([100.0 * (1.3 if i % 2 else 0.7) for i in range(25)]) == calm


def test_the_monitoring_pages_backtest_has_its_interval_skill(
    client: FlaskClient, dash_database: Database
) -> None:
    """The Monitoring page showed the backtest's coverage without its interval skill: it passed no closes, so
    it had no naive range to compare with (the Forecast page's card had one)."""
    span = datetime(2025, 12, 20, tzinfo=UTC)  # the closes of the 30 days before market now are bundled
    record_backtest(
        dash_database,
        [
            {"pair": PAIR, "version": 3, "target": span + i * H, "hours": 1, "made_at": span + (i - 1) * H}
            | {"median": 90_000.0, "lower": 89_000.0, "upper": 91_000.0, "level": 0.9, "last_close": 90_000.0}
            | {"actual": 90_500.0}
            for i in range(48)
        ],
    )
    logged_in(client, make_user(dash_database))
    summary = text_of(monitoring_page(client, PAIR)["monitoring-summary"])
    assert LABEL in summary and re.search(r"100\.0% of 48 \(nominal 90%\), skill [+-]\d+\.\d%", summary), (
        summary
    )
