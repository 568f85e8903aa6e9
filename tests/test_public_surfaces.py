"""Each package says what it exports in one place: where names load on first use, the
``__all__`` list, the ``_EXPORTS`` table that loads them and the ``TYPE_CHECKING`` imports that
type-checkers read all name the same things from the same modules; and transition tables stay
private (an enum and its ``check_*`` function are the public face of a state machine)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
INITS = sorted((SRC / "converge").rglob("__init__.py"))


def _module(path: Path) -> str:
    return ".".join(path.relative_to(SRC).parent.parts)


def _type_checking_imports(tree: ast.Module) -> dict[str, str]:
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for stmt in node.body:
                if isinstance(stmt, ast.ImportFrom) and stmt.module:
                    for alias in stmt.names:
                        found[alias.asname or alias.name] = stmt.module
    return found


def _lazy(path: Path) -> bool:
    return "_EXPORTS" in path.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", [p for p in INITS if _lazy(p)], ids=_module)
def test_a_lazy_package_names_each_export_once_the_same_way(path: Path) -> None:
    module = importlib.import_module(_module(path))
    exports: dict[str, str] = module._EXPORTS
    assert set(module.__all__) == set(exports), "__all__ and _EXPORTS differ"
    typed = _type_checking_imports(ast.parse(path.read_text(encoding="utf-8")))
    assert typed == exports, "the TYPE_CHECKING imports and _EXPORTS differ"
    for name, source in exports.items():
        assert getattr(importlib.import_module(source), name) is getattr(module, name), name


@pytest.mark.parametrize("path", INITS, ids=_module)
def test_no_package_exports_a_transition_table(path: Path) -> None:
    module = importlib.import_module(_module(path))
    tables = [name for name in module.__all__ if name.endswith("TRANSITIONS")]
    assert tables == [], f"{_module(path)} exports {tables}: expose the enum and check_*"


def test_no_public_module_exports_a_transition_table() -> None:
    for path in sorted((SRC / "converge").rglob("*.py")):
        if path.name.startswith("_") and path.name != "__init__.py":
            continue
        name = _module(path) if path.name == "__init__.py" else _module(path) + "." + path.stem
        exported = getattr(importlib.import_module(name), "__all__", [])
        assert not [n for n in exported if n.endswith("TRANSITIONS")], name
