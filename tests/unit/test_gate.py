"""Table tests of the promotion gate (mur.registry.gate.decide): every rule, ties, backfills; the range-first
rules on two fixture forecasts of the same targets (issue 37's sol_usdt case); the live decision."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from mur.registry.gate import (
    BACKFILL,
    CHALLENGER,
    CHAMPION,
    Coverage,
    Evidence,
    HorizonComparison,
    compare_horizon,
    coverage_band,
    decide,
    decide_live,
)

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
    ("slightly worse within noise: fresher wins", ev(MAR, 0.008), CHAMP, {}, CHAMPION, "fresher"),
    (
        "point skill worse than the champion's beyond the margin: the guard",
        ev(MAR, -0.004, se=0.002),
        CHAMP,
        {},
        CHALLENGER,
        "point-guard",
    ),
    (
        "point skill significantly worse but within the margin: not the decider",
        ev(MAR, 0.007, se=0.0005),
        ev(FEB, 0.010, se=0.0005),
        {},
        CHAMPION,
        "fresher",
    ),
    (
        "unknown uncertainty is never called worse",
        ev(MAR, 0.0, se=math.inf),
        ev(FEB, 0.01, se=math.inf),
        {},
        CHAMPION,
        "fresher",
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
    ("interval skill within noise: fresher wins", iv(MAR, 0.0, 0.09), ICHAMP, {}, CHAMPION, "fresher"),
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


def test_the_first_versions_reason_leads_with_its_range_skill() -> None:
    first = decide(iv(FEB, 0.0, 0.091), None)
    assert first.reason == "first qualifying version (1 h range skill +0.091, point skill +0.0000)", (
        first.reason
    )
    assert (
        decide(ev(FEB, 0.002), None).reason == "first qualifying version (point skill +0.0020)"
    )  # point-only


def test_backfill_reason_names_both_window_ends() -> None:
    d = decide(ev(JAN, 0.1), CHAMP)
    assert "2025-01-01T00:00:00Z" in d.reason and "2025-02-01T00:00:00Z" in d.reason and "v2" in d.reason


def test_alpha_must_be_a_probability() -> None:
    with pytest.raises(ValueError, match="alpha"):
        decide(ev(MAR, 0.0), None, alpha=1.5)


LEVELS = (0.05, 0.5, 0.95)


def fixture_forecasts(n: int = 876, seed: int = 7) -> dict[str, np.ndarray]:
    """Issue 37's sol_usdt case on a volatility-clustering random walk: the champion's median is a hair
    better than persistence (skill +0.0013) but its range has one width for calm and wild hours (coverage
    ~0.84); the candidate's median is persistence and its range follows the volatility (coverage ~0.90)."""
    rng = np.random.default_rng(seed)
    sigma = np.where((np.arange(n) // 72) % 2 == 0, 0.004, 0.012)
    r = sigma * rng.standard_normal(n)
    last = 100.0 * np.exp(np.cumsum(np.r_[0.0, r[:-1]]))
    y = last * np.exp(r)
    z = 1.6449
    width = 1.15 * float(np.mean(sigma))
    champion = np.stack([last * np.exp(-width), last * np.exp(0.0013 * r), last * np.exp(width)], axis=1)
    candidate = np.stack([last * np.exp(-z * sigma), last, last * np.exp(z * sigma)], axis=1)
    return {"y": y, "last": last, "champion": champion, "candidate": candidate}


def test_the_better_range_wins_though_the_champion_has_the_better_median() -> None:
    f = fixture_forecasts()
    cmp = compare_horizon(f["candidate"], f["champion"], f["y"], f["last"], LEVELS, 1)
    assert cmp.point_gap > 0, "the champion's median is the better one"
    assert 0.88 <= cmp.coverage <= 0.92 and cmp.champion_coverage < 0.86, cmp
    assert cmp.pinball < cmp.champion_pinball and cmp.p_better < 0.05 and cmp.score_skill > 0
    cand = iv(MAR, 0.0, 0.158, version=2)
    champ = iv(FEB, 0.0013, 0.040, version=1)
    decision = decide(cand, champ, same_targets=[cmp])
    assert (decision.alias, decision.rule) == (CHAMPION, "better-ranges"), decision.reason
    assert "1 h pinball skill" in decision.reason and "v1" in decision.reason
    assert decision.scores == [cmp] and decision.scores_json()[0]["p_better"] == cmp.p_better
    # the old champion as a candidate: its coverage is out of band, whatever its median
    back = compare_horizon(f["champion"], f["candidate"], f["y"], f["last"], LEVELS, 1)
    lost = decide(iv(MAR, 0.0013, 0.04), iv(FEB, 0.0, 0.158), same_targets=[back])
    assert (lost.alias, lost.rule) == (CHALLENGER, "coverage") and "outside" in lost.reason, lost.reason
    assert lost.shadow


def test_a_candidate_whose_own_coverage_is_out_of_band_cannot_win() -> None:
    cand = Evidence(window_end=MAR, skill=0.0, coverage=(Coverage(1, 876, 0.843, 0.9),), version=5)
    decision = decide(cand, CHAMP)
    assert (decision.alias, decision.rule) == (CHALLENGER, "coverage") and "0.843" in decision.reason
    first = decide(cand, None)  # no champion: a sane first version serves
    assert first.rule == "first"


def test_coverage_band_allows_for_the_sampling_error_of_independent_outcomes() -> None:
    lo1, hi1 = coverage_band(Coverage(1, 876, 0.9, 0.9), alpha=0.05, tolerance=0.02)
    lo24, hi24 = coverage_band(Coverage(24, 876, 0.9, 0.9), alpha=0.05, tolerance=0.02)
    assert round(hi1 - 0.9, 3) == round(0.02 + 1.96 * math.sqrt(0.09 / 876), 3)
    assert lo24 < lo1 < 0.9 < hi1 < hi24  # 36 independent 24 h outcomes: a much wider band
    assert lo1 > 0.843


def test_ranges_significantly_worse_keep_the_champion_and_ties_go_to_fresher_data() -> None:
    f = fixture_forecasts()
    better_champion = compare_horizon(f["candidate"] * 1.0, f["candidate"], f["y"], f["last"], LEVELS, 1)
    tie = decide(iv(MAR, 0.0, 0.1), ICHAMP, same_targets=[better_champion])
    assert tie.rule == "fresher" and tie.promoted and tie.reason.startswith("fresher data,"), tie.reason
    # the same window retrained (other settings: `mur up`'s quick first run, then the scheduled one) is no fresher
    same = decide(iv(FEB, 0.0, 0.1), ICHAMP, same_targets=[better_champion])
    assert same.promoted and same.reason.startswith("same data, newer training, ranges within"), same.reason
    fallback = decide(iv(FEB, 0.0, 0.1), ICHAMP)
    assert fallback.reason.startswith("same data, newer training; fallback"), fallback.reason
    wide = f["candidate"].copy()
    wide[:, 0], wide[:, 2] = f["last"] * 0.9, f["last"] * 1.1  # covers everything, far too wide
    worse = compare_horizon(wide, f["candidate"], f["y"], f["last"], LEVELS, 1)
    decision = decide(iv(MAR, 0.0, 0.1), ICHAMP, same_targets=[worse], coverage_tolerance=0.2)
    assert (decision.alias, decision.rule) == (CHALLENGER, "worse-than-champion"), decision.reason


def _live(n: int, **kw: float) -> HorizonComparison:
    base = dict(hours=1, n=n, nominal=0.9, coverage=0.9, champion_coverage=0.85, pinball=1.0)
    base.update(champion_pinball=1.2, p_worse=0.99, p_better=0.01, point_gap=0.0, point_p_worse=0.9)
    base.update(kw)
    return HorizonComparison(**base)  # type: ignore[arg-type]


def test_live_promotion_needs_enough_resolved_targets_and_significance() -> None:
    assert decide_live([_live(10)], champion_version=3, min_resolved=48).rule == "pending"
    promoted = decide_live([_live(200)], champion_version=3, min_resolved=48)
    assert promoted.promoted and promoted.rule == "live" and promoted.reason.startswith("live:")
    assert "champion v3" in promoted.reason
    noise = decide_live([_live(200, p_better=0.3, p_worse=0.7)], champion_version=3)
    assert not noise.promoted and noise.rule == "pending"
    guard = decide_live([_live(200, point_p_worse=0.001, point_gap=0.02)], champion_version=3)
    assert (guard.promoted, guard.rule) == (False, "point-guard")
