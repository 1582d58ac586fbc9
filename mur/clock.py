"""The market clock: what "now" is for every market purpose (training windows, the candle cache, forecasts'
target times, the dashboard, the track record, the DAG's window end, the replay server).

``market now = start + (wall time - origin) x speed``. With ``MUR_MARKET_DATA=binance`` it is simply the real
UTC time. Offline (bundled or synthetic candles) it replays the bundled history as if it were live: candles
after market "now" are invisible everywhere.

* ``MUR_CLOCK_START``: the market instant at ``origin`` (default: see :func:`default_start`);
* ``MUR_CLOCK_SPEED``: market seconds per wall second (1 = real time, 60 = a market hour per minute,
  0 = frozen);
* ``MUR_CLOCK_ORIGIN``: the wall time (Unix seconds) at which the market stood at ``start``. ``mur up``
  fixes it once in ``{runtime_dir}/clock.json`` and exports all three to every service, so the API, Airflow's
  tasks, Ray jobs, the replay server and the dashboard read the same clock. A process without it (a CLI
  command outside the stack) reads ``clock.json`` when the stack left one, else starts its own clock.

Import-light (standard library and :mod:`mur.settings`): the DAG file uses it to derive its schedule.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mur.settings import Settings

CLOCK_FILE = "clock.json"
REPLAY_WEEK = datetime(2024, 11, 4, tzinfo=UTC)
"""A Monday in the span every bundled pair covers (2024-05-01 .. 2025-05-30): the default start falls in
its week, so about six months of candles lie behind it (training windows) and six and a half ahead."""
HOUR_S = 3600.0
_PROCESS_ORIGIN = time.time()


def as_utc(value: datetime) -> datetime:
    """Naive times are UTC (as :func:`mur.timeutil.parse_time` reads them); aware ones are converted."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def floor_hour(value: datetime) -> datetime:
    """``value`` rounded down to the whole hour (UTC; naive values are taken as UTC)."""
    return as_utc(value).replace(minute=0, second=0, microsecond=0)


def default_start(wall: datetime | None = None) -> datetime:
    """The offline default start: the instant of :data:`REPLAY_WEEK` with the same weekday and time of day as
    ``wall`` (default: now), so the replayed market's weekday and hour match the real ones."""
    wall = as_utc(wall or datetime.now(UTC))
    midnight = floor_hour(wall).replace(hour=0)
    return REPLAY_WEEK + timedelta(days=wall.weekday()) + (wall - midnight)


