"""A name means one thing in converge: a class or a type alias (``Outcome``, ``Plan``, ``Step``…)
is defined by one module, and the others import it. Read from the source with ``ast``.

A module-level name that only re-binds another (``Tally = AnswerTally``, an old name kept) is no
second definition; names starting with ``_`` are each module's own.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import converge

SRC = Path(converge.__file__).resolve().parent


def _definitions(tree: ast.Module) -> list[str]:
    """The public classes and type aliases ``tree`` defines at module level."""
    names = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            if isinstance(node.target, ast.Name):
                names.append(node.target.id)
        elif isinstance(node, ast.Assign) and not isinstance(node.value, ast.Name | ast.Attribute):
            # (``Old = New`` is another name for an object defined elsewhere.)
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
    # CapWords only: constants (``MAX_DEPTH``) and functions are not types.
    return [n for n in names if n[0].isupper() and not n.isupper() and not n.startswith("_")]


def _defined_twice(sources: dict[str, str]) -> dict[str, list[str]]:
    where: dict[str, list[str]] = defaultdict(list)
    for module, text in sorted(sources.items()):
        for name in _definitions(ast.parse(text)):
            where[name].append(module)
    return {name: modules for name, modules in where.items() if len(modules) > 1}


def test_each_type_name_is_defined_once() -> None:
    sources = {
        str(path.relative_to(SRC.parent)): path.read_text(encoding="utf-8")
        for path in sorted(SRC.rglob("*.py"))
    }
    assert _defined_twice(sources) == {}


def test_a_second_definition_is_found_and_an_alias_is_not() -> None:
    assert _defined_twice(
        {
            "a.py": "class Outcome:\n    pass\nStep = tuple[int, str]\nOld = Outcome\n",
            "b.py": "import enum\nclass Outcome(enum.Enum):\n    A = 1\nOld = a.Outcome\n",
            "c.py": "Step: TypeAlias = int\nMAX = 3\n_Private = int\ndef Outcome(): ...\n",
            "d.py": "_Private = str\nMAX = 4\n",
        }
    ) == {"Outcome": ["a.py", "b.py"], "Step": ["a.py", "c.py"]}
