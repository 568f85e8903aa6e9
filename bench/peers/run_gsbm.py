"""Drive the gsbm/converge peer from converge's board benchmark (or by hand).

``GsbmPeer`` makes sure the peer venv exists (``gsbm_env``), starts ``gsbm_cases.py`` in it as a
long-lived subprocess, and asks it for one measurement at a time, so that a converge bench can
alternate the peer's runs with its own in one invocation (the same load hits both; their ratio
is fair even when the absolute figures wobble). A converge bench that runs with ``bench/`` on
``sys.path`` imports it as ``from peers.run_gsbm import GsbmPeer``.

Run: ``.venv/bin/python bench/peers/run_gsbm.py [--tasks N] [--rounds R]`` prints the peer's
JSON lines on stdout; the venv's setup goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Self

try:  # imported as ``peers.run_gsbm``
    from .gsbm_env import ensure_gsbm_venv
except ImportError:  # run as a script: this folder is sys.path[0]
    from gsbm_env import ensure_gsbm_venv

__all__ = ["GsbmPeer", "PeerBenchError"]

SCRIPT = Path(__file__).resolve().parent / "gsbm_cases.py"


class PeerBenchError(RuntimeError):
    """The peer failed, died, or answered something that is not a case's JSON line."""


def _env() -> dict[str, str]:
    """The caller's environment less ``PYTHON*`` (``PYTHONPATH`` would put our converge, which
    shares the peer's import name, in front of the peer's)."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}


class GsbmPeer:
    """The peer process; use ``with GsbmPeer() as peer: peer.lifecycle(20_000)``."""

    def __init__(self) -> None:
        python = ensure_gsbm_venv()
        self._proc = subprocess.Popen(
            [str(python), str(SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_env(),
        )

    def lifecycle(self, tasks: int) -> dict[str, Any]:
        """One timed run of ``tasks`` lifecycles; the peer's JSON line as a dict.

        Raises:
            PeerBenchError: the peer failed or died.
        """
        return self._ask(f"lifecycle {tasks}")

    def _ask(self, request: str) -> dict[str, Any]:
        proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(request + "\n")
            proc.stdin.flush()
        except OSError as exc:
            raise PeerBenchError(f"the gsbm peer is gone (exit {proc.poll()}): {exc}") from exc
        line = proc.stdout.readline()
        if not line:
            raise PeerBenchError(f"the gsbm peer ended (exit {proc.wait()}) on {request!r}")
        try:
            result: dict[str, Any] = json.loads(line)
        except ValueError as exc:
            raise PeerBenchError(f"the gsbm peer answered {line[:200]!r}") from exc
        if "error" in result:
            raise PeerBenchError(f"the gsbm peer failed {request!r}: {result['error']}")
        return result

    def close(self) -> None:
        """End the peer process (idempotent)."""
        proc = self._proc
        if proc.poll() is None:
            assert proc.stdin is not None
            try:
                proc.stdin.write("quit\n")
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    cli = parser.parse_args()
    try:
        with GsbmPeer() as peer:
            for _ in range(cli.rounds):
                print(json.dumps(peer.lifecycle(cli.tasks), separators=(", ", ": ")), flush=True)
    except Exception as exc:  # PeerBenchError or GsbmEnvError: one clear line, no traceback
        sys.exit(f"error: {exc}")
