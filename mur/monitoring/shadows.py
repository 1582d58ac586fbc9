"""Shadow challengers judged on the hours they would have served (docs/promotion.md, "Shadows").

Every market hour the monitoring run takes each version a pair serves in shadow (alias ``shadow-v{N}``: set by
the gate on a sane version it did not promote, or by an admin) and scores its recorded forecasts against the
served ones of the same resolved targets with the gate's own test (:func:`mur.registry.gate.decide_live`:
pinball loss per horizon, Diebold-Mariano, coverage band, point guard, ``MUR_SHADOW_MIN_RESOLVED`` targets
per horizon). The scores go on the version (tag ``live_scores``) and into the report; a shadow significantly
better than what was served takes the champion alias (a recorded move, action ``live``); a shadow
``MUR_SHADOW_TTL_HOURS`` market hours past its data window is retired.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from mur.db.forecasts import shadow_pairs
from mur.db.pool import Database
from mur.monitoring.report import ShadowRow
from mur.registry.aliases import keep_shadows, move_champion
from mur.registry.gate import HorizonComparison, compare_horizon, decide_live
from mur.registry.names import CHAMPION, model_name, shadow_versions
from mur.settings import Settings
from mur.timeutil import iso, parse_time

log = logging.getLogger(__name__)


def live_scores(rows: list[dict[str, Any]], *, point_margin: float) -> list[HorizonComparison]:
    """Per horizon, the shadow's forecasts vs the served ones of the same resolved targets
    (:func:`mur.db.forecasts.shadow_pairs` rows; levels ``(1 - level) / 2``, 0.5, ``(1 + level) / 2``)."""
    out = []
    for hours in sorted({int(r["hours"]) for r in rows}):
        mine = [r for r in rows if int(r["hours"]) == hours]
        if len(mine) < 3:
            continue
        level = float(mine[0]["level"])

        def q(side: str, rows: list[dict[str, Any]] = mine) -> np.ndarray:
            return np.array([[r[f"{side}_lower"], r[f"{side}_median"], r[f"{side}_upper"]] for r in rows])

        y, last = (np.array([r[k] for r in mine], dtype=np.float64) for k in ("y", "last_close"))
        levels = ((1 - level) / 2, 0.5, (1 + level) / 2)
        out.append(compare_horizon(q("s"), q("c"), y, last, levels, hours, point_margin=point_margin))
    return out


def review_shadows(
    settings: Settings, db: Database, client: Any, pair: str, hour: datetime
) -> list[ShadowRow]:
    """Score, promote or retire ``pair``'s shadows at market ``hour``; one row per shadow for the report."""
    gate = settings.registry
    name = model_name(pair, gate.registry_prefix)
    aliases = {a: int(v) for a, v in (client.get_registered_model(name).aliases or {}).items()}
    champion, rows = aliases.get(CHAMPION), []
    for version in shadow_versions(aliases):
        tags = dict(client.get_model_version(name, str(version)).tags or {})
        trained_until = parse_time(tags.get("as_of") or tags.get("data_window_end"))
        row = ShadowRow(version=version, gate_reason=tags.get("gate_reason"))
        if version == champion or (
            trained_until is not None and hour - trained_until >= timedelta(hours=gate.shadow_ttl_hours)
        ):
            keep_shadows(client, name, keep=gate.shadow_max_per_pair, drop=version)
            rows.append(row.model_copy(update={"status": "retired", "live_reason": "champion or expired"}))
            continue
        scores = live_scores(
            shadow_pairs(db, pair=pair, version=version, until=hour), point_margin=gate.promotion_point_margin
        )
        decision = decide_live(
            scores,
            champion_version=champion,
            alpha=gate.promotion_alpha,
            min_resolved=gate.shadow_min_resolved,
            coverage_tolerance=gate.promotion_coverage_tolerance,
            point_margin=gate.promotion_point_margin,
        )
        found: dict[str, Any] = {"as_of": iso(hour), "rule": decision.rule, "reason": decision.reason}
        found["horizons"] = decision.scores_json()
        client.set_model_version_tag(name, str(version), "live_scores", json.dumps(found))
        row = row.model_copy(update={"live_reason": decision.reason, "horizons": found["horizons"]})
        if decision.promoted:
            move_champion(
                settings,
                client,
                pair=pair,
                version=version,
                action="live",
                actor="monitoring",
                reason=decision.reason,
                scores={"gate_rule": "live", "horizons": decision.scores_json()},
                market_time=hour,
            )
            keep_shadows(client, name, keep=gate.shadow_max_per_pair, drop=version)
            log.info("%s v%s promoted on live evidence: %s", pair, version, decision.reason)
            champion, row = version, row.model_copy(update={"status": "promoted"})
        rows.append(row)
    return rows
