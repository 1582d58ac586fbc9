"""Dates that Airflow is asked to run for, checked against the market clock (:mod:`mur.clock`).

A run stands for a market hour that has closed: its data interval ``[H, H + 1h)`` ends at or before market
now. A trigger or backfill for a later date would train on candles that do not exist yet, and Airflow would
schedule it at the wall time the market reaches it (with the offline replay, years ahead), so such dates are
refused here with a message that says what market now is. Used by the timetable (the UI's trigger form and
backfill dialog, Airflow's REST API and CLI) and by ``mur airflow trigger|backfill``.

Import-light (standard library, :mod:`mur.clock`, :mod:`mur.errors`): the timetable loads it in the scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mur.clock import MarketClock, floor_hour
from mur.errors import ConfigError

HOUR = timedelta(hours=1)
WALL_NOW_SLACK = timedelta(days=1)
"""How far back a logical date may lie and still be read as the wall time of a trigger: Airflow's trigger form
pre-fills the browser's clock when it opens, and a user may wait a while before pressing Trigger."""


class MarketFutureError(ConfigError):
    """A date after market now: that market hour has not closed, its candles do not exist yet."""


def parse_utc(value: str, *, what: str) -> datetime:
    """``2024-11-01``, ``2024-11-01T05:00``, ``…Z`` or ``…+00:00`` as an aware UTC datetime (naive = UTC)."""
    try:
        parsed = datetime.fromisoformat(value.strip())  # Python 3.11 reads "Z" and a space for "T"
    except ValueError as exc:
        raise ConfigError(
            f"{what}: cannot read {value!r} as a date; use ISO-8601 like 2024-10-01T05:00"
        ) from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def show(value: datetime) -> str:
    """``2024-11-04T07:00Z``: minutes are enough for market hours."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def latest_closed_hour(clock: MarketClock) -> datetime:
    """Open time of the last market hour that has closed: the latest logical date a run can stand for."""
    return clock.hour() - HOUR


def future_message(what: str, value: datetime, clock: MarketClock) -> str:
    return (
        f"{what} {show(value)} lies after market now ({show(clock.now())}): that market hour has not closed "
        f"and its candles do not exist yet. Pick a date up to {show(latest_closed_hour(clock))} "
        "(mur clock shows market now)."
    )


def require_closed(value: datetime, clock: MarketClock, *, what: str) -> datetime:
    """``value`` if it is at or before market now, else :class:`MarketFutureError`."""
    if value > clock.now():
        raise MarketFutureError(future_message(what, value, clock))
    return value


def manual_hour_end(
    logical_date: datetime, clock: MarketClock, *, wall_now: datetime | None = None
) -> datetime:
    """The end of the market hour a manual run with ``logical_date`` stands for.

    A logical date at or before market now is a market time: the hour that closed at it (floored). A date after
    market now is read as the wall time of a trigger when it lies within :data:`WALL_NOW_SLACK` of the wall
    clock (the trigger form's default "now"): the market hour closed then. Any other date after market now is
    refused (:class:`MarketFutureError`)."""
    logical_date = logical_date.astimezone(UTC)
    if logical_date <= clock.now():
        return floor_hour(logical_date)
    wall = (wall_now or datetime.now(UTC)).astimezone(UTC)
    if not clock.live and wall - WALL_NOW_SLACK <= logical_date <= wall + timedelta(minutes=5):
        return floor_hour(clock.market_at(logical_date))
    raise MarketFutureError(future_message("the logical date", logical_date, clock))


@dataclass(frozen=True)
class BackfillRange:
    """A backfill's logical dates after the check; ``warning`` says so when its end was moved."""

    start: datetime
    end: datetime
    warning: str | None = None


def backfill_range(start: datetime, end: datetime, clock: MarketClock) -> BackfillRange:
    """A backfill's first and last logical dates (market hours), checked against market now: a start after the
    last closed market hour is refused; an end after it is clamped to it (with a ``warning``)."""
    if start > end:
        raise ConfigError(f"--from {show(start)} is after --to {show(end)}")
    last = latest_closed_hour(clock)
    if start > last:
        raise MarketFutureError(
            f"--from {show(start)} lies after market now ({show(clock.now())}): no market hour of this backfill "
            f"has closed, so there is nothing to train. Backfills cover the market's past: pick dates up to "
            f"{show(last)} (mur clock shows market now)."
        )
    if end > last:
        warning = (
            f"--to {show(end)} lies after market now ({show(clock.now())}); the backfill stops at "
            f"{show(last)}, the last market hour that has closed."
        )
        return BackfillRange(start=start, end=last, warning=warning)
    return BackfillRange(start=start, end=end)
