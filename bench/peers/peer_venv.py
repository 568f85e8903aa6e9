"""A peer's virtual environment: made once, stamped, rebuilt only when what it holds changes.

Peers are not dependencies of converge, so each runs in a venv of its own under
``.venv-peers/`` at the repository root (gitignored), made with the caller's Python.
``ensure_venv`` creates it and runs its installs the first time; after that a stamp file keyed by
what the caller says the venv must hold (the Python, the requirements, a source archive's size
and time) makes it a few ``stat`` calls. A lock file keeps two callers from installing at once.
Nothing is printed on stdout (the benchmarks' JSON lines go there): progress goes to stderr.
"""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["PeerEnvError", "ensure_venv", "log", "python_of"]

_STAMP = ".converge-peer-stamp.json"
_PIP_TIMEOUT_S = 900


class PeerEnvError(RuntimeError):
    """A peer's venv could not be made: its source missing, or creating or installing failed."""


def python_of(venv: Path) -> Path:
    """The python of ``venv``."""
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def log(message: str) -> None:
    """Progress, on stderr."""
    print(f"[peers] {message}", file=sys.stderr, flush=True)


def _run(args: list[str], what: str, log_file: Path) -> None:
    """Run ``args``; on failure raise ``PeerEnvError`` with one line naming ``what`` and why."""
    try:
        done = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=_PIP_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise PeerEnvError(f"{what} timed out after {_PIP_TIMEOUT_S} s") from exc
    except OSError as exc:
        raise PeerEnvError(f"{what} could not start: {exc}") from exc
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text(done.stdout)
    if done.returncode != 0:
        lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")]
        reason = (errors or lines or ["no output"])[-1]
        raise PeerEnvError(f"{what} failed (exit {done.returncode}): {reason} (log: {log_file})")


def ensure_venv(
    venv: Path,
    holds: Mapping[str, object],
    installs: Sequence[Sequence[str]],
    *,
    keep_same_python: bool = False,
) -> Path:
    """Make sure ``venv`` holds what ``holds`` describes; return its python.

    ``holds`` is what the stamp records beside the caller's Python (anything JSON). When it
    differs, the venv is made anew (or, with ``keep_same_python``, kept if it was made by the
    same Python, and installed over) and each of ``installs`` — the arguments after ``pip
    install`` — is run in order.

    Raises:
        PeerEnvError: creating the venv or installing failed.
    """
    python = python_of(venv)
    want = {
        "python": sys.version,
        # The resolved path: a venv's python and the interpreter it links to make the same venv.
        "executable": str(Path(sys.executable).resolve()),
        **holds,
    }
    want = json.loads(json.dumps(want))  # tuples as lists: compare like with like
    stamp = venv / _STAMP

    def current() -> dict[str, object] | None:
        try:
            found: dict[str, object] = json.loads(stamp.read_text())
        except (OSError, ValueError):
            return None
        return found if python.exists() else None

    if current() == want:
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        found = current()
        if found == want:  # another caller installed it while we waited
            return python
        log_file = venv.parent / f"{venv.name}-pip.log"
        same_python = found is not None and all(
            found.get(key) == want[key] for key in ("python", "executable")
        )
        if not (keep_same_python and same_python):
            log(f"creating {venv} with {sys.executable}")
            stamp.unlink(missing_ok=True)
            _run([sys.executable, "-m", "venv", "--clear", str(venv)], "venv creation", log_file)
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
        for args in installs:
            log(f"installing {' '.join(args)} into {venv}")
            _run([*pip, *args], f"pip install {' '.join(args)}", log_file)
        stamp.write_text(json.dumps(want, indent=2))
        log("peer venv ready")
    return python
