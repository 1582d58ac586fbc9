"""Dates after market now cannot derail the schedule: the refusal and clamping rules
(:mod:`mur.orchestration.market_dates`) and the market-hour timetable that applies them to Airflow's triggers,
backfills and next run."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mur.clock import MarketClock
from mur.errors import ConfigError
from mur.orchestration.market_dates import (
    MarketFutureError,
    backfill_range,
    manual_hour_end,
    parse_utc,
    require_closed,
)

pytestmark = pytest.mark.fast

HOUR = timedelta(hours=1)
NOW = datetime(2024, 11, 4, 7, 6, tzinfo=UTC)  # market now: 07:06, the 06:00 hour closed at 07:00
WALL = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)


def frozen(at: datetime = NOW) -> MarketClock:
    return MarketClock(start=at, origin=time.time(), speed=0.0)


def test_dates_read_as_utc_and_bad_ones_named() -> None:
    assert parse_utc("2024-10-01", what="--from") == datetime(2024, 10, 1, tzinfo=UTC)
    assert parse_utc("2024-10-01T05:00Z", what="--from") == datetime(2024, 10, 1, 5, tzinfo=UTC)
    assert parse_utc("2024-10-01 07:00+02:00", what="--to") == datetime(2024, 10, 1, 5, tzinfo=UTC)
    with pytest.raises(ConfigError, match=r"--to: cannot read 'June' as a date"):
        parse_utc("June", what="--to")


def test_a_date_after_market_now_is_refused_with_market_now_in_the_message() -> None:
    clock = frozen()
    assert require_closed(NOW - HOUR, clock, what="--end") == NOW - HOUR
    with pytest.raises(MarketFutureError) as caught:
        require_closed(datetime(2025, 6, 1, tzinfo=UTC), clock, what="--end")
    message = str(caught.value)
    assert "--end 2025-06-01T00:00Z lies after market now (2024-11-04T07:06Z)" in message
    assert "up to 2024-11-04T06:00Z" in message  # the last market hour that has closed


def test_backfill_range_refuses_a_future_start_and_clamps_a_future_end() -> None:
    clock = frozen()
    past = backfill_range(datetime(2024, 10, 1, tzinfo=UTC), datetime(2024, 10, 1, 3, tzinfo=UTC), clock)
    assert (past.start, past.end, past.warning) == (
        datetime(2024, 10, 1, tzinfo=UTC),
        datetime(2024, 10, 1, 3, tzinfo=UTC),
        None,
    )
    straddling = backfill_range(datetime(2024, 11, 4, 3, tzinfo=UTC), datetime(2025, 6, 1, tzinfo=UTC), clock)
    assert straddling.end == datetime(2024, 11, 4, 6, tzinfo=UTC)  # the last closed market hour
    warning = straddling.warning
    assert warning is not None and warning.startswith("--to 2025-06-01T00:00Z lies after market now")
    assert "stops at 2024-11-04T06:00Z" in warning
    with pytest.raises(MarketFutureError, match=r"--from 2025-06-01T00:00Z lies after market now"):
        backfill_range(datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 6, 1, 3, tzinfo=UTC), clock)
    with pytest.raises(MarketFutureError):  # the current hour has not closed: not even it
        backfill_range(datetime(2024, 11, 4, 7, tzinfo=UTC), datetime(2024, 11, 4, 7, tzinfo=UTC), clock)
    with pytest.raises(ConfigError, match="is after --to"):
        backfill_range(datetime(2024, 10, 2, tzinfo=UTC), datetime(2024, 10, 1, tzinfo=UTC), clock)


def test_a_manual_logical_date_is_a_market_time_or_the_forms_wall_now() -> None:
    clock = MarketClock(start=NOW, origin=WALL.timestamp(), speed=1.0)
    # a market date: the hour that closed at it
    assert manual_hour_end(datetime(2024, 10, 1, 5, 30, tzinfo=UTC), clock, wall_now=WALL) == datetime(
        2024, 10, 1, 5, tzinfo=UTC
    )
    # the trigger form's default: the browser's "now" (wall), read as the market hour closed at that instant
    assert manual_hour_end(WALL + timedelta(minutes=1), clock, wall_now=WALL) == datetime(
        2024, 11, 4, 7, tzinfo=UTC
    )
    assert manual_hour_end(WALL - 3 * HOUR, clock, wall_now=WALL) == datetime(2024, 11, 4, 4, tzinfo=UTC)
    # a market-future date that is not the wall clock's now: refused
    with pytest.raises(MarketFutureError, match="the logical date 2025-06-01T00:00Z lies after market now"):
        manual_hour_end(datetime(2025, 6, 1, tzinfo=UTC), clock, wall_now=WALL)
    with pytest.raises(MarketFutureError):  # nor a wall date in the future
        manual_hour_end(WALL + 2 * HOUR, clock, wall_now=WALL)


# --- the timetable ---------------------------------------------------------------------------------------------
def restriction(*, earliest: datetime | None, latest: datetime | None, catchup: bool) -> Any:
    from airflow.timetables.base import TimeRestriction

    return TimeRestriction(earliest=earliest, latest=latest, catchup=catchup)  # type: ignore[arg-type]


def interval(start: datetime, end: datetime) -> Any:
    from airflow.timetables.base import DataInterval

    return DataInterval(start, end)  # type: ignore[arg-type]


def test_the_timetable_refuses_a_future_manual_date_as_a_value_error() -> None:
    """Airflow's trigger endpoint turns a ValueError into HTTP 400 with the message (the form shows it)."""
    pytest.importorskip("airflow")
    from mur.orchestration.timetable import MarketHourlyTimetable

    table = MarketHourlyTimetable(frozen())
    interval = table.infer_manual_data_interval(run_after=datetime(2024, 10, 1, 5, tzinfo=UTC))
    assert (interval.start, interval.end) == (
        datetime(2024, 10, 1, 4, tzinfo=UTC),
        datetime(2024, 10, 1, 5, tzinfo=UTC),
    )
    with pytest.raises(ValueError, match="lies after market now"):
        table.infer_manual_data_interval(run_after=datetime(2025, 6, 1, tzinfo=UTC))


