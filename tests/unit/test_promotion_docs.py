"""docs/promotion.md states the gate's rules in the order mur/registry/gate.py applies them, and its worked
example is what the gate decides."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from mur.registry import gate
from mur.registry.names import CHAMPION

DOC = Path(__file__).resolve().parents[2] / "docs" / "promotion.md"
RULE_ITEM = re.compile(r"^\s*\d+\.\s+\*\*([^*]+?)\.?\*\*", re.MULTILINE)


def section(text: str, title: str) -> str:
    start = text.index(title)
    end = text.find("\n## ", start + len(title))
    return text[start : end if end >= 0 else None]


def test_the_rules_are_listed_in_the_gates_order() -> None:
    documented = RULE_ITEM.findall(section(DOC.read_text(), "## The rules, in order"))
    applied = RULE_ITEM.findall(gate.__doc__ or "")
    assert applied[:2] == ["Backfill rule", "Persistence rule"]  # the order gate.decide checks them in
    assert documented == applied


def number(cell: str) -> float:
    return float(cell.replace("−", "-").replace("+", ""))


def test_the_worked_example_is_what_the_gate_decides() -> None:
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in section(DOC.read_text(), "## A worked example").splitlines()
        if re.match(r"^\|\s*v\d+\s*\|", line)
    ]
    assert len(rows) >= 5
    champion: gate.Evidence | None = None
    for version, end, skill, p_worse, coverage, pinball, p_pair, alias, rule in rows:
        evidence = gate.Evidence(
            window_end=datetime.strptime(end, "%Y-%m-%dT%HZ").replace(tzinfo=UTC),
            skill=number(skill),
            skill_se=0.0005,
            dm_p_worse=number(p_worse),
            version=int(version[1:]),
            coverage=(gate.Coverage(1, 876, number(coverage), 0.9),),
        )
        same = []
        if pinball != "–":
            worse, better = (number(p) for p in p_pair.split("/"))
            same = [
                gate.HorizonComparison(
                    1, 876, 0.9, number(coverage), 0.9, 1 - number(pinball), 1.0, worse, better, 0.0, 1.0
                )
            ]
        decision = gate.decide(evidence, champion, alpha=0.05, skill_floor=-0.01, same_targets=same)
        assert decision.rule == rule.split(":")[0].split(" ")[0], (version, decision.reason)
        assert decision.promoted == (alias == CHAMPION), version
        if decision.promoted:
            champion = evidence
    assert any(r[-1].startswith("backfill") and number(r[3]) < 0.05 for r in rows), "no backfill-first row"
