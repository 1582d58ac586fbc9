"""The shape of a probabilistic forecast (horizons and quantile levels): one check shared by Settings, the
model, the DAG's trigger form and the CLI. Standard library only (Settings and the DAG file import it)."""

from __future__ import annotations

from collections.abc import Sequence

DEFAULT_HORIZONS: tuple[int, ...] = (1, 4, 24)
DEFAULT_QUANTILE_LEVELS: tuple[float, ...] = (0.05, 0.5, 0.95)


def check_quantile_config(horizons: Sequence[int], levels: Sequence[float]) -> None:
    """Horizons: distinct positive hours, ascending, starting with 1; levels: at least three in (0, 1), ascending, with 0.5.

    Raises ValueError with the rule and the value it got.
    """
    horizons, levels = list(horizons), list(levels)
    if not horizons or any(int(h) != h or h < 1 for h in horizons) or horizons != sorted(set(horizons)):
        raise ValueError(f"horizons must be distinct positive whole hours in ascending order, got {horizons}")
    if horizons[0] != 1:
        raise ValueError(f"horizons must start with 1 (the next hour: the point forecast), got {horizons}")
    if (
        len(levels) < 3
        or any(not 0 < q < 1 for q in levels)
        or levels != sorted(set(levels))
        or 0.5 not in levels
    ):
        raise ValueError(
            "quantile levels must be at least three distinct values in (0, 1), ascending, including 0.5; "
            f"got {levels}"
        )


def parse_horizons(value: str | Sequence[int]) -> tuple[int, ...]:
    """``"1,4,24"`` (CLI, trigger form, job arguments) or a sequence → checked tuple of hours."""
    items = value.split(",") if isinstance(value, str) else value
    try:
        hours = tuple(int(str(h).strip()) for h in items if str(h).strip())
    except ValueError as exc:
        raise ValueError(f"horizons must be whole hours separated by commas, got {value!r}") from exc
    check_quantile_config(hours, DEFAULT_QUANTILE_LEVELS)
    return hours


def parse_levels(value: str | Sequence[float]) -> tuple[float, ...]:
    """``"0.05,0.5,0.95"`` or a sequence → checked tuple of quantile levels."""
    items = value.split(",") if isinstance(value, str) else value
    try:
        levels = tuple(float(str(q).strip()) for q in items if str(q).strip())
    except ValueError as exc:
        raise ValueError(f"quantile levels must be numbers separated by commas, got {value!r}") from exc
    check_quantile_config(DEFAULT_HORIZONS, levels)
    return levels


def interval_level(levels: Sequence[float]) -> float:
    """Nominal coverage of the interval formed by the outer two levels (0.90 for 0.05 / 0.95)."""
    return round(float(levels[-1]) - float(levels[0]), 10)
