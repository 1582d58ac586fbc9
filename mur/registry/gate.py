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
3. **First version.** With no champion (or one whose artefact cannot be loaded), a version that passed
   rule 1 becomes champion.
4. **Fresher data wins ties.** Against the champion, a newer (or equally new) version wins unless its skill
   is significantly below the champion's: ``(skill_champion - skill_new) / sqrt(se_c^2 + se_n^2) > z``
   with ``z`` the one-sided ``alpha`` quantile (1.645 at 5 %). Differences smaller than the noise of a
   few days of hours do not flip the champion back to stale weights.

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
    gap = champion.skill - candidate.skill
    se = math.sqrt(candidate.skill_se**2 + champion.skill_se**2)
    z_crit = NormalDist().inv_cdf(1 - alpha)
    if gap <= 0:
        return Decision(
            CHAMPION,
            f"fresher data and skill {candidate.skill:+.4f} >= champion{_v(champion)}'s {champion.skill:+.4f}",
            "fresher",
        )
    z = gap / se if se > 0 else math.inf
    if math.isfinite(se) and z > z_crit:
        return Decision(
            CHALLENGER,
            f"skill {candidate.skill:+.4f} significantly below champion{_v(champion)}'s "
            f"{champion.skill:+.4f} (z={z:.2f} > {z_crit:.2f})",
            "worse-than-champion",
        )
    return Decision(
        CHAMPION,
        f"fresher data; skill {candidate.skill:+.4f} vs champion{_v(champion)}'s {champion.skill:+.4f} is "
        f"within noise (z={z:.2f} <= {z_crit:.2f})",
        "noise",
    )


def _v(e: Evidence) -> str:
    return f" v{e.version}" if e.version is not None else ""
