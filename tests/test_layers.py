"""converge's packages import one another in one direction and through public modules only: no
import cycle between two packages (``converge.agents``, ``converge.orchestration``, …,
``converge.errors``), and no package imports another package's ``_private`` module.

Imports are read from the source with ``ast``: every ``import`` statement counts, at module
level, inside a function or under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import converge

SRC = Path(converge.__file__).resolve().parent.parent

# Cross-package private imports still to be removed, each with what removes it. An entry that no
# longer occurs fails the test too, so that it is deleted once the import is gone.
PENDING: dict[tuple[str, str], str] = {}
"""Known violations being worked on (none)."""


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / "converge").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(module: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The converge modules that ``module`` imports (a ``from m import name`` imports ``m``,
    and ``m.name`` too when that is a module)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, *([base] if base else [])])
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        yield from (target for target in targets if target in modules)


def _package(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def _cross_package_imports() -> list[tuple[str, str]]:
    modules = _modules()
    return sorted(
        {
            (module, target)
            for module, path in modules.items()
            for target in _imports(module, path, modules)
            if _package(module) and _package(target) and _package(module) != _package(target)
        }
    )


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The groups of packages that import one another (Tarjan's strongly connected
    components with more than one package)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def test_no_import_cycle_between_packages() -> None:
    imports = _cross_package_imports()
    edges: dict[str, set[str]] = {}
    for module, target in imports:
        edges.setdefault(_package(module), set()).add(_package(target))
    problems = []
    for group in _cycles(edges):
        problems.append(f"packages {', '.join(group)} import one another:")
        problems += [
            f"  {module} -> {target}"
            for module, target in imports
            if _package(module) in group and _package(target) in group
        ]
    assert not problems, "\n".join(problems)


def test_no_package_imports_another_packages_private_module() -> None:
    private = {
        (module, target)
        for module, target in _cross_package_imports()
        if any(part.startswith("_") for part in target.split(".")[2:])
    }
    added = sorted(private - set(PENDING))
    assert not added, "private modules imported across packages:\n" + "\n".join(
        f"  {module} -> {target}" for module, target in added
    )
    gone = sorted(set(PENDING) - private)
    assert not gone, "no longer imported, delete from PENDING:\n" + "\n".join(
        f"  {module} -> {target}" for module, target in gone
    )


def test_importing_agents_does_not_import_orchestration() -> None:
    # converge.agents.GoalPlanner (now converge.orchestration's) is resolved on first use.
    code = (
        "import sys, converge.agents, converge.agents.planner, converge.agents.roles\n"
        "print(sorted(m for m in sys.modules if m.startswith('converge.orchestration')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
