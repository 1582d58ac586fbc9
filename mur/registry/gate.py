"""The promotion gate: which registered version serves a pair. Pure functions, table-tested.

The ranges are the product, so the gate decides on a **proper score of the whole forecast distribution**:
the mean pinball loss over the quantile levels, per horizon, of the candidate and the champion **on the same
out-of-sample targets** (the hours of the candidate's test span that the champion never trained on, or the
live resolved targets of a shadow), with a Diebold-Mariano test (HLN-corrected, lag ``h - 1``) on the
per-target differences (:func:`compare_horizon`). The median is persistence by nature; it is a guard, not
the decider. The rules, in order:

1. **Backfill rule.** A version whose data window ends before the current champion's is registered and
   tagged ``kind=backfill`` but never takes the alias, whatever its scores: what is served never goes back
   in time (a live promotion of a shadow and a rollback are deliberate, recorded exceptions).
2. **Persistence rule.** A version significantly worse than persistence (``persistence``), whose 1 h ranges
   are significantly worse than the naive interval baseline (``interval``) or whose point skill is below the
   floor (``floor``) never becomes champion. These are the versions never served, not even in shadow.
3. **First version.** With no champion (or one whose artefact cannot be loaded), a version that passed
   rule 2 becomes champion.
4. **Coverage band.** A candidate whose coverage at some horizon lies outside ``nominal ± (tolerance +
   z·se)`` cannot win (``coverage``); ``se = sqrt(p (1 - p) / n_eff)`` with ``n_eff = n / h`` independent
   outcomes of an ``h``-hour horizon, ``z`` the two-sided ``alpha`` quantile.
5. **Point guard.** Nor can one whose median is significantly worse than the champion's by more than
   ``point_margin`` of persistence's MAE (a non-inferiority test on the same targets: ``point-guard``).
6. **Ranges decide.** A candidate whose pinball loss is significantly higher than the champion's at some
   horizon keeps the champion (``worse-than-champion``); otherwise it wins: ``better-ranges`` when
   significantly lower at some horizon, else ``fresher`` (fresher data or a newer training wins ties).

Without same targets (a champion of other horizons or levels, too few unseen targets) rules 4-6 fall back
to scale-free scores of each version on its own test span: 1 h interval skill vs the naive range (with
its standard error) decides, point skill is a guard with the same margin (``fallback`` in the reason).

:func:`decide_live` applies rules 4-6 to a shadow on the champion's live resolved targets, stricter: every
horizon needs ``min_resolved`` targets and the shadow must be significantly better at one (reason ``live``).

A pair with no version that passes rule 2 has no champion and is not served: the API answers 503 with the
reason instead of serving a model known to be worse than persistence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from statistics import NormalDist

import numpy as np

from mur.model.quantile_config import interval_level
from mur.registry.names import BACKFILL, CHALLENGER, CHAMPION
from mur.timeutil import iso

SHADOW_RULES = frozenset({"coverage", "point-guard", "worse-than-champion"})
"""Rules that reject a version that passed the sanity checks: such a version is served in shadow."""


@dataclass(frozen=True)
class Coverage:
    """A version's coverage of its central interval at one horizon, on ``n`` targets."""

    hours: int
    n: int
    coverage: float
    nominal: float


@dataclass(frozen=True)
class Evidence:
    """Out-of-sample evidence recorded on one version (from its metrics document / version tags)."""

    window_end: datetime
    """End of the data the version was trained on (exclusive): its ``as_of``."""
    skill: float
    """``1 - MAE_model / MAE_persistence`` on its own out-of-sample test span."""
    skill_se: float = math.inf
    """Standard error of ``skill`` (``inf`` when unknown: such a version can never be called worse)."""
    dm_p_worse: float = 1.0
    """One-sided DM p-value of "the model's absolute error is larger than persistence's"."""
    version: int | None = None
    interval_skill: float | None = None
    """1 h ``1 - Winkler_model / Winkler_naive`` on its test span (None: a point-only model)."""
    interval_skill_se: float = math.inf
    interval_p_worse: float = 1.0
    """One-sided DM p-value of "the model's Winkler score is larger than the naive interval's"."""
    coverage: tuple[Coverage, ...] = ()
    """Per horizon, on its own test span."""


