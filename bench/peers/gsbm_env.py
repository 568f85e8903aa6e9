"""The virtual environment the gsbm/converge peer benchmarks run in.

gsbm/converge (the system seeds 000 and 001 document) is GPL-3.0 and shares our import name
``converge``, so it is never installed beside converge: it goes into a venv of its own,
``.venv-peers/gsbm`` at the repository root (gitignored), made with the caller's Python, and is
driven from a separate process. Its source is the archive ``gsbm-converge.tar.gz``, found at
``$CONVERGE_GSBM_SOURCE`` or in a ``shared/peers/`` folder beside (or above) the repository.

The archive declares ``asyncio`` as a dependency, which on the package registry is an old
backport that would shadow nothing useful: the venv gets the archive with ``--no-deps`` and
its three real dependencies (``DEPENDENCIES``) on their own. The stamp (``peer_venv``) is keyed
by the archive's size and time and the dependency list.
Nothing is printed on stdout (the benchmarks' JSON lines go there): progress goes to stderr.

Run: ``.venv/bin/python bench/peers/gsbm_env.py`` prints the venv's python on stdout.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

try:  # imported as ``peers.gsbm_env``
    from .peer_venv import PeerEnvError, ensure_venv
except ImportError:  # run as a script: this folder is sys.path[0]
    from peer_venv import PeerEnvError, ensure_venv

__all__ = ["DEPENDENCIES", "VENV_DIR", "GsbmEnvError", "ensure_gsbm_venv", "gsbm_source"]

DEPENDENCIES = ("cryptography>=41", "pydantic>=2,<3", "msgpack>=1")
ROOT = Path(__file__).resolve().parents[2]
VENV_DIR = ROOT / ".venv-peers" / "gsbm"
ARCHIVE = "gsbm-converge.tar.gz"


class GsbmEnvError(PeerEnvError):
    """The gsbm/converge source archive was not found."""


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


def ensure_gsbm_venv(venv: Path = VENV_DIR) -> Path:
    """Make sure ``venv`` holds gsbm/converge and its dependencies; return its python.

    Raises:
        PeerEnvError: no source archive (``GsbmEnvError``), or creating the venv or installing
            failed.
    """
    source = gsbm_source()
    info = source.stat()
    holds = {
        "source": [str(source), info.st_size, int(info.st_mtime)],
        "dependencies": list(DEPENDENCIES),
    }
    return ensure_venv(venv, holds, [DEPENDENCIES, ["--no-deps", str(source)]])


if __name__ == "__main__":
    try:
        print(ensure_gsbm_venv())
    except PeerEnvError as exc:
        sys.exit(f"error: {exc}")
