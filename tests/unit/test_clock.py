"""The market clock: arithmetic, the stack's clock file, and candles after market now being invisible
everywhere (the clocked data source, the replay server, the candle cache, training windows, the timetable)."""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from mur.clock import (
    REPLAY_WEEK,
    MarketClock,
    default_start,
    market_clock,
    read_clock_state,
    write_clock_state,
)
from mur.data import BundledMarketData, ClockedMarketData, get_market_data
from mur.errors import ConfigError, MarketDataError
from mur.settings import Settings

pytestmark = pytest.mark.fast

HOUR = timedelta(hours=1)
START = datetime(2024, 11, 4, 9, 30, tzinfo=UTC)  # a Monday, mid-hour


def frozen(at: datetime = START) -> MarketClock:
    return MarketClock(start=at, origin=time.time(), speed=0.0)


# --- arithmetic ---------------------------------------------------------------------------------------------
def test_market_time_is_start_plus_elapsed_wall_time_times_speed() -> None:
    clock = MarketClock(start=START, origin=1_000_000.0, speed=60.0)
    assert clock.market_at(1_000_000.0) == START
    assert clock.market_at(1_000_060.0) == START + HOUR  # a wall minute is a market hour at 60
    wall = datetime.fromtimestamp(1_000_000.0 + 90, tz=UTC)
    assert clock.market_at(wall) == START + timedelta(minutes=90)
    assert clock.wall_at(START + 2 * HOUR) == datetime.fromtimestamp(1_000_120.0, tz=UTC)  # the inverse
    assert clock.seconds_per_hour == 60.0


def test_now_runs_at_the_speed_and_hour_floors_it() -> None:
    clock = MarketClock(start=START, origin=time.time() - 30, speed=120.0)  # 30 wall s = one market hour
    now = clock.now()
    assert START + HOUR <= now < START + HOUR + timedelta(minutes=2)
    assert clock.hour() == datetime(2024, 11, 4, 10, tzinfo=UTC)
    assert 0 < clock.until_next_hour() <= 30


def test_a_frozen_clock_stands_still_and_a_live_one_is_real_time() -> None:
    clock = frozen()
    assert clock.now() == START and clock.hour() == START.replace(minute=0)
    assert clock.until_next_hour() == float("inf")
    live = MarketClock.real_time()
    assert abs((live.now() - datetime.now(UTC)).total_seconds()) < 2
    with pytest.raises(ValueError, match="speed"):
        MarketClock(start=START, origin=0.0, speed=-1.0)


def test_rebased_keeps_market_now_and_changes_the_pace() -> None:
    clock = MarketClock(start=START, origin=time.time() - 10, speed=360.0)  # one market hour in
    faster = clock.rebased(speed=3600.0)
    assert (
        abs((faster.now() - clock.now()).total_seconds()) < 60 * 5
    )  # same market instant (to the ms x speed)
    assert faster.speed == 3600.0 and faster.start >= START + HOUR


def test_default_start_keeps_the_real_weekday_and_time_of_day_inside_the_bundled_span() -> None:
    wall = datetime(2026, 11, 22, 15, 47, 12, tzinfo=UTC)  # a Sunday
    start = default_start(wall)
    assert start.weekday() == wall.weekday() == 6
    assert (start.hour, start.minute, start.second) == (15, 47, 12)
    assert REPLAY_WEEK <= start < REPLAY_WEEK + timedelta(days=7)
    source = BundledMarketData()
    for pair in source.pairs():  # months of every bundled pair on both sides
        first, last = source.data_range(pair)
        assert first <= pd.Timestamp(start) - pd.Timedelta(days=150)
        assert last >= pd.Timestamp(start) + pd.Timedelta(days=180)


