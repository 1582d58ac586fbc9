"""Monitoring on the real PostgreSQL and the bundled candles: PSI and KS drift on hand-made samples, the
rolling window's exact statistics, which thresholds raise which alert, resolution of the track record through
the market clock, the report on a real calm->volatile transition (BTC, the crash of 2024-08-05) and on a calm
control period, and the hourly run with a local Discord stand-in and unreachable Airflow and MLflow.

The pure computations need no database (fast tier); the rest gets a fresh database per test, so the
forecasts of real bundled pairs never clash with other tests'.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from discord_stub import DiscordStub

from mur.clock import MarketClock
from mur.data import BundledMarketData
from mur.data.source import ClockedMarketData
from mur.db import Database, list_forecasts, record_forecast
from mur.db.forecasts import Forecast
from mur.monitoring.compute import (
    DRIFT_FEATURES,
    PSI_FLOOR,
    RESOLVE_LOOKBACK,
    alerts_for,
    build_report,
    drift_stats,
    psi,
    resolve_forecasts,
    thresholds_from,
    window_stats,
)
from mur.monitoring.report import DriftStat, Thresholds
from mur.monitoring.store import latest_alerts, latest_report, record_alert, report_history
from mur.monitoring.task import run_monitoring
from mur.settings import Settings
from mur.timeutil import HOUR, iso

PAIR = "btc_usdt"
CRASH_HOUR = datetime(2024, 8, 6, 12, tzinfo=UTC)
"""A day and a half after the crash of 2024-08-05: every input of the last 48 h has drifted far from the
June-July training window (PSI of |log return| about 2.4, of log range about 4.6, KS p below 1e-10)."""
CRASH_CHAMPION = {
    "version": 3,
    "data_window": {"start": "2024-06-01T00:00:00Z", "end": "2024-08-01T00:00:00Z"},
}
CALM_HOUR = datetime(2025, 5, 27, 12, tzinfo=UTC)
"""A calm control: the 48 h before it look like the 30 days before them (every PSI below 0.16, every KS p
above 0.2; the hours around it were scanned, they stay below the thresholds from 2025-05-27 00:00 to
2025-05-29 00:00)."""
CALM_CHAMPION = {
    "version": 5,
    "data_window": {"start": "2025-04-25T12:00:00Z", "end": "2025-05-25T12:00:00Z"},
}
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused


DEFAULTS = Settings.defaults()
"""The documented defaults (``Settings.defaults()`` reads no ``MUR_*`` variable, unlike ``Settings()``)."""
DEFAULT_THRESHOLDS = thresholds_from(DEFAULTS)


def thresholds(**overrides: Any) -> Thresholds:
    """Round thresholds for the hand-made cases (PSI 0.25, KS p 0.01; drift of every input alerts)."""
    values: dict[str, Any] = {
        "window_hours": 48,
        "min_resolved": 12,
        "skill_below": -0.10,
        "coverage_below": 0.70,
        "psi_above": 0.25,
        "ks_p_below": 0.01,
        "cooldown_hours": 24,
        "alert_features": list(DRIFT_FEATURES),
    }
    return Thresholds(**(values | overrides))


def candles(n: int, *, scale: float = 1.0, seed: int = 0) -> pd.DataFrame:
    """Hourly candles whose returns, ranges and volumes are ``scale`` times those of the base sample."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01 * scale, n)))
    spread = np.abs(rng.normal(0.0, 0.005 * scale, n)) + 1e-4 * scale
    return pd.DataFrame(
        {
            "timestamp": pd.date_range("2025-01-01", periods=n, freq="h", tz="UTC"),
            "open": close,
            "high": close * np.exp(spread),
            "low": close * np.exp(-spread),
            "close": close,
            "volume": rng.lognormal(5.0, 0.5, n) * scale,
        }
    )


def bundled_closes(pair: str, start: datetime, end: datetime) -> dict[datetime, float]:
    frame = BundledMarketData().klines(pair, start=start, end=end)
    return {
        ts.to_pydatetime(): float(close) for ts, close in zip(frame["timestamp"], frame["close"], strict=True)
    }


