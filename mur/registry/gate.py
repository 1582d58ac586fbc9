"""The promotion gate: which registered version serves a pair. A pure function, table-tested.

Every score it looks at is out-of-sample: a version's evidence comes from the test span at the end of its
own data window, which it never trained on. Two versions are never scored on one version's test span (the
older one usually trained on it); they are compared through scale-free scores of each (skill vs
persistence on their own test spans) with their standard errors. The rules, in order:

1. **Backfill rule.** A version whose data window ends before the current champion's is registered and
   tagged ``kind=backfill`` but never takes the alias, whatever its scores: what is served never goes back
   in time.
2. **Persistence rule.** A version significantly worse than persistence (Diebold-Mariano, HLN-corrected,
   one-sided p < ``alpha``) or below the configured skill floor never becomes champion.
   **Interval rule.** Nor does a version whose 1 h ranges are significantly worse than the naive interval
   baseline (DM on Winkler scores, one-sided p < ``alpha``).
3. **First version.** With no champion (or one whose artefact cannot be loaded), a version that passed
   rule 1 becomes champion.
4. **Fresher data wins ties.** Against the champion, a newer (or equally new) version wins unless its
   point skill or its interval skill is significantly below the champion's:
   ``(skill_champion - skill_new) / sqrt(se_c^2 + se_n^2) > z`` with ``z`` the one-sided ``alpha``
   quantile (1.645 at 5 %). Both skills are scale-free scores of each version on its own out-of-sample
   span. Differences smaller than the noise of a few days of hours do not flip the champion back to stale
   weights.

A pair with no version that passes rule 1 has no champion and is not served: the API answers 503 with the
reason instead of serving a model known to be worse than persistence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from statistics import NormalDist

from mur.registry.names import BACKFILL, CHALLENGER, CHAMPION
from mur.timeutil import iso


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


@dataclass(frozen=True)
class Decision:
    """The gate's verdict: the alias the version takes (``champion`` or not) and why."""

    alias: str
    reason: str
    rule: str
    """Which rule decided: ``persistence``, ``floor``, ``backfill``, ``first``, ``unloadable``, ``fresher``,
    ``noise``, ``worse-than-champion``."""

    @property
    def promoted(self) -> bool:
        return self.alias == CHAMPION


def decide(
    candidate: Evidence,
    champion: Evidence | None,
    *,
    alpha: float = 0.05,
    skill_floor: float = 0.0,
    champion_loadable: bool = True,
) -> Decision:
    """Apply the rules above to ``candidate`` given the current ``champion`` (None when there is none)."""
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
            CHALLENGER,
            f"skill {candidate.skill:+.4f} below the floor {skill_floor:+.4f}",
            "floor",
        )
    if champion is None:
        return Decision(CHAMPION, f"first qualifying version (skill {candidate.skill:+.4f})", "first")
    if not champion_loadable:
        return Decision(
            CHAMPION, f"the champion{_v(champion)}'s artefact cannot be loaded; replacing it", "unloadable"
        )
    z_crit = NormalDist().inv_cdf(1 - alpha)
    comparisons = [("skill", candidate.skill, champion.skill, candidate.skill_se, champion.skill_se)]
    if candidate.interval_skill is not None and champion.interval_skill is not None:
        comparisons.append(
            (
                "interval skill",
                candidate.interval_skill,
                champion.interval_skill,
                candidate.interval_skill_se,
                champion.interval_skill_se,
            )
        )
    worst_z, notes = -math.inf, []
    for label, new, old, se_new, se_old in comparisons:
        gap, se = old - new, math.sqrt(se_new**2 + se_old**2)
        if gap <= 0:
            notes.append(f"{label} {new:+.4f} >= {old:+.4f}")
            continue
        z = gap / se if se > 0 else math.inf
        if math.isfinite(se) and z > z_crit:
            return Decision(
                CHALLENGER,
                f"{label} {new:+.4f} significantly below champion{_v(champion)}'s {old:+.4f} "
                f"(z={z:.2f} > {z_crit:.2f})",
                "worse-than-champion",
            )
        worst_z = max(worst_z, z)
        notes.append(f"{label} {new:+.4f} vs {old:+.4f} within noise (z={z:.2f} <= {z_crit:.2f})")
    if worst_z == -math.inf:
        return Decision(
            CHAMPION,
            f"fresher data and skill {candidate.skill:+.4f} >= champion{_v(champion)}'s {champion.skill:+.4f}"
            + (f"; {notes[1]}" if len(notes) > 1 else ""),
            "fresher",
        )
    return Decision(CHAMPION, f"fresher data; vs champion{_v(champion)}: " + "; ".join(notes), "noise")


def _v(e: Evidence) -> str:
    return f" v{e.version}" if e.version is not None else ""
