"""A timetable that runs once per **market** hour (:mod:`mur.clock`): Airflow's schedule follows the market clock.

Each run's data interval is a market hour ``[H, H + 1h)`` (so its logical date and window end are market
times, and a backfill over market dates trains the windows it names); it is created at the wall time the
market reaches ``H + 1h``: every ``3600 / speed`` wall seconds (hourly at speed 1, every minute at 60). With
live data (``MUR_MARKET_DATA=binance``) the clock is the real time and this is ``@hourly``. A frozen clock
(speed 0) schedules nothing new. ``every_hours`` (training: ``MUR_TRAIN_EVERY_HOURS``) keeps only the market
hours that close on a multiple of it (hour of the day: 4 → the hours closing at 00:00, 04:00, ... 20:00).

Without catch-up, a run that starts late (the previous one took longer than a market hour) skips to the
latest closed market hour instead of working through the missed ones.

Market now bounds every date (:mod:`mur.orchestration.market_dates`): a backfill range (``restriction.latest``
set) holds only the market hours that have closed, so a range after market now creates no run (Airflow
answers "No runs to create"); a manual logical date after market now is refused (HTTP 400 from the REST API
and the trigger form) unless it is the wall clock's "now" that the form pre-fills; and the next scheduled run
never follows a run that stands for a market hour that has not closed (a backfill created before these checks,
or a replay restarted from an earlier market start): Airflow takes the latest scheduled *or backfill* run as
the reference of the next one, and such a run used to move the DAG's next run to the wall time the market
reaches its date.

Airflow loads the class through the ``mur`` plugin (entry point ``airflow.plugins`` in ``pyproject.toml``):
the scheduler needs it to read the serialized DAG. The clock itself is read at scheduling time from the
scheduler's ``MUR_CLOCK_*`` environment (``mur up`` exports it to every service): :func:`environment_clock`,
the one place in :mod:`mur.orchestration` that creates settings (no entry point of ours runs there).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.plugins_manager import AirflowPlugin
from airflow.timetables.base import DagRunInfo, DataInterval, Timetable
from airflow.utils.types import DagRunType

from mur.clock import MarketClock, floor_hour, market_clock
from mur.orchestration.market_dates import HOUR, MarketFutureError, latest_closed_hour, manual_hour_end

if TYPE_CHECKING:
    from airflow.timetables.base import TimeRestriction


def _pendulum(value: datetime) -> Any:
    from airflow.sdk.timezone import coerce_datetime

    return coerce_datetime(value.astimezone(UTC))


def environment_clock() -> MarketClock:
    """The market clock of the Airflow process the timetable runs in, from that process's environment.

    Airflow deserializes the timetable in its own processes (the scheduler, the API server for a trigger,
    the DAG processor for the summary) through the ``mur`` plugin: no entry point of ours runs there to
    create the settings and pass them down, so this is where they are created (``MUR_CLOCK_*``,
    ``MUR_MARKET_DATA``, the stack's ``clock.json``). The serialized form leaves the clock out on purpose: it
    is the one of the process that schedules, not of the one that parsed the DAG file.
    """
    from mur.settings import get_settings

    return market_clock(get_settings())


class MarketHourlyTimetable(Timetable):
    """One run per market hour (``every_hours``: per market hour that closes on a multiple of it, hour of the
    day); data interval = the market hour, created when it has closed."""

    description = "every market hour (the market clock, mur.clock)"

    def __init__(self, clock: MarketClock | None = None, every_hours: int = 1) -> None:
        # serialized without the clock: it is read from the environment where the timetable runs
        self._clock, self.every_hours = clock, every_hours

    def serialize(self) -> dict[str, Any]:
        return {"every_hours": self.every_hours}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> MarketHourlyTimetable:
        return cls(every_hours=int(data.get("every_hours", 1)))

    def _closing(self, hour: datetime, step: timedelta = HOUR) -> datetime:
        """``hour``, else the nearest market hour after it (``step`` -1 h: before it) that closes on a multiple
        of ``every_hours``."""
        while (hour + HOUR).hour % self.every_hours:
            hour += step
        return hour

    @property
    def clock(self) -> MarketClock:
        return self._clock if self._clock is not None else environment_clock()

    @property
    def summary(self) -> str:
        clock = self.clock
        speed = "" if clock.live else f" (x{clock.speed:g})"
        if self.every_hours > 1:
            return f"every {self.every_hours} market hours{speed}"
        return "@hourly" if clock.live else f"market hourly{speed}"

    def infer_manual_data_interval(self, *, run_after: datetime) -> DataInterval:
        """A manual run with a logical date stands for the market hour that closed at it: logical dates are
        market times (``dag.test(logical_date=...)``, the REST API, backfills). A date after market now is read
        as the wall time of the trigger when it is the wall clock's "now" (the trigger form's default): the
        market hour closed then. Any other date after market now is refused: Airflow answers 400 with the
        message (:func:`~mur.orchestration.market_dates.manual_hour_end`)."""
        try:
            end = manual_hour_end(run_after, self.clock)
        except MarketFutureError as exc:
            raise ValueError(str(exc)) from exc
        return DataInterval(start=_pendulum(end - HOUR), end=_pendulum(end))

    def generate_run_id(
        self, *, run_type: DagRunType, run_after: datetime, data_interval: DataInterval | None, **extra: Any
    ) -> str:
        """Run ids name market time, not the wall time a run was created at: a scheduled run its market hour
        (its logical date, ``scheduled__2024-11-06T01:00:00+00:00``); a manual run the market time it trains up
        to (the end of its data interval: the logical date typed, or market now for the trigger form's default;
        market now without a logical date), plus Airflow's random tail as its own manual ids have. Backfill ids
        come from ``run_after``, which :meth:`next_dagrun_info` sets to the market hour for a bounded range."""
        from airflow.models.dagrun import DagRun

        if run_type != DagRunType.MANUAL and data_interval is not None:
            return run_type.generate_run_id(suffix=data_interval.start.isoformat())
        upto = data_interval.end if data_interval else self.clock.market_at(run_after).replace(microsecond=0)
        return DagRun.generate_run_id(run_type=run_type, run_after=upto)

    def next_dagrun_info(
        self, *, last_automated_data_interval: DataInterval | None, restriction: TimeRestriction
    ) -> DagRunInfo | None:
        clock = self.clock
        latest_closed = self._closing(latest_closed_hour(clock), -HOUR)
        if last_automated_data_interval is not None and last_automated_data_interval.end > clock.hour():
            # the reference run stands for a market hour that has not closed (a market-future backfill, a
            # replay restarted earlier): it says nothing about the schedule, which goes on from market now
            last_automated_data_interval = None
            restriction = type(restriction)(restriction.earliest, restriction.latest, catchup=False)
        if last_automated_data_interval is not None:
            start = floor_hour(last_automated_data_interval.end)
            if not restriction.catchup:
                start = max(start, latest_closed)
        elif restriction.catchup and restriction.earliest is not None:
            start = floor_hour(restriction.earliest)
        else:
            start = latest_closed
        if restriction.earliest is not None and start < restriction.earliest:
            first = floor_hour(restriction.earliest)
            start = first if first == restriction.earliest else first + HOUR
        start = self._closing(start)
        end = start + HOUR
        if restriction.latest is not None and start > restriction.latest:
            return None
        if restriction.latest is not None and end > clock.now():
            return None  # a bounded range (a backfill): only market hours that have closed
        if clock.speed == 0 and not clock.live and end > clock.hour():
            return None  # a frozen market: this hour never closes
        return (
            DagRunInfo(  # a backfill's runs may start at once: its run_after (and run id) is the market hour
                run_after=_pendulum(start if restriction.latest is not None else clock.wall_at(end)),
                data_interval=DataInterval(start=_pendulum(start), end=_pendulum(end)),
            )
        )


class MurAirflowPlugin(AirflowPlugin):
    """Registers :class:`MarketHourlyTimetable` with Airflow (entry point ``airflow.plugins``)."""

    name = "mur"
    timetables = [MarketHourlyTimetable]