@dataclass(frozen=True)
class HorizonComparison:
    """Candidate vs champion at one horizon on the same ``n`` targets (lower pinball is better)."""

    hours: int
    n: int
    nominal: float
    coverage: float
    champion_coverage: float
    pinball: float
    champion_pinball: float
    p_worse: float
    """One-sided DM p-value of "the candidate's pinball loss is higher"."""
    p_better: float
    point_gap: float
    """``(MAE_candidate - MAE_champion) / MAE_persistence`` of the medians."""
    point_p_worse: float
    """One-sided p-value of "the candidate's median is worse by more than the margin" (non-inferiority)."""

    @property
    def score_skill(self) -> float:
        """``1 - pinball_candidate / pinball_champion`` (> 0: better ranges)."""
        return 1.0 - self.pinball / self.champion_pinball if self.champion_pinball > 0 else 0.0


@dataclass(frozen=True)
class Decision:
    """The gate's verdict: the alias the version takes (``champion`` or not), why, and the scores behind it."""

    alias: str
    reason: str
    rule: str
    """Which rule decided: ``backfill``, ``persistence``, ``interval``, ``floor``, ``first``, ``unloadable``,
    ``coverage``, ``point-guard``, ``worse-than-champion``, ``better-ranges``, ``fresher``, ``live``."""
    scores: list[HorizonComparison] = field(default_factory=list)

    @property
    def promoted(self) -> bool:
        return self.alias == CHAMPION

    @property
    def shadow(self) -> bool:
        """A sane version that lost: served in shadow, scored live."""
        return self.rule in SHADOW_RULES

    def scores_json(self) -> list[dict[str, float]]:
        return [{**asdict(s), "score_skill": s.score_skill} for s in self.scores]


def compare_horizon(
    candidate: np.ndarray,
    champion: np.ndarray,
    y: np.ndarray,
    last_close: np.ndarray,
    levels: Sequence[float],
    hours: int,
    *,
    point_margin: float = 0.005,
) -> HorizonComparison:
    """Score two forecasts ``(n, L)`` (price quantiles at ``levels``, the outer two the interval) of the same
    targets ``y``: coverage, mean pinball loss and the DM tests of :class:`HorizonComparison`."""
    from mur.evaluation.intervals import pinball_per_target
    from mur.evaluation.significance import diebold_mariano

    cand, champ = np.asarray(candidate, dtype=np.float64), np.asarray(champion, dtype=np.float64)
    y, last = np.asarray(y, dtype=np.float64).ravel(), np.asarray(last_close, dtype=np.float64).ravel()
    h = max(1, min(int(hours), len(y) - 1))
    loss_c, loss_k = pinball_per_target(cand, y, levels), pinball_per_target(champ, y, levels)
    dm = diebold_mariano(loss_c, loss_k, horizon=h)
    mid = list(levels).index(0.5)
    abs_c, abs_k = np.abs(cand[:, mid] - y), np.abs(champ[:, mid] - y)
    mae_p = float(np.mean(np.abs(last - y))) or 1.0
    guard = diebold_mariano(abs_c, abs_k + point_margin * mae_p, horizon=h)
    inside = lambda q: float(np.mean((y >= q[:, 0]) & (y <= q[:, -1])))  # noqa: E731
    return HorizonComparison(
        hours=int(hours),
        n=len(y),
        nominal=interval_level(levels),
        coverage=inside(cand),
        champion_coverage=inside(champ),
        pinball=float(loss_c.mean()),
        champion_pinball=float(loss_k.mean()),
        p_worse=dm.p_worse,
        p_better=dm.p_better,
        point_gap=float((abs_c.mean() - abs_k.mean()) / mae_p),
        point_p_worse=guard.p_worse,
    )