def test_a_backfill_range_holds_only_closed_market_hours() -> None:
    """Airflow's backfill iterates the timetable with ``latest`` = the range's end: past market now it stops,
    so a range after market now creates no run at all (the UI dialog, the REST API and Airflow's CLI)."""
    pytest.importorskip("airflow")
    from mur.orchestration.timetable import MarketHourlyTimetable

    clock = MarketClock(start=NOW, origin=time.time(), speed=1.0)
    table = MarketHourlyTimetable(clock)

    def runs(start: datetime, end: datetime) -> list[datetime]:
        bound = restriction(earliest=start, latest=end, catchup=True)
        found: list[datetime] = []
        last = None
        while (
            info := table.next_dagrun_info(last_automated_data_interval=last, restriction=bound)
        ) is not None:
            assert info.data_interval is not None
            found.append(info.data_interval.start)
            last = info.data_interval
        return found

    assert runs(datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 6, 1, 3, tzinfo=UTC)) == []
    assert runs(datetime(2024, 11, 4, 4, tzinfo=UTC), datetime(2025, 6, 1, tzinfo=UTC)) == [
        datetime(2024, 11, 4, h, tzinfo=UTC) for h in (4, 5, 6)
    ]  # the hours that have closed, not the open 07:00 one
    assert len(runs(datetime(2024, 10, 1, tzinfo=UTC), datetime(2024, 10, 1, 3, tzinfo=UTC))) == 4


