"""Time helpers shared by every stage: one ISO-8601 format, one parser, whole hours (all UTC)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from mur.errors import DataValidationError

HOUR = timedelta(hours=1)


def iso(ts: Any) -> str:
    """ISO-8601 UTC with a trailing Z (seconds precision); naive values are taken as UTC."""
    t = pd.Timestamp(ts)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


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
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.to_pydatetime()
