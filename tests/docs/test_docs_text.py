"""The prose of the README and the guides stays true to the code and to its readers.

- Every command names the programs of ``.venv`` (``.venv/bin/converge``), or the file says to
  activate it: a bare ``python examples/…`` fails with ``No module named 'converge'``.
- A call written in the prose (`` `ctx.report_usage(tokens_in=…)` ``) names keywords the
  public callable of that name takes: the code blocks run (``test_code_blocks.py``), the
  prose does not, and it once said ``report_usage(tokens=…)``.
- Neither the docs nor ``--help`` speak of the project's history (the seeds' sections, issue
  numbers) or send readers to private modules (``see _expr``).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command

import converge
from converge.cli import app
from tests.docs.code_blocks import ROOT, SHELL, blocks_of, doc_name, iter_docs, transcript

DOCS = list(iter_docs())
EXAMPLE_READMES = sorted((ROOT / "examples").glob("*/README.md"))

# -- commands ------------------------------------------------------------------------------------

_BARE = frozenset({"converge", "python", "python3", "pip", "pip3", "pytest", "ruff", "mypy"})
_PREFIXES = frozenset({"env", "time", "timeout", "nohup", "exec"})


def _command_words(command: str) -> Iterator[str]:
    """The program each part of a shell command line runs (after env and timeout prefixes)."""
    for part in re.split(r"&&|\|\||[;|&]", command.split(" #")[0]):
        words = part.split()
        while words and (
            "=" in words[0] or words[0] in _PREFIXES or words[0].startswith("-") or _number(words)
        ):
            words.pop(0)
        if words:
            yield " ".join(words[:3])


def _number(words: list[str]) -> bool:
    return re.fullmatch(r"\d+(\.\d+)?[smh]?", words[0]) is not None


def _bare(invocation: str) -> bool:
    first = invocation.split()[0]
    return first in _BARE and not invocation.startswith("python3 -m venv")


def _spans(path: Path) -> Iterator[tuple[int, str]]:
    """The inline code spans of the prose (outside fenced blocks): (line, text)."""
    fenced = {
        line
        for block in blocks_of(path)
        for line in range(block.line, block.line + block.text.count("\n") + 2)
    }
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if number not in fenced:
            for found in re.finditer(r"(`+)(?!`)(.+?)(?<!`)\1(?!`)", line):
                yield number, found.group(2).strip()


def _unvenvd(path: Path) -> list[str]:
    name = doc_name(path)
    problems = []
    for block in blocks_of(path):
        if block.lang not in SHELL:
            continue
        steps = transcript(block.text)
        lines = (
            [(s.offset, s.command) for s in steps]
            if steps is not None
            else list(enumerate(block.text.splitlines()))
        )
        for offset, line in lines:
            if line.strip().startswith("#"):
                continue
            problems += [
                f"{name}:{block.line + 1 + offset}: `{word}…`: use `.venv/bin/{word.split()[0]}`"
                for word in _command_words(line)
                if _bare(word)
            ]
    for number, span in _spans(path):
        # an invocation to paste (`python examples/x.py`, `pip install`), not `python -I`
        if re.match(r"(python3?|pip3?|pytest) (\S+\.py\b|-m |install )", span) and _bare(span):
            problems.append(f"{name}:{number}: `{span}`: use `.venv/bin/{span.split()[0]}`")
    return problems


@pytest.mark.parametrize("doc", DOCS + EXAMPLE_READMES, ids=lambda p: str(p.relative_to(ROOT)))
def test_commands_use_the_virtual_environment(doc: Path) -> None:
    problems = _unvenvd(doc)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_doc_with_commands_says_how_to_activate(doc: Path) -> None:
    # its prose then names commands as a reader types them once activated (`converge runs`)
    commands = [b.line for b in blocks_of(doc) if b.lang in SHELL]
    text = doc.read_text(encoding="utf-8")
    assert not commands or "source .venv/bin/activate" in text, (
        f"{doc_name(doc)}:{commands[0]}: a doc with commands to run never says "
        "`source .venv/bin/activate` (that `converge` alone is `.venv/bin/converge` once it is)"
    )


def test_the_command_check_finds_bare_commands(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "Run `python examples/x.py` or `.venv/bin/python examples/x.py`.\n\n"
        "```sh\npython3 -m venv .venv && .venv/bin/pip install -e .\n"
        "CONVERGE_STORE=x.db converge runs   # bare\n```\n\n"
        "```console\n$ timeout 5 pytest -q\noutput python here\n```\n",
        encoding="utf-8",
    )
    problems = [p.split(": ", 1)[1] for p in _unvenvd(doc)]
    assert problems == [
        "`converge runs…`: use `.venv/bin/converge`",
        "`pytest -q…`: use `.venv/bin/pytest`",
        "`python examples/x.py`: use `.venv/bin/python`",
    ]


# -- calls in the prose ---------------------------------------------------------------------------


@cache
def _public() -> dict[str, list[Any]]:
    """Public callables of converge by name: functions, classes and the classes' methods."""
    found: dict[str, list[Any]] = defaultdict(list)
    seen: set[tuple[str, int]] = set()

    def add(name: str, obj: Any) -> None:
        if callable(obj) and (name, id(obj)) not in seen:
            seen.add((name, id(obj)))
            found[name].append(obj)

    for info in pkgutil.walk_packages(converge.__path__, "converge."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name, None)
            add(name, obj)
            if inspect.isclass(obj):
                for attr in dir(obj):
                    if not attr.startswith("_"):
                        add(f"{name}.{attr}", inspect.getattr_static(obj, attr))
                        add(attr, getattr(obj, attr, None))
    return found


