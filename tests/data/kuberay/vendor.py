"""Regenerate crd-schemas.yaml from a clone of ray-project/kuberay (what tests/unit/test_kuberay.py validates).

    git clone https://github.com/ray-project/kuberay /tmp/kuberay
    python tests/data/kuberay/vendor.py /tmp/kuberay v1.7.0

Writes the ``v1`` ``openAPIV3Schema`` of the RayCluster and RayService CRDs
(``ray-operator/config/crd/bases/ray.io_{rayclusters,rayservices}.yaml`` at the given tag) unchanged: large
subtrees that occur more than once (a RayService's ``rayClusterConfig`` is the RayCluster's ``spec``) are
written once, as YAML anchors, so ``yaml.safe_load`` of the file gives the CRDs' schemas exactly; the script
checks that before writing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

CRDS = {"RayCluster": "rayclusters", "RayService": "rayservices"}
OUT = Path(__file__).resolve().parent / "crd-schemas.yaml"
SHARED_MIN_CHARS = 2000  # subtrees at least this large (as JSON) are written once


def git(repo: str, *args: str) -> str:
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True, text=True).stdout


def v1_schema(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def share(node: Any, seen: dict[str, Any]) -> Any:
    """The same tree, equal large subtrees replaced by one object (PyYAML writes it as an anchor)."""
    if isinstance(node, list):
        return [share(item, seen) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: share(value, seen) for key, value in node.items()}
    text = json.dumps(node, sort_keys=True)
    return seen.setdefault(text, node) if len(text) >= SHARED_MIN_CHARS else node


def main(repo: str, ref: str) -> None:
    commit = git(repo, "rev-parse", f"{ref}^{{commit}}").strip()
    schemas: dict[str, Any] = {}
    header = [
        "# The v1 openAPIV3Schema of KubeRay's RayCluster and RayService CRDs, unchanged (repeated subtrees",
        "# written once as YAML anchors: yaml.safe_load gives the exact schemas). Regenerate with vendor.py.",
        f"# Source: github.com/ray-project/kuberay {ref} (commit {commit})",
    ]
    for kind, plural in CRDS.items():
        path = f"ray-operator/config/crd/bases/ray.io_{plural}.yaml"
        blob = git(repo, "rev-parse", f"{commit}:{path}").strip()
        schemas[kind] = v1_schema(yaml.safe_load(git(repo, "show", f"{commit}:{path}")))
        header.append(f"#   {kind}: {path} (blob {blob})")
    text = "\n".join(header) + "\n" + yaml.safe_dump(share(schemas, {}), sort_keys=False, width=120)
    assert yaml.safe_load(text) == schemas, "the written file must load as the CRDs' schemas"
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT} ({len(text)} characters)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
