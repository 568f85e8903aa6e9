"""The decentralized side's docs run: the contract-net in fifteen lines and its graph form
print what the guide says they print, and the board guide shows the example's files as they
are."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COORDINATION = ROOT / "docs" / "guides" / "coordination.md"
BOARD = ROOT / "docs" / "guides" / "board.md"
BOARD_EXAMPLE = ROOT / "examples" / "board"


def _blocks(text: str) -> list[tuple[str, str, str]]:
    """(the line before the fence, the language, the code) of each fenced block."""
    return [
        (m["before"], m["lang"], m["code"])
        for m in re.finditer(
            r"(?P<before>[^\n]*)\n```(?P<lang>\w*)\n(?P<code>.*?)^```$", text, flags=re.S | re.M
        )
    ]


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _python_then_output(marker: str | None) -> list[tuple[str, str]]:
    """Each Python block of the coordination guide after ``marker`` (None: all) with the
    ``text`` block that follows it."""
    blocks = _blocks(COORDINATION.read_text(encoding="utf-8"))
    pairs = [
        (code, blocks[i + 1][2])
        for i, (before, lang, code) in enumerate(blocks[:-1])
        if lang == "python" and blocks[i + 1][1] == "text" and (marker is None or marker in before)
    ]
    return pairs


def test_the_contract_net_takes_at_most_fifteen_lines_and_prints_what_the_guide_says() -> None:
    [(code, output)] = _python_then_output("<!-- contract-net:fifteen -->")
    lines = [line for line in code.splitlines() if line.strip()]
    assert len(lines) <= 15, f"{len(lines)} lines"
    assert code.count("Provider(") >= 2 and "strategy=" in code and ".receipt" in code
    assert "sleep" not in code and "while" not in code  # no polling
    assert _run(code) == output


def test_the_tender_in_a_python_graph_prints_what_the_guide_says() -> None:
    [(code, output)] = [
        (code, output) for code, output in _python_then_output(None) if '"kind": "tender"' in code
    ]
    assert "add_node(" in code
    assert _run(code) == output


def _marked(marker: str) -> str:
    [code] = [c for before, _, c in _blocks(BOARD.read_text(encoding="utf-8")) if marker in before]
    return code


def test_the_board_guide_shows_the_examples_files_as_they_are() -> None:
    workers = (BOARD_EXAMPLE / "workers.py").read_text(encoding="utf-8")
    assert workers.split('"""\n\n', 1)[1] == _marked("<!-- board:workers -->")
    agents = (BOARD_EXAMPLE / "agents.yaml").read_text(encoding="utf-8")
    assert agents.split("\n", 1)[1] == _marked("<!-- board:agents -->")  # less its comment
    submit = (BOARD_EXAMPLE / "submit.py").read_text(encoding="utf-8")
    assert _marked("<!-- board:submit -->") in submit