def frozen_clock(at: datetime) -> MarketClock:
    return MarketClock(start=at, origin=time.time(), speed=0.0)


@pytest.fixture
def fresh(pg_database_factory: Callable[..., Settings]) -> Iterator[tuple[Settings, Database]]:
    """A migrated database of its own (real bundled pairs' forecasts never clash with other tests')."""
    settings = pg_database_factory()
    db = Database(settings, maxconn=3)
    try:
        yield settings, db
    finally:
        db.close()


# --- PSI and KS ----------------------------------------------------------------------------------------
def test_psi_of_a_sample_against_itself_is_zero() -> None:
    sample = np.random.default_rng(1).normal(size=500)
    assert psi(sample, sample) == 0.0
    same_distribution = np.random.default_rng(2).normal(size=5000)
    assert psi(np.random.default_rng(3).normal(size=5000), same_distribution) < 0.02


def test_psi_by_hand_on_decile_bins() -> None:
    reference = np.arange(100, dtype=np.float64)  # deciles: ten bins of ten values, 10 % each
    all_in_first = np.tile(np.arange(5, dtype=np.float64), 10)  # every recent value in the lowest bin
    expected = (1.0 - 0.1) * math.log(1.0 / 0.1) + 9 * (PSI_FLOOR - 0.1) * math.log(PSI_FLOOR / 0.1)
    assert psi(reference, all_in_first) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(8.283, abs=1e-3)
    half_and_half = np.concatenate([np.full(20, 3.0), np.full(20, 13.0)])  # bins 0 and 1, half each
    expected = 2 * (0.5 - 0.1) * math.log(0.5 / 0.1) + 8 * (PSI_FLOOR - 0.1) * math.log(PSI_FLOOR / 0.1)
    assert psi(reference, half_and_half) == pytest.approx(expected, rel=1e-12)
    assert psi(reference, reference + 0.05) == 0.0  # every value stays in its bin: no shift


def test_drift_stats_identical_inputs_are_not_drifted() -> None:
    reference = candles(1000, seed=4)
    stats = drift_stats(reference, reference, thresholds())
    assert [s.feature for s in stats] == list(DRIFT_FEATURES)
    for s in stats:
        assert s.psi == pytest.approx(0.0, abs=1e-12) and s.ks == 0.0 and s.ks_p == pytest.approx(1.0)
        assert not s.drifted and s.n_reference == s.n_recent == 999
    recent = candles(200, seed=5)  # another sample of the same process
    for s in drift_stats(reference, recent, thresholds()):
        assert not s.drifted, s
        assert s.psi < 0.25 and s.ks_p > 0.01, s


def test_drift_stats_flag_a_scaled_up_recent_sample() -> None:
    reference, recent = candles(1000, seed=6), candles(200, scale=4.0, seed=7)  # returns, ranges, volumes x4
    stats = {s.feature: s for s in drift_stats(reference, recent, thresholds())}
    assert set(stats) == set(DRIFT_FEATURES)
    for s in stats.values():
        assert s.psi > 0.25 and s.ks_p < 0.01 and s.drifted, s
        assert s.recent_mean > s.reference_mean and (s.n_reference, s.n_recent) == (999, 199)
    assert stats["abs_log_return"].recent_mean / stats["abs_log_return"].reference_mean == pytest.approx(
        4, rel=0.2
    )
    assert stats["log_volume"].recent_mean - stats["log_volume"].reference_mean == pytest.approx(
        math.log(4), abs=0.15
    )
    # the same samples under stricter thresholds: not drifted
    strict = drift_stats(reference, recent, thresholds(psi_above=1e6))
    assert not any(s.drifted for s in strict)


def test_drift_stats_skip_samples_too_small_for_deciles() -> None:
    assert drift_stats(candles(15), candles(200, seed=1), thresholds()) == []  # 14 reference values < 20
    assert drift_stats(candles(500), candles(8, seed=1), thresholds()) == []  # 7 recent values < 10


# --- the rolling window ------------------------------------------------------------------------------------
T0 = datetime(2025, 3, 1, tzinfo=UTC)


