"""How fast the ``converge`` command starts: ``--help`` and ``validate`` of a small graph.

Each case runs the installed console script in a fresh process (``subprocess``), best of N, and
prints one JSON line (target: at most 200 ms; ``ok`` says whether it was met). The graph's
agents are stdlib callables, so the figure is converge's own import and parse time.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from _common import best_of, emit

TARGET_MS = 200.0
REPEAT = 15
GRAPH = """\
name: bench
nodes:
  - id: first
    agent: echo
    inputs: [text]
  - id: second
    agent: echo
    inputs: [first.output]
edges:
  - from: first
    to: second
agents:
  echo: builtins:repr
"""


def _timed(case: str, args: list[str]) -> None:
    exe = Path(sys.executable).with_name("converge")

    def once() -> None:
        subprocess.run([str(exe), *args], check=True, capture_output=True)

    seconds = best_of(once, REPEAT)
    ms = round(seconds * 1e3, 1)
    emit(
        bench="cli",
        case=case,
        value=ms,
        unit="ms",
        target=TARGET_MS,
        ok=ms <= TARGET_MS,
        repeat=REPEAT,
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        graph = Path(tmp) / "graph.yaml"
        graph.write_text(GRAPH)
        _timed("converge --help", ["--help"])
        _timed("converge validate", ["validate", str(graph)])


if __name__ == "__main__":
    main()
