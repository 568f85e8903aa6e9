"""Run the LangGraph peer cases from converge's own benchmark scripts (or by hand).

``run_langgraph(cases, quick)`` makes sure the peer venv exists (``langgraph_env``), runs
``langgraph_cases.py`` in it as a subprocess with a timeout, and returns its JSON lines keyed by
case. A converge bench that runs with ``bench/`` on ``sys.path`` (as ``python bench/x.py`` does)
imports it as ``from peers.run_langgraph import run_langgraph``, then prints its own figure and
LangGraph's side by side with a ratio.

Run: ``.venv/bin/python bench/peers/run_langgraph.py [--quick] [--only CASE ...]`` prints the
JSON lines on stdout; the venv's setup and the peer's warnings go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

try:  # imported as ``peers.run_langgraph``
    from .langgraph_env import ensure_langgraph_venv
except ImportError:  # run as a script: this folder is sys.path[0]
    from langgraph_env import ensure_langgraph_venv

__all__ = ["CASES", "PeerBenchError", "run_langgraph"]

CASES = ("chain_50", "pipeline_3", "pipeline_3_sqlite", "fanout_100")
SCRIPT = Path(__file__).resolve().parent / "langgraph_cases.py"
# The full run takes about a minute on two cores; the quick one a few seconds.
TIMEOUT_S = {False: 300.0, True: 60.0}


class PeerBenchError(RuntimeError):
    """A peer case failed, timed out, or printed something that is not a JSON line."""


def _env() -> dict[str, str]:
    """The caller's environment, less what would skew or break the peer's run.

    ``LANGCHAIN_*``/``LANGSMITH_*`` could turn on tracing to a remote service; ``PYTHON*``
    (``PYTHONPATH``, ``PYTHONDEVMODE``, ``PYTHONWARNINGS``, ...) belongs to the caller's
    interpreter, not to the peer venv's.
    """
    prefixes = ("LANGCHAIN_", "LANGSMITH_", "PYTHON")
    return {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}


def _tail(text: str | bytes | None, lines: int = 15) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join((text or "").rstrip().splitlines()[-lines:])


def run_langgraph(
    cases: Sequence[str] = CASES, quick: bool = False, timeout: float | None = None
) -> dict[str, dict[str, Any]]:
    """Run the LangGraph peer ``cases`` in the peer venv; return each case's JSON line as a dict.

    Args:
        cases: case names, from ``CASES``.
        quick: small counts (a smoke test) instead of the full ones.
        timeout: seconds for the whole run; by default 300 (60 when ``quick``).

    Raises:
        PeerBenchError: a case is unknown, failed or is missing from the output, the run timed
            out or printed a line that is not JSON. The message names the case and ends with the
            tail of the peer's stderr.
        langgraph_env.PeerEnvError: the venv could not be made.
    """
    unknown = [case for case in cases if case not in CASES]
    if unknown:
        raise PeerBenchError(f"unknown LangGraph case(s) {unknown}; known: {list(CASES)}")
    python = ensure_langgraph_venv()
    args = [str(python), str(SCRIPT), *(["--quick"] if quick else []), "--only", *cases]
    limit = timeout if timeout is not None else TIMEOUT_S[quick]
    try:
        done = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=limit,
            env=_env(),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        finished = _parse(exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout)
        pending = [case for case in cases if case not in finished]
        raise PeerBenchError(
            f"LangGraph case {pending[0]!r} timed out (whole run limited to {limit:g} s);"
            f" finished: {list(finished)}\n{_tail(exc.stderr)}"
        ) from exc
    if done.stderr:
        sys.stderr.write(done.stderr)
    results = _parse(done.stdout, done.stderr)
    errors = {case: line["error"] for case, line in results.items() if "error" in line}
    if errors:
        case, error = next(iter(errors.items()))
        raise PeerBenchError(f"LangGraph case {case!r} failed: {error}\n{_tail(done.stderr)}")
    missing = [case for case in cases if case not in results]
    if missing or done.returncode != 0:
        raise PeerBenchError(
            f"LangGraph run exited {done.returncode} without case(s) {missing}\n"
            f"{_tail(done.stderr)}"
        )
    return {case: results[case] for case in cases}


def _parse(stdout: str | None, stderr: str | None = None) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for text in (stdout or "").splitlines():
        if not text.strip():
            continue
        try:
            line = json.loads(text)
            results[line["case"]] = line
        except (ValueError, KeyError, TypeError) as exc:
            raise PeerBenchError(
                f"LangGraph run printed a line that is not a case's JSON: {text[:200]!r}\n"
                f"{_tail(stderr)}"
            ) from exc
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke test")
    parser.add_argument("--only", nargs="*", choices=CASES, help="run only these cases")
    cli = parser.parse_args()
    try:
        found = run_langgraph(cli.only or CASES, quick=cli.quick)
    except Exception as exc:  # PeerBenchError or PeerEnvError: one clear line, no traceback
        sys.exit(f"error: {exc}")
    for result in found.values():
        print(json.dumps(result, separators=(", ", ": ")), flush=True)