@dataclass(frozen=True)
class MarketClock:
    """``now() = start + (time.time() - origin) * speed``; ``live`` clocks are the real UTC time."""

    start: datetime
    origin: float
    speed: float = 1.0
    live: bool = False

    def __post_init__(self) -> None:
        if not math.isfinite(self.speed) or self.speed < 0:
            raise ValueError(f"clock speed must be a finite number >= 0, got {self.speed}")
        object.__setattr__(self, "start", as_utc(self.start))

    @classmethod
    def real_time(cls) -> MarketClock:
        return cls(start=datetime.fromtimestamp(0, tz=UTC), origin=0.0, speed=1.0, live=True)

    def market_at(self, wall: datetime | float) -> datetime:
        """The market time at wall time ``wall`` (a datetime or Unix seconds)."""
        seconds = wall if isinstance(wall, int | float) else as_utc(wall).timestamp()
        if self.live:
            return datetime.fromtimestamp(seconds, tz=UTC)
        return self.start + timedelta(seconds=(seconds - self.origin) * self.speed)

    def wall_at(self, market: datetime) -> datetime:
        """The wall time at which the market reaches ``market`` (the start itself when frozen)."""
        if self.live:
            return as_utc(market)
        if self.speed == 0:
            return datetime.fromtimestamp(self.origin, tz=UTC)
        offset = (as_utc(market) - self.start).total_seconds() / self.speed
        return datetime.fromtimestamp(self.origin + offset, tz=UTC)

    def now(self) -> datetime:
        """Market now (timezone-aware UTC)."""
        return self.market_at(time.time())

    def hour(self) -> datetime:
        """The open time of the current (unclosed) market hour: candles before it have closed."""
        return floor_hour(self.now())

    @property
    def seconds_per_hour(self) -> float:
        """Wall seconds per market hour (inf when frozen)."""
        return math.inf if self.speed == 0 else HOUR_S / self.speed

    def until_next_hour(self) -> float:
        """Wall seconds until the next market hour opens (inf when frozen)."""
        if self.speed == 0 and not self.live:
            return math.inf
        nxt = self.hour() + timedelta(hours=1)
        return max((self.wall_at(nxt) - datetime.now(UTC)).total_seconds(), 0.0)

    def rebased(self, *, speed: float | None = None, start: datetime | None = None) -> MarketClock:
        """The same market "now", from this instant on at ``speed`` (or from ``start``)."""
        wall = time.time()
        return MarketClock(
            start=as_utc(start) if start is not None else self.market_at(wall),
            origin=wall,
            speed=self.speed if speed is None else float(speed),
            live=self.live,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "live": self.live,
            "start": self.start.isoformat().replace("+00:00", "Z"),
            "origin": self.origin,
            "speed": self.speed,
            "now": self.now().isoformat().replace("+00:00", "Z"),
        }

    def env(self) -> dict[str, str]:
        """``MUR_CLOCK_*`` variables that give another process this clock."""
        return {
            "MUR_CLOCK_START": self.start.isoformat().replace("+00:00", "Z"),
            "MUR_CLOCK_ORIGIN": repr(self.origin),
            "MUR_CLOCK_SPEED": repr(self.speed),
        }


def requested_start_of(runtime_dir: Path | str) -> datetime | None:
    """The ``MUR_CLOCK_START`` the stack's clock was started from (None: the default start)."""
    try:
        value = json.loads((Path(runtime_dir) / CLOCK_FILE).read_text()).get("requested_start")
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def read_clock_state(runtime_dir: Path | str) -> MarketClock | None:
    """The clock the local stack fixed (``{runtime_dir}/clock.json``), or None."""
    try:
        data = json.loads((Path(runtime_dir) / CLOCK_FILE).read_text())
        return MarketClock(
            start=datetime.fromisoformat(str(data["start"]).replace("Z", "+00:00")),
            origin=float(data["origin"]),
            speed=float(data["speed"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_clock_state(
    runtime_dir: Path | str, clock: MarketClock, *, requested_start: datetime | None = None
) -> Path:
    """Write ``clock.json`` (``requested_start``: the ``MUR_CLOCK_START`` it was started from, if any)."""
    path = Path(runtime_dir) / CLOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    data: dict[str, Any] = {k: v for k, v in clock.as_dict().items() if k != "now"}
    if requested_start is not None:
        data["requested_start"] = as_utc(requested_start).isoformat().replace("+00:00", "Z")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return path


def market_clock(settings: Settings) -> MarketClock:
    """The clock ``settings`` describe: real time for Binance; else ``MUR_CLOCK_*`` (start, origin, speed),
    completed from the stack's ``clock.json`` and then from the defaults (:func:`default_start`, this
    process's start as origin)."""
    if settings.data.market_data == "binance":
        return MarketClock.real_time()
    fixed = read_clock_state(settings.general.runtime_dir) if settings.clock.clock_origin is None else None
    if fixed is not None and settings.clock.clock_start is None:
        return fixed
    origin = settings.clock.clock_origin if settings.clock.clock_origin is not None else _PROCESS_ORIGIN
    start = settings.clock.clock_start or default_start(datetime.fromtimestamp(origin, tz=UTC))
    return MarketClock(start=start, origin=origin, speed=settings.clock.clock_speed)