def resolved(target_time: datetime, **figures: Any) -> Forecast:
    """A resolved 1 h forecast of ``target_time``, as the track record reads it."""
    return Forecast(0, "btc_usdt", "1", target_time - HOUR, target_time, **figures)


def test_window_stats_exact_numbers() -> None:
    rows = [
        # |model error| 1, |persistence error| 1, inside the range
        resolved(T0, predicted=101.0, actual=100.0, last_close=99.0, lower=99.0, upper=102.0, level=0.9),
        # 2 and 4, above the range
        resolved(
            T0 + HOUR, predicted=102.0, actual=104.0, last_close=100.0, lower=100.0, upper=103.0, level=0.9
        ),
        # 3 and 1, inside
        resolved(
            T0 + 2 * HOUR, predicted=100.0, actual=103.0, last_close=104.0, lower=98.0, upper=106.0, level=0.8
        ),
        # 0 and 2, a point forecast: no range
        resolved(
            T0 + 3 * HOUR, predicted=105.0, actual=105.0, last_close=103.0, lower=None, upper=None, level=None
        ),
    ]
    stats = window_stats(rows)
    assert stats == {
        "n": 4,
        "mae_model": 1.5,
        "mae_persistence": 2.0,
        "skill": 0.25,
        "coverage": pytest.approx(2 / 3),
        "level": 0.9,
    }
    assert window_stats([]) == {
        "n": 0,
        "mae_model": None,
        "mae_persistence": None,
        "skill": None,
        "coverage": None,
        "level": None,
    }
    exact = resolved(T0, predicted=100.0, actual=100.0, last_close=100.0, lower=None, upper=None, level=None)
    stats = window_stats([exact])
    assert stats["skill"] is None and stats["coverage"] is None and stats["mae_persistence"] == 0.0


# --- alerts -------------------------------------------------------------------------------------------------
def stats_of(n: int, *, skill: float | None = 0.05, coverage: float | None = 0.9) -> dict[str, Any]:
    return {
        "n": n,
        "skill": skill,
        "coverage": coverage,
        "level": 0.9,
        "mae_model": 1.1,
        "mae_persistence": 1.0,
    }


def drift_stat(feature: str, *, drifted: bool) -> DriftStat:
    return DriftStat(
        feature=feature,
        psi=0.9 if drifted else 0.05,
        ks=0.4 if drifted else 0.05,
        ks_p=1e-6 if drifted else 0.6,
        reference_mean=0.004,
        recent_mean=0.012 if drifted else 0.004,
        n_reference=720,
        n_recent=48,
        drifted=drifted,
        alerting=drifted,
    )


def test_alerts_for_each_threshold() -> None:
    th = thresholds()
    assert alerts_for(stats_of(48), [drift_stat("log_range", drifted=False)], th) == ([], [])

    kinds, lines = alerts_for(stats_of(48, skill=-0.2), [], th)
    assert kinds == ["skill"] and "-0.200" in lines[0] and "48 resolved" in lines[0] and "-0.10" in lines[0]

    kinds, lines = alerts_for(stats_of(30, coverage=0.5), [], th)
    assert kinds == ["coverage"] and "50%" in lines[0] and "90%" in lines[0] and "70%" in lines[0]

    kinds, lines = alerts_for(stats_of(48), [drift_stat("log_range", drifted=True)], th)
    assert kinds == ["drift:log_range"] and "log_range" in lines[0] and "PSI 0.90" in lines[0]

    kinds, _ = alerts_for(
        stats_of(12, skill=-0.5, coverage=0.1), [drift_stat("abs_log_return", drifted=True)], th
    )
    assert kinds == ["skill", "coverage", "drift:abs_log_return"]  # exactly min_resolved: alerts


def test_no_skill_or_coverage_alert_below_min_resolved() -> None:
    th = thresholds()
    assert alerts_for(stats_of(11, skill=-0.9, coverage=0.0), [], th) == ([], [])
    assert alerts_for(stats_of(0, skill=None, coverage=None), [], th) == ([], [])
    # drift does not wait for resolved forecasts
    kinds, _ = alerts_for(stats_of(3, skill=-0.9), [drift_stat("abs_log_return", drifted=True)], th)
    assert kinds == ["drift:abs_log_return"]


