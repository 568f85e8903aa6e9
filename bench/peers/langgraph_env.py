"""The virtual environment the LangGraph peer benchmarks run in.

LangGraph is not a dependency of converge, so its benchmarks run in a venv of their own,
``.venv-peers/langgraph`` at the repository root (gitignored), made with the caller's Python.
``ensure_langgraph_venv()`` creates it and pip-installs ``REQUIREMENTS`` the first time; after
that a stamp file keyed by the Python and the requirement list makes it a few ``stat`` calls.
Nothing is printed on stdout (the benchmarks' JSON lines go there): progress goes to stderr.

Run: ``.venv/bin/python bench/peers/langgraph_env.py`` prints the venv's python on stdout.
"""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
from pathlib import Path

__all__ = ["REQUIREMENTS", "VENV_DIR", "PeerEnvError", "ensure_langgraph_venv"]

# Lower bounds are the versions the cases were written against; the upper bounds keep a new
# major version, which may change the API, from slipping into a figure unnoticed.
REQUIREMENTS = ("langgraph>=1.2,<2", "langgraph-checkpoint-sqlite>=3.1,<4")
VENV_DIR = Path(__file__).resolve().parents[2] / ".venv-peers" / "langgraph"
_STAMP = ".converge-peer-stamp.json"
_PIP_TIMEOUT_S = 900


class PeerEnvError(RuntimeError):
    """The peer's venv could not be created or its packages installed."""


def _python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def _log(message: str) -> None:
    print(f"[peers] {message}", file=sys.stderr, flush=True)


def _run(args: list[str], what: str, log: Path) -> None:
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
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(done.stdout)
    if done.returncode != 0:
        lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")]
        reason = (errors or lines or ["no output"])[-1]
        raise PeerEnvError(f"{what} failed (exit {done.returncode}): {reason} (log: {log})")


def ensure_langgraph_venv(venv: Path = VENV_DIR) -> Path:
    """Make sure ``venv`` exists with ``REQUIREMENTS`` installed; return its python.

    Idempotent: once the stamp matches the caller's Python and the requirement list, it returns
    at once. A venv made by another Python is rebuilt (``venv --clear``); a changed requirement
    list is installed over the existing one. A lock file keeps two callers from installing at
    the same time.

    Raises:
        PeerEnvError: creating the venv or installing the packages failed.
    """
    python = _python(venv)
    # The resolved path: a venv's python and the interpreter it links to make the same venv.
    executable = str(Path(sys.executable).resolve())
    want = {"python": sys.version, "executable": executable, "requirements": REQUIREMENTS}
    stamp = venv / _STAMP

    def current() -> dict[str, object] | None:
        try:
            found: dict[str, object] = json.loads(stamp.read_text())
        except (OSError, ValueError):
            return None
        return found if python.exists() else None

    # JSON turns the tuple into a list; compare like with like.
    want_json = json.loads(json.dumps(want))
    if current() == want_json:
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        found = current()
        if found == want_json:  # another caller installed it while we waited
            return python
        log = venv.parent / f"{venv.name}-pip.log"
        same_python = (
            found is not None
            and found.get("python") == want["python"]
            and found.get("executable") == want["executable"]
        )
        if not same_python:
            _log(f"creating {venv} with {sys.executable}")
            stamp.unlink(missing_ok=True)
            _run([sys.executable, "-m", "venv", "--clear", str(venv)], "venv creation", log)
        _log(f"installing {' '.join(REQUIREMENTS)} into {venv}")
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
        _run([*pip, *REQUIREMENTS], f"pip install {' '.join(REQUIREMENTS)}", log)
        stamp.write_text(json.dumps(want, indent=2))
        _log("peer venv ready")
    return python


if __name__ == "__main__":
    try:
        print(ensure_langgraph_venv())
    except PeerEnvError as exc:
        sys.exit(f"error: {exc}")
