"""``MISSING``: the marker for a value that is not there.

It is told apart from ``None``.

A graph node receives it for an input that is not there (a skipped node's output, a part of an
output that does not exist, a node that has not run yet), and an agent compares with it
(``value is MISSING``). It lives here, below the packages that make it (orchestration) and the
ones that read it (agents' roles), so neither imports the other for it. It is falsy and cannot be
stored: an output holding it fails its node with a clear error rather than turning into null
(``orchestration._missing`` says where it sits and why). Only a node skipped by ``on_error:
skip`` has ``MISSING`` as its output.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MISSING", "Missing"]


class Missing:
    """The marker for a value that is not there (``MISSING``); falsy, equal only to itself."""

    _instance: Missing | None = None

    def __new__(cls) -> Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Final = Missing()
"""What a node receives for an input that is not there (a skipped node's output, a part of an
output that does not exist, a node that has not run yet)."""