# --- resolution through the market clock ----------------------------------------------------------------
def test_resolve_fills_exactly_the_closed_candles(fresh: tuple[Settings, Database]) -> None:
    _, db = fresh
    clock = frozen_clock(CRASH_HOUR + timedelta(minutes=30))
    source = ClockedMarketData(BundledMarketData(), clock)
    hour = clock.hour()
    assert hour == CRASH_HOUR
    closed = [hour - 3 * HOUR, hour - 2 * HOUR, hour - HOUR]
    still_open = [hour, hour + HOUR]  # the current candle has not closed; the next has not opened
    for i, target in enumerate(closed + still_open):
        record_forecast(
            db, pair=PAIR, model_version="3", target_time=target, predicted=55_000.0 + i, last_close=54_000.0
        )
    # a 4 h forecast of a closed hour, and one too old to be looked for
    record_forecast(
        db,
        pair=PAIR,
        model_version="3",
        target_time=hour - HOUR,
        predicted=56_000.0,
        last_close=54_000.0,
        horizon_hours=4,
    )
    too_old = hour - RESOLVE_LOOKBACK - 2 * HOUR
    record_forecast(db, pair=PAIR, model_version="3", target_time=too_old, predicted=1.0, last_close=1.0)

    assert resolve_forecasts(db, source, PAIR, hour) == 4
    truth = bundled_closes(PAIR, hour - 3 * HOUR, hour + 2 * HOUR)
    assert len(truth) == 5  # the archive has every one of these candles: only the clock hides the last two
    rows = list_forecasts(db, pair=PAIR, limit=50)
    assert len(rows) == 7
    for f in rows:
        if f.target_time in closed:
            assert f.actual == truth[f.target_time], f
        else:
            assert f.actual is None, f
    assert {f.target_time for f in rows if f.actual is not None} == set(closed)
    assert resolve_forecasts(db, source, PAIR, hour) == 0  # nothing left to resolve

    # an hour later the candle of `hour` has closed too
    later = frozen_clock(CRASH_HOUR + timedelta(hours=1, minutes=5))
    assert resolve_forecasts(db, ClockedMarketData(BundledMarketData(), later), PAIR, later.hour()) == 1
    actual = {f.target_time: f.actual for f in list_forecasts(db, pair=PAIR, limit=50)}
    assert actual[hour] == truth[hour] and actual[hour + HOUR] is None and actual[too_old] is None


# --- the report on real candles ----------------------------------------------------------------------------
def persistence_forecasts(db: Database, pair: str, hour: datetime, n: int, *, band: float) -> list[float]:
    """``n`` resolved 1 h forecasts before ``hour`` that repeat the last close (skill exactly 0), with a
    +/- ``band`` range; returns the actual closes."""
    closes = bundled_closes(pair, hour - (n + 1) * HOUR, hour)
    times = sorted(closes)
    for before, target in zip(times[:-1], times[1:], strict=True):
        last = closes[before]
        record_forecast(
            db,
            pair=pair,
            model_version="3",
            target_time=target,
            predicted=last,
            last_close=last,
            lower=last * (1 - band),
            upper=last * (1 + band),
            level=0.9,
            made_at=before + timedelta(minutes=1),
        )
    return [closes[t] for t in times[1:]]


