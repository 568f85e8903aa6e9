"""The layout tree in docs/architecture.md is the one ``docs/gen_layout.py`` draws from the
code, and every module says what it is in its docstring's first line."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _gen_layout() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_layout", DOCS / "gen_layout.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_layout", module)
    spec.loader.exec_module(module)
    return module


gen_layout = _gen_layout()


def test_every_module_has_a_one_line_summary() -> None:
    problems = gen_layout.problems()
    assert not problems, (
        f"module docstrings must start with a one-line summary of at most "
        f"{gen_layout.MAX_SUMMARY} characters, then a blank line:\n  " + "\n  ".join(problems)
    )


def test_the_tree_in_architecture_md_is_the_generated_one() -> None:
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    assert gen_layout.BEGIN in text and gen_layout.END in text
    assert gen_layout.embedded(text) == gen_layout.render(), (
        "the layout tree in docs/architecture.md is out of date: "
        "run .venv/bin/python docs/gen_layout.py --write"
    )


def test_the_tree_lists_every_module_and_package_once() -> None:
    package = gen_layout.PACKAGE
    expected = sorted(
        f"{path.parent.name}/" if path.name == "__init__.py" else path.name
        for path in package.rglob("*.py")
        if path != package / "__init__.py"
    )
    listed = sorted(
        line.split("── ", 1)[1].split()[0]
        for line in gen_layout.render().splitlines()
        if "── " in line
    )
    assert listed == expected


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("x = 1\n", "has no module docstring"),
        ('"""\nSummary on the second line.\n"""\n', "does not start with its summary"),
        (f'"""{"a" * 72}."""\n', "73 characters"),
        ('"""A summary that goes on\nto a second line.\n"""\n', "runs past its first line"),
        ('"""No period"""\n', "does not end with a period"),
    ],
)
def test_the_summary_check_names_what_is_wrong(tmp_path: Path, source: str, problem: str) -> None:
    path = tmp_path / "m.py"
    path.write_text(source, encoding="utf-8")
    found = gen_layout.summary_problem(path)
    assert found is not None and problem in found


def test_a_good_summary_passes(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text('"""What this module holds.\n\nMore about it.\n"""\n', encoding="utf-8")
    assert gen_layout.summary_problem(path) is None


def test_write_puts_the_tree_between_the_markers() -> None:
    text = f"# t\n\n{gen_layout.BEGIN}\nold\n{gen_layout.END}\n\nrest\n"
    new = gen_layout.replaced(text, "```\ntree\n```")
    assert gen_layout.embedded(new) == "```\ntree\n```"
    assert new.startswith("# t\n\n") and new.endswith(f"{gen_layout.END}\n\nrest\n")
