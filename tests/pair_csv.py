"""Hourly klines CSVs for the tests of pairs added by an admin (mur/data/catalogue.py): a random walk, with
optional gaps, renamed columns or a shorter history."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

START = datetime(2024, 1, 1, tzinfo=UTC)
"""Before the tests' market now (tests/conftest.py freezes the clock at 2026-01-01)."""


def pair_csv_text(
    hours: int,
    *,
    start: datetime = START,
    drop: Iterable[int] = (),
    header: str = "timestamp,open,high,low,close,volume",
    seed: int = 7,
) -> str:
    """``hours`` hourly candles from ``start`` (epoch ms open times), leaving out the rows in ``drop``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    close = 0.1 * np.exp(np.cumsum(rng.normal(0.0, 0.01, hours)))
    first_ms = int(start.timestamp() * 1000)
    skip = set(drop)
    lines = [header]
    for i in range(hours):
        if i in skip:
            continue
        c = float(close[i])
        o = float(close[i - 1]) if i else c
        lines.append(
            f"{first_ms + i * 3_600_000},{o:.6f},{max(o, c) * 1.002:.6f},{min(o, c) * 0.998:.6f},{c:.6f},{1000 + i}"
        )
    return "\n".join(lines) + "\n"


def write_pair_csv(path: Path, hours: int, **kwargs: object) -> Path:
    """:func:`pair_csv_text` written to ``path``."""
    path.write_text(pair_csv_text(hours, **kwargs))  # type: ignore[arg-type]
    return path