@pytest.mark.parametrize(
    ("th", "expected_kinds"),
    [
        (DEFAULT_THRESHOLDS, ["drift:abs_log_return"]),  # the defaults: only |log return| alerts
        (thresholds(), ["drift:abs_log_return", "drift:log_range", "drift:log_volume"]),
    ],
    ids=["defaults", "every-input-alerts"],
)
def test_report_shows_drift_after_the_crash(
    fresh: tuple[Settings, Database], th: Thresholds, expected_kinds: list[str]
) -> None:
    _, db = fresh
    source = ClockedMarketData(BundledMarketData(), frozen_clock(CRASH_HOUR))
    persistence_forecasts(db, PAIR, CRASH_HOUR, 24, band=0.2)
    assert resolve_forecasts(db, source, PAIR, CRASH_HOUR) == 24
    report, kinds = build_report(db, source, PAIR, CRASH_HOUR, th, champion=CRASH_CHAMPION, drift_hours=48)
    drift = {d.feature: d for d in report.drift}
    print({name: (round(d.psi, 3), f"{d.ks_p:.1e}") for name, d in drift.items()})
    assert set(drift) == set(DRIFT_FEATURES)
    for name in ("abs_log_return", "log_range"):
        # far beyond the default thresholds (PSI > 1 and KS p < 1e-4)
        assert drift[name].psi > 2.0 and drift[name].ks_p < 1e-8 and drift[name].drifted, drift[name]
        assert drift[name].recent_mean > 2 * drift[name].reference_mean
        assert drift[name].n_recent == 48
    assert drift["log_range"].n_reference == 61 * 24 - 1  # June and July, from the champion's window
    assert {d.feature for d in report.drift if d.alerting} == {k.removeprefix("drift:") for k in kinds}
    assert kinds == expected_kinds  # persistence itself: skill 0, and a +/-20 % range holds every close
    assert report.status == "alert" and len(report.alerts) == len(kinds)
    assert "abs_log_return" in report.alerts[0] and f"> {th.psi_above:g}" in report.alerts[0]
    assert report.champion_version == "3"
    assert report.trained_window == CRASH_CHAMPION["data_window"]
    assert report.n_resolved == 24 and report.skill == 0.0 and report.coverage == 1.0 and report.level == 0.9
    assert report.n_pending == 0 and len(report.rolling) == 24 and report.as_of == "2024-08-06T12:00:00Z"
    assert report.thresholds == th


@pytest.mark.parametrize("th", [DEFAULT_THRESHOLDS, thresholds()], ids=["defaults", "every-input-alerts"])
def test_report_of_a_calm_period_has_no_drift_alert(fresh: tuple[Settings, Database], th: Thresholds) -> None:
    _, db = fresh
    source = ClockedMarketData(BundledMarketData(), frozen_clock(CALM_HOUR))
    persistence_forecasts(db, PAIR, CALM_HOUR, 24, band=0.05)
    assert resolve_forecasts(db, source, PAIR, CALM_HOUR) == 24
    report, kinds = build_report(db, source, PAIR, CALM_HOUR, th, champion=CALM_CHAMPION, drift_hours=48)
    print({d.feature: (round(d.psi, 3), f"{d.ks_p:.1e}") for d in report.drift})
    assert {d.feature for d in report.drift} == set(DRIFT_FEATURES)
    for d in report.drift:
        assert d.psi < 0.25 and d.ks_p > 0.05 and not d.drifted and not d.alerting, d
        assert d.n_reference == 30 * 24 - 1 and d.n_recent == 48
    assert kinds == [] and report.alerts == []
    assert report.status == "ok" and report.n_resolved == 24
    assert report.skill == 0.0 and report.coverage == 1.0


def test_report_without_resolved_forecasts_is_insufficient_data(fresh: tuple[Settings, Database]) -> None:
    _, db = fresh
    source = ClockedMarketData(BundledMarketData(), frozen_clock(CALM_HOUR))
    report, kinds = build_report(
        db, source, PAIR, CALM_HOUR, DEFAULT_THRESHOLDS, champion=None, drift_hours=48
    )
    assert kinds == [] and report.status == "insufficient_data" and report.n_resolved == 0
    assert report.skill is None and report.coverage is None and report.rolling == []
    assert report.champion_version is None and report.trained_window is None
    assert len(report.drift) == 3  # drift is measured without forecasts (the 30 days before as reference)


# --- the hourly run: Discord stand-in, unreachable Airflow and MLflow ---------------------------------------
@pytest.fixture
def discord() -> Iterator[DiscordStub]:
    stand_in = DiscordStub()
    try:
        yield stand_in
    finally:
        stand_in.close()


