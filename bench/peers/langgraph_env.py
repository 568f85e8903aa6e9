"""The virtual environment the LangGraph peer benchmarks run in.

LangGraph is not a dependency of converge, so its benchmarks run in a venv of their own,
``.venv-peers/langgraph`` (``peer_venv``): ``ensure_langgraph_venv()`` pip-installs
``REQUIREMENTS`` the first time, and again only when the list changes.

Run: ``.venv/bin/python bench/peers/langgraph_env.py`` prints the venv's python on stdout.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:  # imported as ``peers.langgraph_env``
    from .peer_venv import PeerEnvError, ensure_venv
except ImportError:  # run as a script: this folder is sys.path[0]
    from peer_venv import PeerEnvError, ensure_venv

__all__ = ["REQUIREMENTS", "VENV_DIR", "PeerEnvError", "ensure_langgraph_venv"]

# Lower bounds are the versions the cases were written against; the upper bounds keep a new
# major version, which may change the API, from slipping into a figure unnoticed.
REQUIREMENTS = ("langgraph>=1.2,<2", "langgraph-checkpoint-sqlite>=3.1,<4")
VENV_DIR = Path(__file__).resolve().parents[2] / ".venv-peers" / "langgraph"


def ensure_langgraph_venv(venv: Path = VENV_DIR) -> Path:
    """Make sure ``venv`` exists with ``REQUIREMENTS`` installed; return its python.

    A venv made by another Python is rebuilt; a changed requirement list is installed over the
    existing one (``peer_venv.ensure_venv``).

    Raises:
        PeerEnvError: creating the venv or installing the packages failed.
    """
    holds = {"requirements": REQUIREMENTS}
    return ensure_venv(venv, holds, [REQUIREMENTS], keep_same_python=True)


if __name__ == "__main__":
    try:
        print(ensure_langgraph_venv())
    except PeerEnvError as exc:
        sys.exit(f"error: {exc}")