def coverage_band(c: Coverage, *, alpha: float, tolerance: float) -> tuple[float, float]:
    """``nominal ± (tolerance + z·se)``: the coverages a version of ``n`` targets can honestly show."""
    n_eff = max(1.0, c.n / max(1, c.hours))
    half = tolerance + NormalDist().inv_cdf(1 - alpha / 2) * math.sqrt(c.nominal * (1 - c.nominal) / n_eff)
    return c.nominal - half, c.nominal + half


def out_of_band(coverages: Sequence[Coverage], *, alpha: float, tolerance: float) -> str | None:
    """The first coverage outside its band, said in words, or None."""
    for c in coverages:
        lo, hi = coverage_band(c, alpha=alpha, tolerance=tolerance)
        if not lo <= c.coverage <= hi:
            return (
                f"{c.hours} h coverage {c.coverage:.3f} outside {lo:.3f}-{hi:.3f} "
                f"(nominal {c.nominal:.2f}, {c.n} targets)"
            )
    return None


def decide(
    candidate: Evidence,
    champion: Evidence | None,
    *,
    alpha: float = 0.05,
    skill_floor: float = 0.0,
    champion_loadable: bool = True,
    same_targets: Sequence[HorizonComparison] = (),
    coverage_tolerance: float = 0.02,
    point_margin: float = 0.005,
) -> Decision:
    """Apply the rules above to ``candidate`` given the current ``champion`` (None when there is none) and
    their comparison on the same targets (empty: the scale-free fallback)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if champion is not None and candidate.window_end < champion.window_end:
        return Decision(
            BACKFILL,
            f"trained on data up to {iso(candidate.window_end)}, before the champion"
            f"{_v(champion)}'s {iso(champion.window_end)}: a backfill, kept as a version, never served",
            "backfill",
        )
    if candidate.dm_p_worse < alpha:
        return Decision(
            CHALLENGER,
            f"significantly worse than persistence (skill {candidate.skill:+.4f}, "
            f"DM p={candidate.dm_p_worse:.3g} < {alpha:g})",
            "persistence",
        )
    if candidate.interval_p_worse < alpha:
        return Decision(
            CHALLENGER,
            f"ranges significantly worse than the naive interval (interval skill "
            f"{candidate.interval_skill or 0.0:+.4f}, DM p={candidate.interval_p_worse:.3g} < {alpha:g})",
            "interval",
        )
    if candidate.skill < skill_floor:
        return Decision(
            CHALLENGER, f"skill {candidate.skill:+.4f} below the floor {skill_floor:+.4f}", "floor"
        )
    if champion is None:  # the ranges are the product: their 1 h skill against the naive range first
        iv = "" if candidate.interval_skill is None else f"1 h range skill {candidate.interval_skill:+.3f}, "
        why = f"first qualifying version ({iv}point skill {candidate.skill:+.4f})"
        return Decision(CHAMPION, why, "first")
    if not champion_loadable:
        return Decision(
            CHAMPION, f"the champion{_v(champion)}'s artefact cannot be loaded; replacing it", "unloadable"
        )
    if miss := out_of_band(candidate.coverage, alpha=alpha, tolerance=coverage_tolerance):
        return Decision(CHALLENGER, f"{miss}: cannot win", "coverage", list(same_targets))
    if not same_targets:
        decision = _fallback(candidate, champion, alpha, point_margin)
    else:
        tol, who = coverage_tolerance, f"champion{_v(champion)}"
        decision = _ranges_decide(list(same_targets), who, alpha, tol, point_margin, live=False)
    if decision.rule == "fresher" and candidate.window_end == champion.window_end:  # other settings
        return replace(decision, reason=decision.reason.replace("fresher data", "same data, newer training"))
    return decision


def decide_live(
    scores: Sequence[HorizonComparison],
    *,
    champion_version: int | None,
    alpha: float = 0.05,
    min_resolved: int = 48,
    coverage_tolerance: float = 0.02,
    point_margin: float = 0.005,
) -> Decision:
    """Should a shadow replace the champion on their live resolved targets? ``champion`` (reason starting
    ``live:``) only when every horizon has ``min_resolved`` targets, the shadow's coverage is in band, its
    median passes the guard, no horizon is significantly worse and one is significantly better."""
    if not scores or any(s.n < min_resolved for s in scores):
        have = ", ".join(f"{s.hours} h {s.n}" for s in scores) or "none"
        return Decision(
            CHALLENGER, f"live: too few resolved targets ({have}; {min_resolved} needed)", "pending"
        )
    who = f"champion v{champion_version}" if champion_version is not None else "champion"
    return _ranges_decide(list(scores), who, alpha, coverage_tolerance, point_margin, live=True)


def _ranges_decide(
    scores: list[HorizonComparison], who: str, alpha: float, tolerance: float, margin: float, *, live: bool
) -> Decision:
    prefix = "live: " if live else ""
    mine = [Coverage(s.hours, s.n, s.coverage, s.nominal) for s in scores]
    if miss := out_of_band(mine, alpha=alpha, tolerance=tolerance):
        return Decision(CHALLENGER, f"{prefix}{miss}: cannot win", "coverage", scores)
    for s in scores:
        if s.point_p_worse < alpha:
            return Decision(
                CHALLENGER,
                f"{prefix}{s.hours} h median worse than {who}'s by more than {margin:.1%} of persistence's MAE "
                f"(gap {s.point_gap:+.4f}, p={s.point_p_worse:.3g})",
                "point-guard",
                scores,
            )
    table = "; ".join(
        f"{s.hours} h pinball skill {s.score_skill:+.3f} vs {who} (p worse {s.p_worse:.3g}, better {s.p_better:.3g}, "
        f"coverage {s.coverage:.3f} vs {s.champion_coverage:.3f}, n={s.n})"
        for s in scores
    )
    if any(s.p_worse < alpha for s in scores):
        return Decision(
            CHALLENGER, f"{prefix}ranges significantly worse: {table}", "worse-than-champion", scores
        )
    if any(s.p_better < alpha for s in scores):
        return Decision(
            CHAMPION,
            f"{prefix}ranges significantly better: {table}",
            "live" if live else "better-ranges",
            scores,
        )
    if live:
        return Decision(CHALLENGER, f"live: not significantly better: {table}", "pending", scores)
    theirs = [Coverage(s.hours, s.n, s.champion_coverage, s.nominal) for s in scores]
    champ_miss = out_of_band(theirs, alpha=alpha, tolerance=tolerance)
    note = f"; the {who}'s {champ_miss}" if champ_miss else ""
    return Decision(CHAMPION, f"fresher data, ranges within noise: {table}{note}", "fresher", scores)


def _fallback(candidate: Evidence, champion: Evidence, alpha: float, margin: float) -> Decision:
    """No same targets: scale-free scores of each on its own test span, interval skill deciding and point
    skill guarding (allowed ``margin`` below the champion's)."""
    z_crit = NormalDist().inv_cdf(1 - alpha)
    checks = [("point skill", candidate.skill, champion.skill, margin, candidate.skill_se, champion.skill_se)]
    if candidate.interval_skill is not None and champion.interval_skill is not None:
        checks.append(
            (
                "interval skill",
                candidate.interval_skill,
                champion.interval_skill,
                0.0,
                candidate.interval_skill_se,
                champion.interval_skill_se,
            )
        )
    notes = []
    for label, new, old, allowed, se_new, se_old in checks:
        se = math.sqrt(se_new**2 + se_old**2)
        gap = old - allowed - new
        z = gap / se if se > 0 else math.copysign(math.inf, gap)
        if math.isfinite(se) and z > z_crit:
            return Decision(
                CHALLENGER,
                f"fallback (no same targets): {label} {new:+.4f} significantly below champion{_v(champion)}'s "
                f"{old:+.4f} (z={z:.2f} > {z_crit:.2f})",
                "point-guard" if label == "point skill" else "worse-than-champion",
            )
        notes.append(f"{label} {new:+.4f} vs {old:+.4f}")
    return Decision(
        CHAMPION,
        f"fresher data; fallback (no same targets) vs champion{_v(champion)}: " + "; ".join(notes),
        "fresher",
    )


def _v(e: Evidence) -> str:
    return f" v{e.version}" if e.version is not None else ""