COOLDOWN = 6
"""Market hours between two alerts in the run test: the crash's |log return| stays far beyond the default
thresholds against the 30 days before from 2024-08-06 12:00 to 19:00 (PSI 1.5-1.65, KS p < 1e-7)."""


@pytest.mark.usefixtures("restored_environ")
def test_run_monitoring_alerts_once_per_cooldown(
    fresh: tuple[Settings, Database], discord: DiscordStub, caplog: pytest.LogCaptureFixture
) -> None:
    base, db = fresh
    defaults = {
        name: getattr(DEFAULTS.monitoring, name)
        for name in type(DEFAULTS.monitoring).model_fields
        if name.startswith("monitor_")
    }
    settings = base.replace(
        **defaults
        | {
            "market_data": "bundled",
            "synthetic_pairs": 0,
            "pairs": [PAIR],
            "discord_webhook_url": discord.url,
            "airflow_url": UNREACHABLE,
            "mlflow_tracking_uri": UNREACHABLE,
            "monitor_cooldown_hours": COOLDOWN,
            "monitor_retrain": True,
        }
    )
    said: list[str] = []

    def run(hour: datetime) -> dict[str, Any]:
        """One run at market hour ``hour``, the market clock standing there too (what the DAG does)."""
        at = settings.replace(clock_start=hour, clock_speed=0.0, clock_origin=time.time())
        started = time.monotonic()
        summary = run_monitoring(at, market_hour=hour, pairs=[PAIR], say=said.append)
        assert time.monotonic() - started < 30, "a monitoring run must not wait long on unreachable services"
        return summary

    # no registry: no champion, the drift reference is the 30 days before the recent 48 h
    caplog.set_level(logging.WARNING, logger="mur.monitoring.task")
    first = run(CRASH_HOUR + timedelta(minutes=20))  # floored to the market hour
    warnings = [r.getMessage() for r in caplog.records if r.name == "mur.monitoring.task"]
    assert any("without champions" in w for w in warnings), warnings  # MLflow was asked, and refused
    assert any("could not request a retraining" in w for w in warnings), warnings  # so was Airflow
    entry = first[PAIR]
    assert entry["status"] == "alert", first
    assert entry["alerts"] == ["drift:abs_log_return"]  # the default alerting input
    assert entry["delivered"] is True and entry["retrain_run_id"] is None and "cooldown" not in entry
    (embed,) = discord.embeds()
    text = json.dumps(embed)
    assert PAIR in embed["title"] and "abs_log_return" in text
    assert (
        "PSI" in text and f"> {DEFAULTS.monitoring.monitor_psi_above:g}" in text
    )  # the threshold it crossed
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Pair"] == PAIR and fields["Retraining"] == "not requested"
    assert fields["Logical date"] == "2024-08-06T12:00:00Z"
    assert [p.split("?")[0] for p in discord.paths] == [
        "/api/webhooks/123/secret-token"
    ]  # the configured URL
    (alert,) = latest_alerts(db, PAIR)
    assert alert.as_of == CRASH_HOUR and alert.delivered is True and alert.retrain_run_id is None
    assert alert.kinds == entry["alerts"] and "abs_log_return" in alert.message
    report = latest_report(db, PAIR)
    assert report is not None and report.as_of == "2024-08-06T12:00:00Z" and report.status == "alert"
    assert report.champion_version is None and report.trained_window is None
    assert said and PAIR in said[0]

    # the next market hour, and the last one inside the cooldown: reports, but no new alert
    for hour in (CRASH_HOUR + HOUR, CRASH_HOUR + (COOLDOWN - 1) * HOUR):
        entry = run(hour)[PAIR]
        assert entry["status"] == "alert" and entry.get("cooldown") is True, entry
        assert "delivered" not in entry
        assert len(discord.requests) == 1 and len(latest_alerts(db, PAIR)) == 1
        stored = latest_report(db, PAIR)
        assert stored is not None and stored.as_of == iso(hour)

    # COOLDOWN market hours after the first alert: alert again
    again = CRASH_HOUR + COOLDOWN * HOUR
    entry = run(again)[PAIR]
    assert entry["status"] == "alert" and entry["delivered"] is True and "cooldown" not in entry, entry
    assert len(discord.embeds()) == 2 and iso(again) in json.dumps(discord.embeds()[-1])
    newest, oldest = latest_alerts(db, PAIR)
    assert newest.as_of == again and oldest.as_of == CRASH_HOUR
    assert newest.delivered is True and newest.retrain_run_id is None
    assert len(report_history(db, PAIR)) == 4  # one report per run