def test_a_run_for_a_market_future_hour_never_moves_the_next_run() -> None:
    """Airflow takes the latest scheduled *or backfill* run (by logical date) as the reference of the next
    run: a backfill for a market-future date used to push the next run to the wall time the market reaches it
    (with the offline replay, years ahead) and hourly training stopped."""
    pytest.importorskip("airflow")
    from mur.orchestration.timetable import MarketHourlyTimetable

    origin = time.time()
    clock = MarketClock(start=NOW, origin=origin, speed=1.0)
    table = MarketHourlyTimetable(clock)
    schedule = restriction(earliest=datetime(2023, 1, 1, tzinfo=UTC), latest=None, catchup=False)
    normal = table.next_dagrun_info(
        last_automated_data_interval=interval(NOW.replace(minute=0) - HOUR, NOW.replace(minute=0)),
        restriction=schedule,
    )
    assert normal is not None and normal.data_interval is not None
    assert normal.data_interval.start == datetime(2024, 11, 4, 7, tzinfo=UTC)
    future_backfill = interval(datetime(2025, 6, 1, 3, tzinfo=UTC), datetime(2025, 6, 1, 4, tzinfo=UTC))
    after = table.next_dagrun_info(last_automated_data_interval=future_backfill, restriction=schedule)
    assert after is not None and after.data_interval is not None
    assert after.data_interval.start == datetime(2024, 11, 4, 6, tzinfo=UTC)  # the latest closed hour ...
    assert after.run_after.timestamp() < origin + 3600  # ... due now, not in 2025/2027 wall time
    catching_up = restriction(earliest=datetime(2023, 1, 1, tzinfo=UTC), latest=None, catchup=True)
    again = table.next_dagrun_info(last_automated_data_interval=future_backfill, restriction=catching_up)
    assert again is not None and again.data_interval is not None
    assert again.data_interval.start == datetime(2024, 11, 4, 6, tzinfo=UTC)


# --- training that stops is said ------------------------------------------------------------------------------
def test_a_training_window_older_than_the_limit_is_stale() -> None:
    from mur.monitoring.task import stale_training_line

    hour = datetime(2024, 11, 4, 7, tzinfo=UTC)
    assert stale_training_line(hour - 5 * HOUR, hour, 6) is None  # trained 5 market hours ago: fresh
    line = stale_training_line(hour - 6 * HOUR, hour, 6)
    assert line is not None
    assert "trained on candles up to 2024-11-04T01:00:00Z, 6 market hours before 2024-11-04T07:00:00Z" in line
    assert "MUR_STALE_TRAINING_HOURS=6" in line and "mur airflow backfill --list" in line
    assert stale_training_line(hour - 600 * HOUR, hour, 0) is None  # the check is off
    assert stale_training_line(None, hour, 6) is None  # no model yet: nothing to say here
    assert stale_training_line(hour + 5 * HOUR, hour, 6) is None  # a replay restarted earlier


def test_the_newest_training_is_the_latest_window_over_recent_versions() -> None:
    """The registry's answer as MlflowClient gives it (versions with tags); a backfilled version (an older
    window, a higher number) does not hide the newest window."""
    from types import SimpleNamespace

    from mur.monitoring.task import newest_trainings

    asked: list[tuple[str, int, list[str]]] = []

    class Registry:
        def search_model_versions(
            self, filter_string: str, max_results: int, order_by: list[str]
        ) -> list[Any]:
            asked.append((filter_string, max_results, order_by))
            if "btc_usdt" not in filter_string:
                return []
            return [
                SimpleNamespace(
                    version="9", tags={"data_window_end": "2024-10-01T04:00:00Z", "kind": "backfill"}
                ),
                SimpleNamespace(version="8", tags={"data_window_end": "2024-11-04T05:00:00Z"}),
                SimpleNamespace(version="7", tags={}),
            ]

    ends = newest_trainings(Registry(), "mur-", ["btc_usdt", "eth_usdt"])
    assert ends == {"btc_usdt": datetime(2024, 11, 4, 5, tzinfo=UTC)}  # eth_usdt: no version, no claim
    assert asked[0] == ("name = 'mur-btc_usdt'", 20, ["version_number DESC"])