def _accepts(target: Any, keywords: set[str]) -> bool:
    target = target.__func__ if isinstance(target, classmethod | staticmethod) else target
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return True  # no signature to hold it to
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return True
    return keywords <= {p.name for p in parameters if p.kind is not p.POSITIONAL_ONLY}


def _calls(span: str) -> Iterator[tuple[str, set[str]]]:
    """``(dotted name, keywords)`` of each call written in a code span."""
    for found in re.finditer(r"([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*)\(", span):
        depth, i = 1, found.end()
        while i < len(span) and depth:
            depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(span[i], 0)
            i += 1
        arguments = span[found.end() : i - 1]
        top, depth, current = [], 0, ""
        for char in arguments:
            depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(char, 0)
            if char == "," and depth == 0:
                top.append(current)
                current = ""
            else:
                current += char
        top.append(current)
        keywords = {m[1] for arg in top if (m := re.match(r"\s*(\w+)\s*=(?!=)", arg))}
        yield found.group(1), keywords


def _wrong_calls(path: Path, public: Callable[[], dict[str, list[Any]]] = _public) -> list[str]:
    index = public()
    problems = []
    for number, span in _spans(path):
        for name, keywords in _calls(span):
            parts = name.split(".")
            key = ".".join(parts[-2:]) if len(parts) > 1 and ".".join(parts[-2:]) in index else None
            candidates = index.get(key or parts[-1], [])
            if parts[-1][:1].isupper() and not candidates and len(parts) == 1:
                problems.append(f"{path.name}:{number}: `{span}`: converge has no public {name}")
            elif keywords and candidates and not any(_accepts(c, keywords) for c in candidates):
                problems.append(
                    f"{path.name}:{number}: `{span}`: no public `{key or parts[-1]}` takes "
                    f"{', '.join(sorted(keywords))} (it takes {_shown(candidates[0])})"
                )
    return problems


def _shown(target: Any) -> str:
    try:
        return str(inspect.signature(target))
    except (TypeError, ValueError):
        return "?"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_calls_in_the_prose_name_real_keywords(doc: Path) -> None:
    problems = _wrong_calls(doc)
    assert not problems, "\n".join(problems)


def test_the_call_check_catches_a_keyword_the_method_does_not_take(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "A node calls `ctx.report_usage(tokens=…, cost=…)` and builds `Engine(max_threads=8)`,\n"
        '`Engine(thread_count=8)`, `SQLiteStore.open(path, synchronous="FULL")`,\n'
        "`Frobnicator()` and `fn(inputs, ctx)`.\n",
        encoding="utf-8",
    )
    problems = _wrong_calls(doc)
    assert len(problems) == 3, problems
    assert problems[0].startswith(
        "doc.md:1: `ctx.report_usage(tokens=…, cost=…)`: no public `report_usage` takes cost, "
        "tokens (it takes (self, tokens_in: "
    )
    assert problems[1].startswith("doc.md:2: `Engine(thread_count=8)`: no public `Engine` takes")
    assert problems[2] == "doc.md:3: `Frobnicator()`: converge has no public Frobnicator"


# -- no history, no private modules ---------------------------------------------------------------

_HISTORY = re.compile(
    r"\bseeds? ?0\d\d\b|§|\bissues? \d+|\bas the seeds? |\bthe seeds?'s?\b"
    r"|\bDESIGN (?:decision|\.md)|\.\./shared/",
    re.I,
)
_PRIVATE = re.compile(r"(?<![\w{.*-])_[a-z]\w*(?:\.py)?\b|converge(?:\.\w+)*\._[a-z]\w*")


def _history(text: str, private_too: bool) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text.splitlines(), 1):
        found = _HISTORY.search(line) or (private_too and _PRIVATE.search(line))
        if found:
            yield number, line.strip()


def _help_texts() -> Iterator[tuple[str, str]]:
    def walk(command: Any, path: list[str]) -> Iterator[tuple[str, str]]:
        context = command.context_class(command, info_name=" ".join(path))
        yield " ".join(path), command.get_help(context)
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*path, name])

    yield from walk(get_command(app), ["converge"])


@pytest.mark.parametrize(
    "doc",
    [*DOCS, ROOT / "docs" / "architecture.md"],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_the_docs_do_not_speak_of_the_projects_history(doc: Path) -> None:
    # the architecture notes point at private modules on purpose: they are for contributors
    private_too = doc.name != "architecture.md"
    found = list(_history(doc.read_text(encoding="utf-8"), private_too))
    where = doc.relative_to(ROOT)
    assert not found, "\n".join(f"{where}:{number}: {line}" for number, line in found)


def test_help_does_not_speak_of_the_projects_history() -> None:
    texts = list(_help_texts())
    assert len(texts) > 10  # every command, and the groups' subcommands
    found = [
        f"converge {command[len('converge ') :]} --help: {line}"
        for command, text in texts
        for _, line in _history(text, private_too=True)
    ]
    assert not found, "\n".join(found)


def test_the_history_check_finds_what_it_looks_for() -> None:
    text = (
        "The graph's config block (seed 002 §4.1).\n"
        "A condition (see ``_expr``).\n"
        "far from issue 3's 300,000 lifecycles\n"
        "as the seed writes it\n"
        "converge.orchestration._plan checks it\n"
        "Usage: converge metrics [OPTIONS] {run_id}\n"
        "a random seed 7, `--run-id ID`, `__init__`, `*_seconds`\n"
        "see ../shared/DESIGN.md, DESIGN decision 7\n"
    )
    assert [number for number, _ in _history(text, private_too=True)] == [1, 2, 3, 4, 5, 8]
