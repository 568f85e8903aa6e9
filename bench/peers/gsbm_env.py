"""The virtual environment the gsbm/converge peer benchmarks run in.

gsbm/converge (the system seeds 000 and 001 document) is GPL-3.0 and shares our import name
``converge``, so it is never installed beside converge: it goes into a venv of its own,
``.venv-peers/gsbm`` at the repository root (gitignored), made with the caller's Python, and is
driven from a separate process. Its source is the archive ``gsbm-converge.tar.gz``, found at
``$CONVERGE_GSBM_SOURCE`` or in a ``shared/peers/`` folder beside (or above) the repository.

The archive declares ``asyncio`` as a dependency, which on the package registry is an old
backport that would shadow nothing useful: the venv gets the archive with ``--no-deps`` and
its three real dependencies (``DEPENDENCIES``) on their own. A stamp file keyed by the Python,
the archive's size and time and the dependency list makes a second call a few ``stat`` calls.
Nothing is printed on stdout (the benchmarks' JSON lines go there): progress goes to stderr.

Run: ``.venv/bin/python bench/peers/gsbm_env.py`` prints the venv's python on stdout.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["DEPENDENCIES", "VENV_DIR", "GsbmEnvError", "ensure_gsbm_venv", "gsbm_source"]

DEPENDENCIES = ("cryptography>=41", "pydantic>=2,<3", "msgpack>=1")
ROOT = Path(__file__).resolve().parents[2]
VENV_DIR = ROOT / ".venv-peers" / "gsbm"
ARCHIVE = "gsbm-converge.tar.gz"
_STAMP = ".converge-peer-stamp.json"
_PIP_TIMEOUT_S = 900


class GsbmEnvError(RuntimeError):
    """The peer's source was not found, or its venv could not be made."""


def gsbm_source() -> Path:
    """The gsbm/converge archive: ``$CONVERGE_GSBM_SOURCE``, else ``shared/peers/`` in a parent
    of the repository.

    Raises:
        GsbmEnvError: it is nowhere to be found.
    """
    given = os.environ.get("CONVERGE_GSBM_SOURCE")
    if given:
        path = Path(given)
        if not path.is_file():
            raise GsbmEnvError(f"CONVERGE_GSBM_SOURCE={given} is not a file")
        return path
    for parent in ROOT.parents:
        candidate = parent / "shared" / "peers" / ARCHIVE
        if candidate.is_file():
            return candidate
    raise GsbmEnvError(
        f"{ARCHIVE} not found in a shared/peers/ folder above {ROOT}; "
        "set CONVERGE_GSBM_SOURCE to its path"
    )


def _python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def _log(message: str) -> None:
    print(f"[peers] {message}", file=sys.stderr, flush=True)


def _run(args: list[str], what: str, log: Path) -> None:
    """Run ``args``; on failure raise ``GsbmEnvError`` with one line naming ``what`` and why."""
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
        raise GsbmEnvError(f"{what} timed out after {_PIP_TIMEOUT_S} s") from exc
    except OSError as exc:
        raise GsbmEnvError(f"{what} could not start: {exc}") from exc
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(done.stdout)
    if done.returncode != 0:
        lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")]
        reason = (errors or lines or ["no output"])[-1]
        raise GsbmEnvError(f"{what} failed (exit {done.returncode}): {reason} (log: {log})")


def ensure_gsbm_venv(venv: Path = VENV_DIR) -> Path:
    """Make sure ``venv`` holds gsbm/converge and its dependencies; return its python.

    Idempotent, and guarded by a lock file so that two callers do not install at once.

    Raises:
        GsbmEnvError: no source archive, or creating the venv or installing failed.
    """
    source = gsbm_source()
    python = _python(venv)
    info = source.stat()
    want = {
        "python": sys.version,
        "executable": str(Path(sys.executable).resolve()),
        "source": [str(source), info.st_size, int(info.st_mtime)],
        "dependencies": list(DEPENDENCIES),
    }
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
        if current() == want:  # another caller installed it while we waited
            return python
        log = venv.parent / f"{venv.name}-pip.log"
        _log(f"creating {venv} with {sys.executable}")
        stamp.unlink(missing_ok=True)
        _run([sys.executable, "-m", "venv", "--clear", str(venv)], "venv creation", log)
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
        _log(f"installing {' '.join(DEPENDENCIES)} and {source.name} into {venv}")
        _run([*pip, *DEPENDENCIES], f"pip install {' '.join(DEPENDENCIES)}", log)
        _run([*pip, "--no-deps", str(source)], f"pip install {source.name}", log)
        stamp.write_text(json.dumps(want, indent=2))
        _log("peer venv ready")
    return python


if __name__ == "__main__":
    try:
        print(ensure_gsbm_venv())
    except GsbmEnvError as exc:
        sys.exit(f"error: {exc}")
