"""Table tests of the promotion gate (mur.registry.gate.decide): every rule, ties, backfills."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from mur.registry.gate import BACKFILL, CHALLENGER, CHAMPION, Evidence, decide

JAN = datetime(2025, 1, 1, tzinfo=UTC)
FEB = datetime(2025, 2, 1, tzinfo=UTC)
MAR = datetime(2025, 3, 1, tzinfo=UTC)


def ev(
    end: datetime, skill: float, se: float = 0.002, p_worse: float = 0.5, version: int | None = None
) -> Evidence:
    return Evidence(window_end=end, skill=skill, skill_se=se, dm_p_worse=p_worse, version=version)


def iv(
    end: datetime,
    skill: float,
    interval: float,
    *,
    ise: float = 0.01,
    ip_worse: float = 0.5,
    version: int | None = None,
) -> Evidence:
    """Evidence of a quantile model: point skill and 1 h interval skill with their uncertainty."""
    return Evidence(
        window_end=end,
        skill=skill,
        skill_se=0.002,
        dm_p_worse=0.5,
        version=version,
        interval_skill=interval,
        interval_skill_se=ise,
        interval_p_worse=ip_worse,
    )


ICHAMP = iv(FEB, 0.0, 0.10, version=3)


CHAMP = ev(FEB, 0.010, version=2)

CASES = [
    # (name, candidate, champion, kwargs, alias, rule)
    ("first qualifying version", ev(FEB, -0.001), None, {"skill_floor": -0.05}, CHAMPION, "first"),
    (
        "first version worse than persistence",
        ev(FEB, -0.03, p_worse=0.01),
        None,
        {},
        CHALLENGER,
        "persistence",
    ),
    (
        "significantly worse overrides any floor",
        ev(MAR, -0.02, p_worse=0.001),
        CHAMP,
        {"skill_floor": -1.0},
        CHALLENGER,
        "persistence",
    ),
    ("below the floor", ev(MAR, -0.06, p_worse=0.2), CHAMP, {"skill_floor": -0.05}, CHALLENGER, "floor"),
    ("backfill never takes the alias even when better", ev(JAN, 0.5), CHAMP, {}, BACKFILL, "backfill"),
    (
        "a backfill worse than persistence is still tagged a backfill",
        ev(JAN, -0.03, p_worse=0.001),
        CHAMP,
        {},
        BACKFILL,
        "backfill",
    ),
    ("newer and better", ev(MAR, 0.02), CHAMP, {}, CHAMPION, "fresher"),
    ("exact tie: fresher data wins", ev(MAR, 0.010), CHAMP, {}, CHAMPION, "fresher"),
    ("same window end counts as fresh", ev(FEB, 0.011), CHAMP, {}, CHAMPION, "fresher"),
    ("slightly worse within noise: fresher wins", ev(MAR, 0.008), CHAMP, {}, CHAMPION, "noise"),
    (
        "significantly worse than the champion",
        ev(MAR, -0.004, se=0.002),
        CHAMP,
        {},
        CHALLENGER,
        "worse-than-champion",
    ),
    (
        "unknown uncertainty is never called worse",
        ev(MAR, 0.0, se=math.inf),
        ev(FEB, 0.01, se=math.inf),
        {},
        CHAMPION,
        "noise",
    ),
    (
        "ranges significantly worse than the naive interval never serve",
        iv(MAR, 0.001, -0.08, ip_worse=0.001),
        None,
        {},
        CHALLENGER,
        "interval",
    ),
    (
        "interval skill significantly below the champion's keeps the champion",
        iv(MAR, 0.0, 0.02),
        ICHAMP,
        {},
        CHALLENGER,
        "worse-than-champion",
    ),
    ("interval skill within noise: fresher wins", iv(MAR, 0.0, 0.09), ICHAMP, {}, CHAMPION, "noise"),
    ("better on both skills", iv(MAR, 0.001, 0.12), ICHAMP, {}, CHAMPION, "fresher"),
    (
        "a point-only champion is compared on point skill alone",
        iv(MAR, 0.0, 0.10),
        ev(FEB, 0.0, version=1),
        {},
        CHAMPION,
        "fresher",
    ),
    (
        "unloadable champion is replaced",
        ev(MAR, -0.001),
        CHAMP,
        {"champion_loadable": False},
        CHAMPION,
        "unloadable",
    ),
]


@pytest.mark.parametrize(
    ("name", "cand", "champ", "kwargs", "alias", "rule"), CASES, ids=[c[0] for c in CASES]
)
def test_gate_rules(
    name: str, cand: Evidence, champ: Evidence | None, kwargs: dict, alias: str, rule: str
) -> None:
    decision = decide(cand, champ, **{"skill_floor": -0.05, **kwargs})
    assert (decision.alias, decision.rule) == (alias, rule), decision.reason
    assert decision.reason
    assert decision.promoted == (alias == CHAMPION)


def test_backfill_reason_names_both_window_ends() -> None:
    d = decide(ev(JAN, 0.1), CHAMP)
    assert "2025-01-01T00:00:00Z" in d.reason and "2025-02-01T00:00:00Z" in d.reason and "v2" in d.reason


def test_alpha_must_be_a_probability() -> None:
    with pytest.raises(ValueError, match="alpha"):
        decide(ev(MAR, 0.0), None, alpha=1.5)
