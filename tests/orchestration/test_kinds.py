"""Node kinds: every built-in kind is a module of ``orchestration/kinds/`` declaring a ``Kind``,
registered from one table (importing a module registers nothing), and a kind a user registers
replaces the built-in one of the same name whenever it is registered."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

from converge.orchestration import kinds
from converge.orchestration.kinds import Kind, kind_info, kind_names

SRC = Path(kinds.__file__).resolve().parents[2]

BUILT_IN = {
    "python",
    "subgraph",
    "tender",
    "team",
    "board",
    "consensus",
    "llm",
    "worker",
    "router",
    "critic",
    "supervisor",
    "planner",
    "assign",
    "unknown_route",
}


def _declared() -> list[Kind]:
    """Every ``Kind`` a module of ``orchestration/kinds/`` declares at its top level."""
    modules = pkgutil.iter_modules(kinds.__path__, "converge.orchestration.kinds.")
    return [
        value
        for module in modules
        for value in vars(importlib.import_module(module.name)).values()
        if isinstance(value, Kind)
    ]


def test_every_declared_kind_is_in_the_table_and_nothing_else() -> None:
    declared = _declared()
    assert {kind.name for kind in declared} == BUILT_IN
    assert len(declared) == len(BUILT_IN), "two modules declare a kind of the same name"
    for kind in declared:
        assert kind_info(kind.name) is kind.info, f"{kind.name} is declared but not registered"
    assert BUILT_IN <= set(kind_names())


def test_no_module_registers_a_kind_when_it_is_imported() -> None:
    calls = []
    for path in sorted((SRC / "converge").rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            call = node.value if isinstance(node, ast.Expr) else None
            if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "register_kind":
                calls.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert calls == []


def test_a_kind_missing_a_declared_required_option_is_refused() -> None:
    with pytest.raises(ValueError, match="not declared"):
        Kind("k", lambda options, ctx: None, options={"a": "A."}, required=("b",))


@pytest.mark.parametrize("first_use", ["before", "after"])
def test_a_registered_kind_replaces_the_built_in_one(first_use: str) -> None:
    # A fresh interpreter: the table is read on first use, once per process.
    code = (
        "from pathlib import Path\n"
        "from converge.orchestration.kinds import KindContext, kind_info, register_kind, "
        "read_kind\n"
        f"if {first_use == 'after'}: kind_info('team')\n"
        "register_kind('team', lambda options, ctx: 'mine', options={'x': 'X.'}, doc='Mine.')\n"
        "ctx = KindContext('a', '<test>', 1, Path.cwd(), {})\n"
        "print(read_kind('team', {'kind': 'team'}, ctx), kind_info('team').doc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["mine", "Mine."]


def test_reading_a_graph_without_kinds_imports_none_of_them() -> None:
    code = (
        "import sys\n"
        "from converge.orchestration import loads_graph\n"
        "loads_graph('name: g\\nagents: {a: \"json:dumps\"}\\nnodes: [{id: a, agent: a}]\\n')\n"
        "print(sorted(m for m in sys.modules if m.startswith(('converge.orchestration.kinds.', "
        "'converge.coordination', 'converge.agents', 'converge.core.identity'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
