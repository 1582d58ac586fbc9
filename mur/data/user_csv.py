"""A user's own candles CSV, read into the typed frame (``mur train --csv``, ``mur data show --csv``)."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from mur.data.candles import (
    CLOSE_OFFSET_MS,
    FLOAT_COLUMNS,
    INT_COLUMNS,
    KLINE_COLUMNS,
    REQUIRED_CSV_COLUMNS,
    ms_to_utc,
    validate_candles,
)
from mur.errors import DataValidationError, first_line


def _csv_timestamps(series: pd.Series, path: Path | str, column: str) -> pd.Series:
    """Epoch-ms integers or ISO-8601 strings -> ``datetime64[ns, UTC]`` (naive strings read as UTC)."""
    if series.isna().any():
        i = int(np.argmax(series.isna().to_numpy()))
        raise DataValidationError(f"empty {column} at line {i + 2} of {path}")
    text = series.astype(str).str.strip()
    if text.str.fullmatch(r"\d+(\.0*)?").all():  # whole numbers: epoch milliseconds
        ms = pd.to_numeric(text).astype("float64").to_numpy()
        unit = "seconds" if ms.min() < 1e11 else "microseconds" if ms.max() >= 1e14 else None
        if unit is not None:
            raise DataValidationError(
                f"{column} values in {path} look like epoch {unit}; expected epoch milliseconds"
            )
        return pd.Series(ms_to_utc(ms.astype("int64")))
    parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    if parsed.isna().any():
        i = int(np.argmax(parsed.isna().to_numpy()))
        raise DataValidationError(
            f"{column} {text[i]!r} at line {i + 2} of {path} is neither epoch milliseconds nor an "
            "ISO-8601 time"
        )
    return parsed.dt.as_unit("ns")


def load_candles_csv(path: str | Path | IO[bytes], *, name: str | None = None) -> pd.DataFrame:
    """Read a user's candles CSV into the typed frame, then :func:`validate_candles` it.

    ``path`` is a file or an open binary stream (an upload); ``name`` is what error messages call it (default:
    the path).

    Needs ``timestamp`` (or ``open_time``), ``open``, ``high``, ``low``, ``close``, ``volume``; timestamps
    are epoch milliseconds or ISO-8601 (UTC when no offset is given). Missing Binance columns are filled:
    ``close_time`` = open time + 3599999 ms, the rest 0. Rows are sorted by time; extra columns are dropped.
    """
    source = path if hasattr(path, "read") else Path(str(path))
    label = name or str(source)
    try:
        raw = pd.read_csv(source, dtype=str, skipinitialspace=True)
    except FileNotFoundError:
        raise DataValidationError(f"candles CSV not found: {label}") from None
    except pd.errors.EmptyDataError:
        raise DataValidationError(f"candles CSV {label} is empty") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        reason = first_line(exc)
        raise DataValidationError(f"cannot read candles CSV {label}: {reason}") from None
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    if "timestamp" not in raw.columns and "open_time" in raw.columns:
        raw = raw.rename(columns={"open_time": "timestamp"})
    missing = [c for c in REQUIRED_CSV_COLUMNS if c not in raw.columns]
    if missing:
        raise DataValidationError(
            f"candles CSV {label} is missing column(s): {', '.join(missing)} "
            f"(need {', '.join(REQUIRED_CSV_COLUMNS)})"
        )

    timestamps = _csv_timestamps(raw["timestamp"], label, "timestamp")
    given_close = "close_time" in raw.columns and not raw["close_time"].isna().all()
    columns: dict[str, Any] = {
        "timestamp": timestamps,
        "close_time": _csv_timestamps(raw["close_time"], label, "close_time")
        if given_close
        else timestamps + pd.Timedelta(milliseconds=CLOSE_OFFSET_MS),
    }
    for column in (*FLOAT_COLUMNS, *INT_COLUMNS):
        text = raw[column].str.strip() if column in raw.columns else pd.Series("0", index=raw.index)
        values = pd.to_numeric(text, errors="coerce")
        bad = values.isna() & text.notna() & (text != "")
        if bad.any():
            i = int(np.argmax(bad.to_numpy()))
            raise DataValidationError(f"column '{column}' has non-numeric value {text[i]!r} at line {i + 2}")
        columns[column] = (
            values.fillna(0).astype("int64") if column in INT_COLUMNS else values.astype("float64")
        )
    out = pd.DataFrame(columns).loc[:, list(KLINE_COLUMNS)]
    out = out.sort_values("timestamp", kind="stable").reset_index(drop=True)
    validate_candles(out)
    return out
