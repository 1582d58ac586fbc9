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


def _parse(value: str | Sequence[object], cast: type, what: str) -> tuple:
    """``"a,b,c"`` (CLI, trigger form, job arguments) or a sequence → a tuple of ``cast`` values."""
    items = value.split(",") if isinstance(value, str) else value
    try:
        return tuple(cast(str(v).strip()) for v in items if str(v).strip())
    except ValueError as exc:
        raise ValueError(f"{what} separated by commas, got {value!r}") from exc


def parse_horizons(value: str | Sequence[int]) -> tuple[int, ...]:
    """``"1,4,24"`` or a sequence → checked tuple of hours."""
    hours = _parse(value, int, "horizons must be whole hours")
    check_quantile_config(hours, DEFAULT_QUANTILE_LEVELS)
    return hours


def parse_levels(value: str | Sequence[float]) -> tuple[float, ...]:
    """``"0.05,0.5,0.95"`` or a sequence → checked tuple of quantile levels."""
    levels = _parse(value, float, "quantile levels must be numbers")
    check_quantile_config(DEFAULT_HORIZONS, levels)
    return levels


def interval_level(levels: Sequence[float]) -> float:
    """Nominal coverage of the interval formed by the outer two levels (0.90 for 0.05 / 0.95)."""
    return round(float(levels[-1]) - float(levels[0]), 10)
