"""Print converge's package tree, each module with its one-line summary.

    .venv/bin/python docs/gen_layout.py            # print the tree
    .venv/bin/python docs/gen_layout.py --write    # update docs/architecture.md in place
    .venv/bin/python docs/gen_layout.py --check    # exit 1 if architecture.md's tree is stale

The summary of a module is the first line of its docstring, read with ``ast`` (nothing is
imported). A package's summary is its ``__init__.py``'s, shown on the package's own line.
The tree sits in ``docs/architecture.md`` between ``BEGIN`` and ``END`` below.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "converge"
TARGET = Path(__file__).resolve().parent / "architecture.md"
BEGIN = "<!-- layout:begin (docs/gen_layout.py --write) -->"
END = "<!-- layout:end -->"
MAX_SUMMARY = 72
"""The longest first line a module docstring may have."""


def docstring(path: Path) -> str | None:
    """The module docstring of ``path``, as written (not dedented), or None."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return ast.get_docstring(tree, clean=False)


def summary_problem(path: Path) -> str | None:
    """What is wrong with the summary line of ``path``'s docstring, or None."""
    doc = docstring(path)
    if not doc or not doc.strip():
        return "has no module docstring"
    lines = doc.splitlines()
    first = lines[0]
    if not first.strip() or first != first.strip():
        return "docstring does not start with its summary on the first line"
    if len(first) > MAX_SUMMARY:
        return f"summary line is {len(first)} characters, more than {MAX_SUMMARY}"
    if len(lines) > 1 and lines[1].strip():
        return "summary runs past its first line (a blank line must follow it)"
    if not first.endswith("."):
        return "summary line does not end with a period"
    return None


def problems() -> list[str]:
    """Every module of ``src/converge`` whose docstring lacks a one-line summary."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        problem = summary_problem(path)
        if problem:
            found.append(f"{path.relative_to(ROOT)}: {problem}")
    return found


def _summary(path: Path) -> str:
    doc = docstring(path)
    first = doc.splitlines()[0].strip() if doc and doc.strip() else "(no docstring)"
    return first.replace("``", "`")


def _rows(directory: Path, prefix: str) -> list[tuple[str, str]]:
    modules = sorted(p for p in directory.glob("*.py") if p.name != "__init__.py")
    packages = sorted(p for p in directory.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    entries: list[Path] = [*modules, *packages]
    rows: list[tuple[str, str]] = []
    for i, entry in enumerate(entries):
        last = i == len(entries) - 1
        branch = "└── " if last else "├── "
        if entry.is_dir():
            rows.append((f"{prefix}{branch}{entry.name}/", _summary(entry / "__init__.py")))
            rows.extend(_rows(entry, prefix + ("    " if last else "│   ")))
        else:
            rows.append((f"{prefix}{branch}{entry.name}", _summary(entry)))
    return rows


def render() -> str:
    """The tree as the Markdown block that sits between the markers."""
    rows = [("converge/", _summary(PACKAGE / "__init__.py")), *_rows(PACKAGE, "")]
    width = max(len(name) for name, _ in rows) + 2
    lines = [f"{name.ljust(width)}{text}".rstrip() for name, text in rows]
    return "```\n" + "\n".join(lines) + "\n```"


def embedded(text: str) -> str:
    """What ``text`` (architecture.md) holds between the markers."""
    start = text.index(BEGIN) + len(BEGIN)
    return text[start : text.index(END, start)].strip("\n")


def replaced(text: str, block: str) -> str:
    """``text`` with ``block`` between the markers."""
    start = text.index(BEGIN) + len(BEGIN)
    end = text.index(END, start)
    return f"{text[:start]}\n{block}\n{text[end:]}"


def main(argv: list[str]) -> int:
    block = render()
    if "--write" in argv or "--check" in argv:
        text = TARGET.read_text(encoding="utf-8")
        if BEGIN not in text or END not in text:
            sys.stderr.write(f"{TARGET}: no {BEGIN} ... {END} markers\n")
            return 1
        if "--check" in argv:
            if embedded(text) != block:
                sys.stderr.write(
                    f"{TARGET}: the layout tree is out of date: "
                    "run .venv/bin/python docs/gen_layout.py --write\n"
                )
                return 1
            sys.stdout.write(f"{TARGET}: the layout tree is up to date\n")
            return 0
        TARGET.write_text(replaced(text, block), encoding="utf-8")
        sys.stdout.write(f"wrote the layout tree into {TARGET}\n")
        return 0
    sys.stdout.write(block + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
