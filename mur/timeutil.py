"""Time helpers shared by every stage: one ISO-8601 format, one parser, whole hours (all UTC)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, overload

import pandas as pd

from mur.errors import DataValidationError

HOUR = timedelta(hours=1)


@overload
def as_utc(value: None) -> None: ...
@overload
def as_utc(value: datetime) -> pd.Timestamp: ...
def as_utc(value: datetime | None) -> pd.Timestamp | None:
    """A datetime as a UTC ``Timestamp``; naive datetimes are read as UTC."""
    if value is None:
        return None
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def iso(ts: Any) -> str:
    """ISO-8601 UTC with a trailing Z (seconds precision); naive values are taken as UTC."""
    return as_utc(pd.Timestamp(ts)).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | datetime | None) -> datetime | None:
    """Parse an ISO-8601 time (naive = UTC); None stays None. Bad input -> DataValidationError."""
    if value is None or isinstance(value, datetime):
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise DataValidationError(
            f"cannot parse time '{value}': use ISO-8601 like 2025-06-01T00:00:00Z"
        ) from exc
    if ts is pd.NaT:
        raise DataValidationError(f"cannot parse time '{value}'")
    return as_utc(ts).to_pydatetime()
