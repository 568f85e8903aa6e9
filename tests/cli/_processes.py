"""``converge`` in a child process, started as a user's terminal starts it, and reaped."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# SIGINT at its default, as in a terminal: a test run started in the background (``pytest &``
# in a script) ignores SIGINT, and its children would inherit that.
_AS_FROM_A_TERMINAL = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def spawn(
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    stdout: int = subprocess.PIPE,
    stderr: int = subprocess.PIPE,
) -> subprocess.Popen[str]:
    """Start ``converge *args`` in ``tmp_path`` on this checkout's sources (the test helpers'
    too), with ``env`` added to the environment; read its output with ``communicate``
    (``stdout``, ``stderr``: another file descriptor for it, a terminal's, say)."""
    exe = Path(sys.executable).with_name("converge")
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    return subprocess.Popen(
        [sys.executable, "-c", _AS_FROM_A_TERMINAL, str(exe), *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path, **(env or {})},
        text=True,
        stdout=stdout,
        stderr=stderr,
    )


@contextmanager
def reaped(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """``proc``, killed on the way out if it is still running (a failed assertion, say): a
    process left behind would fail a later test with its ResourceWarning."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
