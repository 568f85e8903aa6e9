"""Run the code blocks of the README and the guides as a reader would paste them.

What a doc writer needs to know:

- Every fenced block (```` ``` ```` or ``~~~``, also indented in a list item) is run, unless
  the line right before its fence is exactly ``<!-- not run: REASON -->`` (an install,
  ``make test`` itself, a synopsis with placeholders, a kill in the middle of a run…; the
  reason is for readers of the Markdown source, so say it).
- The blocks of one file run in its order, in one temporary directory holding a copy of the
  repository's ``examples/`` — as if pasted at the repository's root — where
  ``.venv/bin/python`` and ``.venv/bin/converge`` run this checkout's code (and
  ``source .venv/bin/activate`` puts them on ``PATH``). Each command and block has
  ``TIME_LIMIT`` seconds.
- By language:

  - ``sh``, ``bash``, ``shell``, ``console`` with lines starting ``$ ``: a **transcript**.
    Each command runs in its own ``bash`` (background processes it starts are killed when it
    ends); what it prints — stdout and stderr together, as a pipe gets them, so live progress
    shows as lines — is compared with the lines under it, after normalising (run ids and
    other ids, durations and timestamps, runs of spaces, the temporary directory). An expected
    line ``...`` stands for any number of lines, ``...`` inside a line for any text. An id the
    doc shows is bound to the real one where both first appear, and replaced by it in the
    file's later commands and blocks (``converge resume 01M8…`` after the run that printed it).
  - the same without ``$ ``: a **script**, run by ``bash`` with ``set -e``: it must exit 0.
  - ``python``, ``py``: saved to a file and run with ``.venv/bin/python``: it must exit 0.
  - ``yaml``, ``yml``: a graph (it has ``nodes:``) must load as ``converge run`` loads it; a
    file for ``converge agents run`` (only ``agents:`` and ``pools:``) must load as that reads
    it.
  - ``toml``: a ``converge.toml``, read as the command line reads it (unknown keys refused).
  - anything else (output, JSON, text): must carry the marker.

- Models: ``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ``OPENAI_BASE_URL`` and
  ``ANTHROPIC_BASE_URL`` (which the official SDKs read) point at a local ``FakeLLMServer``
  that answers ``ok``; no ``CONVERGE_*`` setting of the caller's environment leaks in.

A failure names the block (``README.md:123``), the command or line, and what differed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from difflib import unified_diff
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TIME_LIMIT = 30.0
"""Seconds one command, script or Python block may take."""

MARKER = re.compile(r"^\s*<!-- not run: (?P<reason>\S.*?) -->\s*$")
_MARKER_LIKE = re.compile(r"<!--\s*not[ -_]?run", re.I)
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
SHELL = frozenset({"sh", "bash", "shell", "console"})
PYTHON = frozenset({"python", "py"})
YAML = frozenset({"yaml", "yml"})
TOML = frozenset({"toml"})


@dataclass(frozen=True)
class Block:
    """A fenced code block of a Markdown file."""

    name: str
    """The file, relative to the repository's root."""
    line: int
    """The line of its opening fence (1-based)."""
    lang: str
    """The first word of the fence's info string, lower-cased ("" when none)."""
    text: str
    """Its content, without the fences and the indentation of the opening fence."""
    not_run: str | None
    """The reason of its ``<!-- not run: REASON -->`` marker, or None."""

    @property
    def where(self) -> str:
        """``file:line`` of the opening fence."""
        return f"{self.name}:{self.line}"