def hourly_runs(base: Settings, discord: DiscordStub) -> Any:
    """``run(hour)``: one monitoring run of PAIR at market hour ``hour`` (the clock standing there), with the
    default thresholds, the cooldown of these tests, the Discord stand-in and unreachable Airflow/MLflow."""
    defaults = {
        name: getattr(DEFAULTS.monitoring, name)
        for name in type(DEFAULTS.monitoring).model_fields
        if name.startswith("monitor_")
    }
    settings = base.replace(
        **defaults
        | {
            "pairs": [PAIR],
            "discord_webhook_url": discord.url,
            "airflow_url": UNREACHABLE,
            "mlflow_tracking_uri": UNREACHABLE,
            "monitor_cooldown_hours": COOLDOWN,
        }
    )

    def run(hour: datetime) -> dict[str, Any]:
        at = settings.replace(clock_start=hour, clock_speed=0.0, clock_origin=time.time())
        return run_monitoring(at, market_hour=hour, pairs=[PAIR], say=lambda _: None)[PAIR]

    return run


@pytest.mark.usefixtures("restored_environ")
def test_an_alert_in_the_market_future_does_not_silence_an_earlier_hour(
    fresh: tuple[Settings, Database], discord: DiscordStub
) -> None:
    base, db = fresh
    run = hourly_runs(base, discord)

    later = CRASH_HOUR + (COOLDOWN + 1) * HOUR  # 19:00: |log return| still drifted
    assert run(later)["delivered"] is True
    entry = run(CRASH_HOUR)  # the replay starts over at 12:00 on the same database
    assert entry["status"] == "alert" and "cooldown" not in entry, entry
    assert len(discord.embeds()) == 2


@pytest.mark.usefixtures("restored_environ")
def test_a_new_kind_of_alert_is_not_muted_by_an_earlier_other_kind(
    fresh: tuple[Settings, Database], discord: DiscordStub
) -> None:
    """A coverage alert an hour earlier (delivered) does not hold back the drift alert of the crash; a drift
    alert of the cooldown does."""
    base, db = fresh
    run = hourly_runs(base, discord)

    record_alert(
        db, pair=PAIR, as_of=CRASH_HOUR - HOUR, kinds=["coverage"], message="coverage 60 %", delivered=True,
        retrain_run_id=None,
    )  # fmt: skip
    entry = run(CRASH_HOUR)
    assert (
        entry["alerts"] == ["drift:abs_log_return"] and entry["delivered"] is True and "cooldown" not in entry
    )
    assert run(CRASH_HOUR + HOUR).get("cooldown") is True  # the same kind within the cooldown: muted
    assert len(discord.embeds()) == 1


@pytest.mark.usefixtures("restored_environ")
def test_an_undelivered_alert_is_recorded_and_still_rate_limited(
    fresh: tuple[Settings, Database], discord: DiscordStub
) -> None:
    """Discord refuses (500): the alert is kept as undelivered, and the same kind an hour later is muted by
    the cooldown all the same (issue 42: 197 undelivered stale-training rows in 45 minutes)."""
    base, db = fresh
    discord.status = 500
    run = hourly_runs(base, discord)

    entry = run(CRASH_HOUR)
    assert entry["status"] == "alert" and entry["delivered"] is False and "cooldown" not in entry, entry
    assert run(CRASH_HOUR + HOUR).get("cooldown") is True
    (only,) = latest_alerts(db, PAIR)
    assert only.delivered is False and only.as_of == CRASH_HOUR
