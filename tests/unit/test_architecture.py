"""The layers hold: no import cycles, the core imports neither the entry points nor the local platform
(``devstack``, a top-level package beside ``mur``), the platform imports no entry point and no product entry
point imports the platform (the CLI reaches it through one module, ``mur.commands.local``), no module over 500
lines (docs/architecture.md).

Reads the source with :mod:`ast` and imports none of it. Every import counts, also those inside functions and
``importlib.import_module("literal")``: a lazy import still makes the dependency. An import names the
deepest module it reaches (``from mur.db import users`` -> ``mur.db.users``, ``from mur.db import Database``
-> ``mur.db``).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ROOTS = ("mur", "devstack", "serve_app", "dash_app", "dags", "ray_jobs")
#: What the product's images run: they may import the core, never the local platform.
PRODUCT_ENTRY_POINTS = ("serve_app", "dash_app", "dags", "ray_jobs")
#: Thin processes on top of the core: they may import the core, the core never imports them. The CLI also
#: drives the local platform (``mur up``, ``mur services``), through :data:`SEAM` only.
ENTRY_POINTS = (*PRODUCT_ENTRY_POINTS, "mur.cli", "mur.commands")
#: The local platform (supervisor, mur up/down, local S3 and Airflow, replay exchange): its own distribution
#: beside the core (devstack/pyproject.toml), not in the product's wheel or images.
DEVSTACK = "devstack"
#: The one module of ``mur`` that imports it, when a local-stack command asks (``mur`` runs without it).
SEAM = "mur.commands.local"
MAX_LINES = 500
WATCH_LINES = 400  # listed in the failure message: the next ones to split


def within(module: str, package: str) -> bool:
    """``module`` is ``package`` or inside it."""
    return module == package or module.startswith(package + ".")


@cache
def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under the roots (a package is its ``__init__``)."""
    out: dict[str, Path] = {}
    for root in ROOTS:
        for path in sorted((PROJECT_ROOT / root).rglob("*.py")):
            parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
            if "__pycache__" in parts:
                continue
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported_names(module: str, path: Path) -> Iterator[str]:
    """Every dotted name ``module`` imports (relative imports made absolute)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name == "import_module" and isinstance(node.args[0].value, str):
                yield node.args[0].value


@cache
def import_graph() -> dict[str, frozenset[str]]:
    """Module -> the project modules it imports (third-party imports left out)."""
    files = modules()

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, frozenset[str]] = {}
    for module, path in files.items():
        targets = {resolve(name) for name in imported_names(module, path)}
        graph[module] = frozenset(t for t in targets if t is not None and t != module)
    return graph


def strongly_connected(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    advanced = True
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def without_package_reexports(graph: dict[str, frozenset[str]]) -> dict[str, frozenset[str]]:
    """The graph less the edges from a package to its own submodules.

    A package ``__init__`` re-exporting its submodules, which import the package back, is no cycle; two
    submodules importing each other still are.
    """
    return {
        module: frozenset(t for t in imports if not within(t, module)) for module, imports in graph.items()
    }


def is_entry_point(module: str) -> bool:
    return any(within(module, entry) for entry in ENTRY_POINTS)


def is_core(module: str) -> bool:
    return within(module, "mur") and not is_entry_point(module)


def edges(source: Callable[[str], bool], target: Callable[[str], bool]) -> list[str]:
    """``a -> b`` for every import from a module matching ``source`` to one matching ``target``."""
    return sorted(
        f"{module} -> {imported}"
        for module, imports in import_graph().items()
        if source(module)
        for imported in imports
        if target(imported)
    )


def test_the_graph_sees_the_whole_project() -> None:
    graph = import_graph()
    for module in (
        "mur",
        "mur.settings",
        "mur.cli",
        "serve_app",
        "dash_app",
        "dags.mur_training",
        "ray_jobs",
    ):
        assert module in graph, f"{module} not found under {PROJECT_ROOT}"
    assert any(within(m, "mur.commands") for m in graph["mur.cli"]), "the CLI's imports were not found"


def test_no_import_cycles() -> None:
    cycles = strongly_connected(without_package_reexports(import_graph()))
    assert not cycles, "import cycles (each line: modules importing each other, directly or in a ring):\n" + (
        "\n".join("  " + " <-> ".join(c) for c in cycles)
    )


def test_the_core_imports_no_entry_point_and_not_the_devstack() -> None:
    found = edges(is_core, lambda m: is_entry_point(m) or within(m, DEVSTACK))
    assert not found, (
        "the core (mur.* except mur.cli, mur.commands) imports an entry point "
        f"({', '.join(ENTRY_POINTS)}) or {DEVSTACK}; move the shared code into the core instead:\n"
        + "\n".join(f"  {edge}" for edge in found)
    )


def test_the_devstack_imports_no_entry_point() -> None:
    found = edges(lambda m: within(m, DEVSTACK), is_entry_point)
    assert not found, (
        f"{DEVSTACK} imports an entry point (run it as a process, e.g. `python -m serve_app.keeper`, "
        "or move the shared code into the core):\n" + "\n".join(f"  {edge}" for edge in found)
    )
    assert any(within(m, "mur") for m in import_graph()["devstack.stack"]), (
        "devstack's imports were not found"
    )


def test_no_product_entry_point_imports_the_devstack() -> None:
    """The images run serve_app, dash_app, the DAGs and the Ray jobs without ``devstack`` installed."""
    found = edges(lambda m: any(within(m, e) for e in PRODUCT_ENTRY_POINTS), lambda m: within(m, DEVSTACK))
    assert not found, (
        f"a product entry point imports {DEVSTACK} (the images do not ship it; move the shared code into "
        "the core):\n" + "\n".join(f"  {edge}" for edge in found)
    )


def test_the_cli_reaches_the_devstack_through_one_seam_that_imports_it_lazily() -> None:
    """``mur`` without ``devstack`` installed still runs its other commands, and its local-stack commands
    say how to install it: one module imports it (:data:`SEAM`), never at module level."""
    found = edges(lambda m: within(m, "mur") and m != SEAM, lambda m: within(m, DEVSTACK))
    for node in ast.parse(modules()[SEAM].read_text()).body:  # module level (not under TYPE_CHECKING)
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        found += [f"{SEAM}: import {n} at module level" for n in names if within(n, DEVSTACK)]
    assert not found, (
        f"mur imports the local platform other than through {SEAM} (from {SEAM} import stack, inside the "
        "command), or the seam imports it at module level:\n" + "\n".join(f"  {line}" for line in found)
    )
    assert any(within(m, DEVSTACK) for m in import_graph()[SEAM]), "the seam's imports were not found"


def test_no_module_over_500_lines() -> None:
    sizes = sorted(
        ((sum(1 for _ in path.open()), path.relative_to(PROJECT_ROOT)) for path in modules().values()),
        reverse=True,
    )
    over = [f"  {path} ({n} lines)" for n, path in sizes if n > MAX_LINES]
    watch = [f"  {path} ({n} lines)" for n, path in sizes if WATCH_LINES < n <= MAX_LINES]
    assert not over, (
        f"modules over {MAX_LINES} lines (split them by what they hold):\n"
        + "\n".join(over)
        + (f"\nover {WATCH_LINES} lines (next in line):\n" + "\n".join(watch) if watch else "")
    )


def test_the_parser_sees_lazy_imports_and_only_forgives_package_reexports(tmp_path: Path) -> None:
    """The checks above are only as good as the parser: a function-level import, relative imports, strings."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    sources = {
        "pkg": ("__init__.py", "from .a import f\nfrom . import b\n"),
        "pkg.a": ("a.py", "import pkg\n\ndef f():\n    from pkg.b import g\n    return g\n"),
        "pkg.b": ("b.py", "import importlib\n\ng = importlib.import_module('pkg.c')\n"),
        "pkg.c": ("c.py", "from .a import f\n"),
    }
    graph = {}
    for name, (filename, text) in sources.items():
        (pkg / filename).write_text(text)
        found = imported_names(name, pkg / filename)
        graph[name] = frozenset(t for t in found if t in sources and t != name)
    assert graph == {
        "pkg": {"pkg.a", "pkg.b"},
        "pkg.a": {"pkg", "pkg.b"},
        "pkg.b": {"pkg.c"},
        "pkg.c": {"pkg.a"},
    }
    # pkg <-> pkg.a alone would be forgiven; pkg.a -> pkg.b -> pkg.c -> pkg.a is a cycle all the same
    assert strongly_connected(without_package_reexports(graph)) == [["pkg.a", "pkg.b", "pkg.c"]]
    assert strongly_connected(without_package_reexports({**graph, "pkg.c": frozenset()})) == []
