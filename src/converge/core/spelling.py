"""Suggestions for a misspelt name: ``did you mean 'trend'?``.

An error that names something unknown — a node an input reads, an agent a node names, a run id
given to the CLI — ends with the closest known name when one is close enough (``difflib``'s
ratio of at least 0.6, its default), so a typo is fixed from the message alone. Only the best
match is offered: a list of guesses reads as noise.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["did_you_mean"]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the known name closest to ``name``, or ``""`` if none is
    close (or ``name`` is itself known)."""
    candidates = [k for k in known if isinstance(k, str)]
    if not isinstance(name, str) or name in candidates:
        return ""
    found = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean {found[0]!r}?)" if found else ""
