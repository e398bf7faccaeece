"""The layering of flock_cli: no import cycle between its modules, and no runtime module of core/
that reaches back to the Flock.

Imports are read from the source with ``ast``, every one of them: at module level, inside
functions (lazy imports), and under ``if TYPE_CHECKING:`` (a cycle of type-only imports still ties
the modules together for whoever reads or changes them). ``from package import name`` counts as an
import of the submodule ``package.name`` when there is one, else of the package. Importing a
submodule runs its packages' ``__init__`` too, but that is not counted: a package's ``__init__``
gathers names from below it by design (see docs/architecture.md, "Layering").
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import flock_cli

PACKAGE = Path(flock_cli.__file__).resolve().parent


def module_names(root: Path) -> dict[str, Path]:
    """Every module under the package ``root``, by dotted name (a package by its own name)."""
    modules: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: Mapping[str, Path]) -> set[str]:
    """The modules of the package that module ``name`` (at ``path``) imports, anywhere in it."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's own package, one level up per extra dot
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
    return {target for target in found if target in modules and target != name}


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    modules = module_names(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def describe(component: list[str], graph: Mapping[str, Iterable[str]]) -> str:
    members = set(component)
    arrows = [f"    {a} -> {b}" for a in component for b in sorted(graph[a]) if b in members]
    return f"  {', '.join(component)}:\n" + "\n".join(arrows)


def test_no_import_cycle_between_modules_of_flock_cli() -> None:
    graph = import_graph(PACKAGE)
    found = cycles(graph)
    assert not found, "import cycles between modules of flock_cli (file -> file it imports):\n" + "\n".join(
        describe(component, graph) for component in found
    )


def test_no_module_of_core_imports_the_orchestrator() -> None:
    """The collaborators get the Runtime and each other's narrow protocols, never the Flock."""
    graph = import_graph(PACKAGE)
    reaching_back = sorted(
        name
        for name, targets in graph.items()
        if name.startswith("flock_cli.core.") and "flock_cli.core.orchestrator" in targets
    )
    assert reaching_back == [], f"these modules of core/ import core/orchestrator.py: {reaching_back}"


def test_the_graph_sees_type_checking_lazy_and_submodule_imports() -> None:
    """The checks above read what they should: without these arrows they could not fail."""
    graph = import_graph(PACKAGE)
    assert "flock_cli.core.runtime" in graph["flock_cli.core.runner"]  # under TYPE_CHECKING
    assert "flock_cli.core.lifecycle" in graph["flock_cli.core.runner"]  # from ... import a module
    assert "flock_cli.recipe.compiler" in graph["flock_cli.recipe.loader"]  # inside a method
    assert "flock_cli.core.orchestrator" in graph["flock_cli"]  # a package's __init__ is a module


def test_a_type_checking_cycle_is_found(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("")
    (root / "sub" / "a.py").write_text("from pkg.sub.b import B\n")
    (root / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n"
    )
    (root / "c.py").write_text("def f():\n    from .sub import a\n")
    graph = import_graph(root)
    assert graph["pkg.sub.b"] == {"pkg.sub.a"}
    assert graph["pkg.c"] == {"pkg.sub.a"}
    assert cycles(graph) == [["pkg.sub.a", "pkg.sub.b"]]