# --- settings, the stack's clock file -------------------------------------------------------------------------
def test_settings_give_every_process_the_same_clock(tmp_path: Path) -> None:
    settings = Settings(
        runtime_dir=tmp_path,
        clock_start=START,
        clock_origin=1_000_000.0,
        clock_speed=60.0,
        market_data="bundled",
    )
    clock = market_clock(settings)
    assert (clock.start, clock.origin, clock.speed) == (START, 1_000_000.0, 60.0)
    env = clock.env()
    assert env == {
        "MUR_CLOCK_START": "2024-11-04T09:30:00Z",
        "MUR_CLOCK_ORIGIN": "1000000.0",
        "MUR_CLOCK_SPEED": "60.0",
    }
    assert market_clock(Settings(market_data="binance", clock_speed=60.0)).live  # live data: real time


def test_a_process_without_an_origin_reads_the_stacks_clock_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("MUR_CLOCK_START", "MUR_CLOCK_SPEED", "MUR_CLOCK_ORIGIN"):
        monkeypatch.setenv(name, "")  # recorded, so what the test exports is undone afterwards
        monkeypatch.delenv(name)
    fixed = MarketClock(start=START, origin=1_234_567.5, speed=120.0)
    path = write_clock_state(tmp_path, fixed)
    assert json.loads(path.read_text())["speed"] == 120.0
    assert read_clock_state(tmp_path) == fixed
    assert market_clock(Settings(runtime_dir=tmp_path, market_data="bundled")) == fixed
    (tmp_path / "clock.json").write_text("{not json")
    assert read_clock_state(tmp_path) is None  # unreadable: ignored, the process starts its own clock
    own = market_clock(Settings(runtime_dir=tmp_path, market_data="bundled"))
    assert own.speed == 1.0 and own.start.weekday() == datetime.fromtimestamp(own.origin, tz=UTC).weekday()


def test_mur_up_fixes_the_clock_pauses_it_at_down_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from devstack.config import fix_market_clock, pause_market_clock

    for name in ("MUR_CLOCK_START", "MUR_CLOCK_SPEED", "MUR_CLOCK_ORIGIN"):
        monkeypatch.setenv(name, "")  # recorded, so what the test exports is undone afterwards
        monkeypatch.delenv(name)
    settings = Settings(runtime_dir=tmp_path, market_data="bundled")
    clock = fix_market_clock(settings, speed=60.0)
    assert clock.speed == 60.0 and read_clock_state(tmp_path) == clock
    assert REPLAY_WEEK <= clock.start < REPLAY_WEEK + timedelta(days=7)
    import os

    assert os.environ["MUR_CLOCK_SPEED"] == "60.0" and float(os.environ["MUR_CLOCK_ORIGIN"]) == clock.origin
    with pytest.raises(ConfigError, match="mur down"):  # running services keep their clock
        fix_market_clock(settings, speed=120.0, running=True)
    assert fix_market_clock(settings, running=True) == clock
    paused = pause_market_clock(settings)
    assert paused is not None and paused.speed == 0.0
    at_down = paused.now()
    resumed = fix_market_clock(settings)  # resumes where the market stood, at the speed it had
    assert resumed.speed == 60.0 and abs((resumed.now() - at_down).total_seconds()) < 120
    restarted = fix_market_clock(settings.replace(clock_start=START), speed=1.0)
    assert abs((restarted.now() - START).total_seconds()) < 5  # a new MUR_CLOCK_START restarts the market
    pause_market_clock(settings)
    again = fix_market_clock(settings.replace(clock_start=START))  # the same one resumes
    assert again.speed == 1.0 and again.start >= START and abs((again.now() - START).total_seconds()) < 5


# --- candles after market now are invisible -----------------------------------------------------------------
def test_the_clocked_source_hides_candles_that_have_not_closed() -> None:
    source = ClockedMarketData(BundledMarketData(), frozen())
    hour = START.replace(minute=0)
    candles = source.klines("btc_usdt", start=hour - 48 * HOUR, end=hour + 100 * HOUR)
    assert candles["timestamp"].iloc[-1] == pd.Timestamp(hour - HOUR)  # the 09:00 candle is still open
    assert len(candles) == 48
    assert source.data_range("btc_usdt")[1] == hour - HOUR
    with pytest.raises(MarketDataError, match="market clock stands at"):
        source.klines("btc_usdt", start=hour + HOUR)
    late = ClockedMarketData(BundledMarketData(), frozen(datetime(2030, 1, 1, tzinfo=UTC)))
    assert late.data_range("bnb_usdt")[1] == BundledMarketData().data_range("bnb_usdt")[1]  # history ended