def blocks_of(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, in order.

    Raises:
        ValueError: a fence is never closed.
    """
    name = doc_name(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        end = next((j for j in range(i + 1, len(lines)) if closing.match(lines[j])), None)
        if end is None:
            raise ValueError(f"{name}:{i + 1}: a code fence that is never closed")
        body = [_unindent(line, indent) for line in lines[i + 1 : end]]
        marker = MARKER.match(lines[i - 1]) if i > 0 else None
        found.append(
            Block(
                name=name,
                line=i + 1,
                lang=(opening["info"].split() or [""])[0].lower(),
                text="\n".join(body) + "\n" if body else "",
                not_run=marker["reason"] if marker else None,
            )
        )
        i = end + 1
    return found


def stray_markers(path: Path) -> list[str]:
    """Markers that would not be read: misspelt, or not on the line right before a fence."""
    name = doc_name(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    problems = []
    for i, line in enumerate(lines):
        if not _MARKER_LIKE.search(line):
            continue
        if MARKER.match(line) is None:
            problems.append(
                f"{name}:{i + 1}: a marker is written `<!-- not run: REASON -->`, alone on its "
                f"line: {line.strip()!r}"
            )
        elif i + 1 >= len(lines) or _FENCE.match(lines[i + 1]) is None:
            problems.append(
                f"{name}:{i + 1}: this marker is not on the line right before a code fence, "
                "so no block is marked by it"
            )
    return problems


def doc_name(path: Path) -> str:
    """The file, relative to the repository's root when it is inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _unindent(line: str, indent: str) -> str:
    return line[len(indent) :] if line.startswith(indent) else line.lstrip(" \t")


# -- transcripts --------------------------------------------------------------------------------


@dataclass
class Step:
    """One ``$ command`` of a transcript and the output shown under it."""

    command: str
    offset: int
    """Its line within the block (0-based)."""
    expected: list[str] = field(default_factory=list)


def transcript(text: str) -> list[Step] | None:
    """The steps of a transcript, or None when no line starts with ``$ ``."""
    lines = text.splitlines()
    if not any(line.startswith("$ ") for line in lines):
        return None
    steps: list[Step] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ "):
            command, start = line[2:], i
            while command.endswith("\\") and i + 1 < len(lines):
                i += 1
                command = command[:-1] + "\n" + lines[i]
            steps.append(Step(command, start))
        elif steps:
            steps[-1].expected.append(line)
        elif line.strip():
            raise ValueError(f"line {i + 1} of a transcript comes before its first `$ ` command")
        i += 1
    return steps


# -- normalising and matching output -------------------------------------------------------------

ULID = r"[0-9A-HJKMNP-TV-Z]{26}"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_BINDABLE = re.compile(rf"(?<![0-9A-Za-z])(?:{ULID}|{UUID})(?![0-9A-Za-z])")
"""Ids a later command may name (run ids): bound from the doc's to the real ones."""
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_NORMAL = [
    # keys and long hex ids (trace ids, hashes) change every run
    (re.compile(r"did:key:z[1-9A-HJ-NP-Za-km-z]+(?:…[1-9A-HJ-NP-Za-km-z]*)?"), "did:key:<KEY>"),
    (re.compile(r"(?<![0-9A-Za-z])[0-9a-f]{16,64}(?![0-9A-Za-z])"), "<HEX>"),
    # timestamps, then durations (0.00s, 6.5 ms, 2 s ago, 1m03s)
    (
        re.compile(r"\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?)?(?:Z|[+-]\d\d:?\d\d)?"),
        "<TIME>",
    ),
    (re.compile(r"(?<![\w.:])\d\d?:\d\d(?::\d\d(?:\.\d+)?)?(?![\w:])"), "<TIME>"),
    (
        re.compile(
            r"(?<![\w.])\d+(?:[.,]\d+)?(?:e-?\d+)?\s?(?:ms|µs|us|ns|s|sec|secs|seconds?|min|m|h)"
            r"(?:\d+(?:\.\d+)?s)?(?![\w])"
        ),
        "<TIME>",
    ),
    # rich draws a table's rules as long as its widest cell
    (re.compile(r"([─━═])\1+"), r"\1"),
    (re.compile(r"[ \t]+"), " "),
]


def normalise(line: str) -> str:
    """A line of output with what changes from run to run replaced (ids are kept)."""
    line = _ANSI.sub("", line)
    for pattern, replacement in _NORMAL:
        line = pattern.sub(replacement, line)
    return line.strip()


class Mismatch(Exception):
    """The output differs from the transcript's."""


def match_output(
    expected: list[str], actual: list[str], bound: Mapping[str, str]
) -> dict[str, str]:
    """Check ``actual`` against the transcript's ``expected`` lines; return new id bindings.

    Both sides are normalised; ``...`` alone stands for any lines, inside a line for any text;
    an id of the doc already bound must be its real id, another one binds to what stands there.

    Raises:
        Mismatch: with a diff of the normalised lines.
    """
    exp = _trim([normalise(line) for line in expected])
    act = _trim([normalise(line) for line in actual])
    patterns = [None if line == "..." else _pattern(line, bound) for line in exp]
    pairs = _align(patterns, act)
    if pairs is None:
        raise Mismatch(_diff(exp, act))
    new: dict[str, str] = {}
    for i, j in pairs:
        pattern = patterns[i]
        assert pattern is not None
        found = pattern.fullmatch(act[j])
        assert found is not None
        doc_ids = _BINDABLE.findall(exp[i])
        real_ids = [value for value in found.groups() if value is not None]
        for doc_id, real in zip([d for d in doc_ids if d not in bound], real_ids, strict=False):
            if new.setdefault(doc_id, real) != real:
                raise Mismatch(
                    f"the doc's id {doc_id} stands for two ids of the output, {new[doc_id]} and "
                    f"{real}\n" + _diff(exp, act)
                )
    return new


def _trim(lines: list[str]) -> list[str]:
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return lines


def _pattern(line: str, bound: Mapping[str, str]) -> re.Pattern[str]:
    parts = []
    last = 0
    for found in _BINDABLE.finditer(line):
        parts.append(_literal(line[last : found.start()]))
        doc_id = found.group()
        parts.append(re.escape(bound[doc_id]) if doc_id in bound else f"({ULID}|{UUID})")
        last = found.end()
    parts.append(_literal(line[last:]))
    return re.compile("".join(parts))


def _literal(text: str) -> str:
    return ".*?".join(re.escape(piece) for piece in text.split("..."))


def _align(patterns: list[re.Pattern[str] | None], act: list[str]) -> list[tuple[int, int]] | None:
    """Glob-match lines (None matches any run of lines); the matched (pattern, line) pairs."""
    n, m = len(patterns), len(act)
    # ok[i][j]: patterns[i:] match act[j:]
    ok = [[False] * (m + 1) for _ in range(n + 1)]
    ok[n][m] = True
    for i in range(n - 1, -1, -1):
        pattern = patterns[i]
        for j in range(m, -1, -1):
            if pattern is None:
                ok[i][j] = ok[i + 1][j] or (j < m and ok[i][j + 1])
            else:
                ok[i][j] = j < m and ok[i + 1][j + 1] and pattern.fullmatch(act[j]) is not None
    if not ok[0][0]:
        return None
    pairs, i, j = [], 0, 0
    while i < n:
        if patterns[i] is None:
            if ok[i + 1][j]:
                i += 1
            else:
                j += 1
        else:
            pairs.append((i, j))
            i, j = i + 1, j + 1
    return pairs


def _diff(expected: list[str], actual: list[str]) -> str:
    lines = unified_diff(expected, actual, "the doc shows", "the command printed", lineterm="")
    return "\n".join(lines)


# -- running ------------------------------------------------------------------------------------


def doc_env(llm_url: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment blocks run in: this checkout's code, plain output, the fake models."""
    env = {
        key: value
        for key, value in (os.environ if base is None else base).items()
        if not key.startswith(("CONVERGE_", "OPENAI_", "ANTHROPIC_", "PYTHON"))
        # what makes rich draw for a terminal although output goes to a pipe
        and key not in {"FORCE_COLOR", "CLICOLOR_FORCE", "TTY_COMPATIBLE", "TTY_INTERACTIVE"}
    }
    env.update(
        PYTHONPATH=str(ROOT / "src"),
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",
        NO_COLOR="1",
        TERM="dumb",
        COLUMNS="80",
        OPENAI_API_KEY="sk-docs-fake",
        ANTHROPIC_API_KEY="sk-ant-docs-fake",
        OPENAI_BASE_URL=llm_url + "/v1",
        ANTHROPIC_BASE_URL=llm_url,
    )
    return env


def prepare(directory: Path) -> None:
    """Make ``directory`` look like the repository's root to a reader's commands."""
    shutil.copytree(
        ROOT / "examples",
        directory / "examples",
        ignore=shutil.ignore_patterns("__pycache__", ".converge", "*.db", "*.db-*"),
    )
    bin_dir = directory / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    scripts = {
        "python": f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n',
        "converge": (
            f"#!{sys.executable}\nimport sys\nfrom converge.cli import main\n\nsys.exit(main())\n"
        ),
        "activate": f'export PATH={shlex.quote(str(bin_dir))}:"$PATH"\n',
    }
    for script, text in scripts.items():
        (bin_dir / script).write_text(text, encoding="utf-8")
        (bin_dir / script).chmod(0o755)


@dataclass
class Finished:
    """A process run to its end (or killed at the time limit)."""

    code: int | None
    """Its exit status; None when it was killed at the time limit."""
    output: str
    """What it printed, stdout and stderr together, the temporary directory shown as ``.``."""


class Session:
    """Runs the blocks of one file, in order, in one directory.

    Args:
        directory: a directory made by ``prepare``.
        env: from ``doc_env``.
    """

    def __init__(self, directory: Path, env: Mapping[str, str]) -> None:
        self.directory = directory
        self.env = dict(env)
        self.bound: dict[str, str] = {}
        """The doc's ids -> the real ones, learned from transcripts."""

    def run(self, block: Block) -> str | None:
        """Run ``block``; None when it did what the doc says, else why not."""
        text = self._substitute(block.text)
        try:
            if block.lang in SHELL:
                steps = transcript(text)
                return self._script(block, text) if steps is None else self._steps(block, steps)
            if block.lang in PYTHON:
                return self._python(block, text)
            if block.lang in YAML | TOML:
                return self.check_data([block])[block.line]
        except ValueError as exc:
            return f"{block.where}: {exc}"
        what = f"a `{block.lang}` block" if block.lang else "a block without a language"
        return (
            f"{block.where}: {what} is not run: give it a language that runs (sh, python, yaml, "
            "toml; output belongs under its `$ command` in an sh transcript), or put "
            "`<!-- not run: REASON -->` on the line right before its fence"
        )

    def _substitute(self, text: str) -> str:
        for doc_id, real in self.bound.items():
            text = text.replace(doc_id, real)
        return text

    def execute(self, args: list[str]) -> Finished:
        """Run ``args`` in the directory; kill what it left running when it ends."""
        with tempfile.TemporaryFile() as out:
            process = subprocess.Popen(
                args,
                cwd=self.directory,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                code: int | None = process.wait(timeout=TIME_LIMIT)
            except subprocess.TimeoutExpired:
                code = None
            finally:
                # a command may have started processes of its own (`&`): end them all
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()
            out.seek(0)
            text = out.read().decode("utf-8", errors="replace")
        where = str(self.directory)
        return Finished(code, text.replace(where + "/", "").replace(where, "."))

    def _steps(self, block: Block, steps: list[Step]) -> str | None:
        for step in steps:
            command = self._substitute(step.command)
            done = self.execute(["bash", "--noprofile", "--norc", "-c", command])
            at = f"{block.name}:{block.line + 1 + step.offset}"
            if done.code is None:
                return f"{at}: `$ {command}` did not finish in {TIME_LIMIT:g} s\n{done.output}"
            try:
                self.bound.update(match_output(step.expected, done.output.splitlines(), self.bound))
            except Mismatch as exc:
                return (
                    f"{at}: `$ {command}` (exit {done.code}) printed what the doc does not show "
                    f"(after normalising ids and times):\n{exc}"
                )
        return None

    def _script(self, block: Block, text: str) -> str | None:
        marker = "__doc_block_failed_at__"
        script = f"set -eo pipefail; trap 'echo {marker} $LINENO $? >&2' ERR\n{text}"
        done = self.execute(["bash", "--noprofile", "--norc", "-c", script])
        if done.code is None:
            return f"{block.where}: the block did not finish in {TIME_LIMIT:g} s\n{done.output}"
        if done.code == 0:
            return None
        failed = re.search(rf"{marker} (\d+) (\d+)", done.output)
        output = re.sub(rf"{marker}.*\n?", "", done.output)
        if failed is None:
            return f"{block.where}: the block exited {done.code}\n{_tail(output)}"
        line = int(failed[1]) - 1
        command = text.splitlines()[line - 1] if 0 < line <= len(text.splitlines()) else "?"
        return (
            f"{block.name}:{block.line + line}: `{command.strip()}` exited {failed[2]}\n"
            f"{_tail(output)}"
        )

    def _python(self, block: Block, text: str) -> str | None:
        script = self.directory / f"doc_block_{block.line}.py"
        script.write_text(text, encoding="utf-8")
        done = self.execute([".venv/bin/python", script.name])
        if done.code == 0:
            return None
        if done.code is None:
            return f"{block.where}: the block did not finish in {TIME_LIMIT:g} s\n{done.output}"
        lines = re.findall(rf'File "[^"]*{re.escape(script.name)}", line (\d+)', done.output)
        where = f"{block.name}:{block.line + int(lines[-1])}" if lines else block.where
        return f"{where}: the Python block exited {done.code}\n{_tail(done.output)}"

    def check_data(self, blocks: list[Block]) -> dict[int, str | None]:
        """Load the file's YAML and TOML blocks, all in one process (they change nothing, so
        they need not wait for the blocks before them): block line -> failure or None."""
        data = [b for b in blocks if b.not_run is None and b.lang in YAML | TOML]
        if not data:
            return {}
        given = json.dumps([[b.lang in YAML, self._substitute(b.text)] for b in data])
        done = subprocess.run(
            [".venv/bin/python", "-c", _DATA_CHECK],
            cwd=self.directory,
            env=self.env,
            input=given,
            capture_output=True,
            text=True,
            timeout=TIME_LIMIT,
            check=False,
        )
        if done.returncode != 0:
            failure = f"the YAML and TOML blocks could not be checked:\n{_tail(done.stderr)}"
            return {b.line: f"{b.where}: {failure}" for b in data}
        return {
            b.line: None if said is None else f"{b.where}: {self._shown(b, said)}"
            for b, said in zip(data, json.loads(done.stdout), strict=True)
        }

    @staticmethod
    def _shown(block: Block, said: str) -> str:
        # a loader numbers the block's lines: point at the doc's
        return re.sub(r"<string>:(\d+)", lambda m: f"{block.name}:{block.line + int(m[1])}", said)


_DATA_CHECK = """
import contextlib, io, json, os, sys, tempfile
from pathlib import Path

import yaml

SCRATCH = tempfile.TemporaryDirectory()


def check(is_yaml, text, index):
    if not is_yaml:  # a converge.toml, read where nothing else is
        where = Path(tempfile.mkdtemp(dir=SCRATCH.name))
        (where / "converge.toml").write_text(text)
        from converge.cli._config import settings

        said = io.StringIO()
        here = os.getcwd()
        os.chdir(where)
        try:
            with contextlib.redirect_stderr(said):
                settings()
        except BaseException as exc:
            return "the converge.toml is refused: " + (said.getvalue().strip() or repr(exc))
        finally:
            os.chdir(here)
        return None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return f"not YAML: {exc}"
    if isinstance(data, dict) and "nodes" in data:
        from converge.orchestration import loads_graph

        try:
            loads_graph(text)
        except Exception as exc:
            return f"the graph does not load: {exc}"
        return None
    if isinstance(data, dict) and data and set(data) <= {"agents", "pools"}:
        from converge.cli._agents_config import load_agents_config

        path = Path(tempfile.mkdtemp(dir=SCRATCH.name)) / "agents.yaml"
        path.write_text(text)
        try:
            load_agents_config(path)
        except Exception as exc:
            return "the agents file does not load: " + str(exc).replace(str(path), "<string>")
        return None
    return (
        "a YAML block that is neither a graph (`nodes:`) nor a file for `converge agents run` "
        "(only `agents:` and `pools:`): mark it `<!-- not run: REASON -->` if it is an excerpt"
    )


sys.path.insert(0, os.getcwd())
blocks = json.load(sys.stdin)
print(json.dumps([check(is_yaml, text, i) for i, (is_yaml, text) in enumerate(blocks)]))
SCRATCH.cleanup()
"""


def _tail(output: str, lines: int = 15) -> str:
    return textwrap.indent("\n".join(output.rstrip().splitlines()[-lines:]), "    ")


def run_doc(doc: Path, directory: Path, llm_url: str) -> list[str]:
    """Run the blocks of ``doc`` in ``directory`` (empty); the failures, in the file's order."""
    prepare(directory)
    session = Session(directory, doc_env(llm_url))
    blocks = blocks_of(doc)
    data = session.check_data(blocks)
    failures = []
    for block in blocks:
        if block.not_run is None:
            failed = data[block.line] if block.line in data else session.run(block)
            if failed is not None:
                failures.append(failed)
    return failures


def iter_docs() -> Iterator[Path]:
    """The files whose blocks run: the README and the guides."""
    yield ROOT / "README.md"
    yield from sorted((ROOT / "docs" / "guides").glob("*.md"))