def test_get_market_data_sees_the_bundled_history_through_the_settings_clock(tmp_path: Path) -> None:
    settings = Settings(
        runtime_dir=tmp_path,
        market_data="bundled",
        clock_start=START,
        clock_origin=time.time(),
        clock_speed=0.0,
    )
    source = get_market_data(settings)
    assert isinstance(source, ClockedMarketData)
    assert source.klines("eth_usdt")["timestamp"].max() == pd.Timestamp(START.replace(minute=0) - HOUR)


def test_training_windows_end_at_market_now(tmp_path: Path) -> None:
    from mur.training.driver import load_candles

    settings = Settings(
        runtime_dir=tmp_path,
        market_data="bundled",
        clock_start=START,
        clock_origin=time.time(),
        clock_speed=0.0,
    )
    hour = START.replace(minute=0)
    candles, window, _ = load_candles(settings, "btc_usdt", train_days=10)
    assert window.end == hour and candles["timestamp"].iloc[-1] == pd.Timestamp(hour - HOUR)
    later, window, _ = load_candles(settings, "btc_usdt", end=hour + 30 * 24 * HOUR, train_days=10)
    assert window.end == hour and later["timestamp"].iloc[-1] == pd.Timestamp(hour - HOUR)  # never the future


def test_the_candle_cache_holds_closed_candles_up_to_market_now(tmp_path: Path) -> None:
    from mur.serving.market_cache import MarketCache

    settings = Settings(runtime_dir=tmp_path, market_data="bundled")
    clock = frozen()
    cache = MarketCache(
        settings,
        ["sol_usdt"],
        source=ClockedMarketData(BundledMarketData(), clock),
        clock=clock,
        history_hours=24,
    )
    assert cache.refresh() == {}
    snap = cache.snapshot("sol_usdt")
    assert snap.candle_time == START.replace(minute=0) - HOUR and len(snap.candles) == 24


def test_the_replay_server_is_a_live_looking_exchange_at_market_now() -> None:
    from devstack.replay import running_replay_server

    clock = frozen()
    hour_ms = int(START.replace(minute=0).timestamp() * 1000)
    with running_replay_server(pairs=["btc_usdt"], clock=clock) as server:

        def get(path: str) -> object:
            with urllib.request.urlopen(f"{server.url}{path}", timeout=10) as answer:
                return json.loads(answer.read())

        assert get("/api/v3/time") == {"serverTime": int(START.timestamp() * 1000)}
        rows = get("/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=1000")
        assert isinstance(rows, list) and len(rows) == 1000
        assert rows[-1][0] == hour_ms - 3_600_000  # the last closed candle; nothing after market now
        assert get(f"/api/v3/klines?symbol=BTCUSDT&interval=1h&startTime={hour_ms}") == []
        bounded = get(
            f"/api/v3/klines?symbol=BTCUSDT&interval=1h&startTime={hour_ms - 7_200_000}&endTime={hour_ms + 10**9}"
        )
        assert [r[0] for r in bounded] == [hour_ms - 7_200_000, hour_ms - 3_600_000]  # type: ignore[union-attr]


def test_the_real_binance_client_sees_the_replayed_market(tmp_path: Path) -> None:
    from devstack.replay import running_replay_server
    from mur.data import BinanceMarketData

    with running_replay_server(pairs=["eth_usdt"], clock=frozen()) as server:
        source = BinanceMarketData(Settings(market_data="binance", binance_api_url=server.api_url))
        candles = source.klines("eth_usdt", start=START - 5 * HOUR, end=START + 5 * HOUR)
    assert candles["timestamp"].iloc[-1] == pd.Timestamp(START.replace(minute=0) - HOUR)


# --- the schedule: one run per market hour --------------------------------------------------------------------
def test_the_timetable_runs_once_per_market_hour_at_the_wall_time_it_closes() -> None:
    pytest.importorskip("airflow")
    from airflow.timetables.base import TimeRestriction

    from mur.orchestration.timetable import MarketHourlyTimetable

    origin = time.time()
    clock = MarketClock(start=START, origin=origin, speed=120.0)
    table = MarketHourlyTimetable(clock)
    restriction = TimeRestriction(earliest=datetime(2023, 1, 1, tzinfo=UTC), latest=None, catchup=False)
    first = table.next_dagrun_info(last_automated_data_interval=None, restriction=restriction)
    assert first is not None and first.data_interval is not None
    assert first.data_interval.start == START.replace(minute=0) - HOUR  # the last closed market hour
    assert first.data_interval.end == START.replace(minute=0)
    second = table.next_dagrun_info(last_automated_data_interval=first.data_interval, restriction=restriction)
    assert second is not None and second.data_interval is not None
    assert second.data_interval.start == first.data_interval.end  # the next market hour ...
    assert second.run_after.timestamp() == pytest.approx(
        origin + 15.0
    )  # ... created when it closes: 30 s/hour
    # a logical date is a market time: the run stands for the market hour that closed at it
    manual = table.infer_manual_data_interval(run_after=START - 30 * HOUR)
    assert (manual.start, manual.end) == (
        START.replace(minute=0) - 31 * HOUR,
        START.replace(minute=0) - 30 * HOUR,
    )
    # a date after market now is the wall time of a trigger (the UI's "now"): the market hour closed then
    wall = datetime.fromtimestamp(
        origin + 95, tz=UTC
    )  # 09:30 + 95 s x 120 = 12:40 → the hour closed at 12:00
    assert table.infer_manual_data_interval(run_after=wall).end == START.replace(minute=0) + 3 * HOUR
    stale = table.next_dagrun_info(
        last_automated_data_interval=type(first.data_interval)(START - 100 * HOUR, START - 99 * HOUR),
        restriction=restriction,
    )
    assert stale is not None and stale.data_interval.start == START.replace(minute=0) - HOUR  # no catch-up
    still = MarketHourlyTimetable(frozen())
    last = still.next_dagrun_info(last_automated_data_interval=None, restriction=restriction)
    assert (
        last is not None
        and still.next_dagrun_info(last_automated_data_interval=last.data_interval, restriction=restriction)
        is None
    )  # a frozen market never closes another hour


def test_the_training_timetable_every_n_market_hours_runs_at_the_hours_closing_on_a_multiple_of_n() -> None:
    pytest.importorskip("airflow")
    from airflow.timetables.base import TimeRestriction

    from mur.orchestration.tasks import schedule_for
    from mur.orchestration.timetable import MarketHourlyTimetable

    origin = time.time()
    table = MarketHourlyTimetable(MarketClock(start=START, origin=origin, speed=120.0), every_hours=4)
    restriction = TimeRestriction(earliest=datetime(2023, 1, 1, tzinfo=UTC), latest=None, catchup=False)
    first = table.next_dagrun_info(last_automated_data_interval=None, restriction=restriction)
    # at 09:30 the first run stands for the hour that closed at 08:00, the second for the one closing at 12:00
    assert first is not None and first.data_interval is not None
    assert (first.data_interval.start, first.data_interval.end) == (
        START.replace(hour=7, minute=0),
        START.replace(hour=8, minute=0),
    )
    second = table.next_dagrun_info(last_automated_data_interval=first.data_interval, restriction=restriction)
    assert second is not None and second.data_interval is not None
    assert second.data_interval.end == START.replace(hour=12, minute=0)
    assert second.run_after.timestamp() == pytest.approx(origin + 75.0)  # 2.5 market hours at 30 s/hour
    assert "every 4 market hours" in table.summary
    # what the DAG processor stores is what the scheduler reads back (the clock: the scheduler's own)
    stored = schedule_for("market", 4)
    assert MarketHourlyTimetable.deserialize(stored.serialize()).every_hours == 4
    assert schedule_for("market").every_hours == 1
