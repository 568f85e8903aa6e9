"""The small steps the orchestration patterns add around their agents.

Async functions, so they run on the event loop rather than in the thread pool (referenced from
YAML as ``converge.orchestration.patterns:<name>``):

- ``collect``: ``{node id: output}`` of every input (a fan-out's default merge);
- ``forward``: its only input, as is (a supervisor's ``done``);
- ``first_present``: the first input that is not ``MISSING`` (the join after a router);
- ``gather``: its first input is an assignment ``{worker: part}``, the rest the workers'
  outputs (``<worker>.output``): ``{worker: output}`` of the workers assigned this round;
- ``majority``, ``unanimous``: rules a jury's verdict node runs over the jurors' votes.

The checking steps, which must know the names they accept, are kinds
(``converge.orchestration.kinds.pattern_checks``: ``Assign``, ``UnknownRouteGuard``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from converge.errors import ValidationError
from converge.orchestration._refs import MISSING

__all__ = [
    "collect",
    "first_present",
    "forward",
    "gather",
    "majority",
    "node_of",
    "unanimous",
]


def node_of(key: str) -> str:
    """``"writer.output.x"`` -> ``"writer"``; a graph input's name stays as is."""
    return key.split(".", 1)[0]


async def collect(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """``{node id: output}`` for every input that is there (``MISSING`` ones are left out)."""
    return {node_of(key): value for key, value in inputs.items() if value is not MISSING}


async def forward(inputs: Mapping[str, Any]) -> Any:
    """The node's only input, as is."""
    if len(inputs) != 1:
        raise ValidationError(f"forward takes exactly one input, not {sorted(inputs)}")
    return next(iter(inputs.values()))


async def first_present(inputs: Mapping[str, Any]) -> Any:
    """The first input (in the order the node's inputs are written) that is not ``MISSING``."""
    for value in inputs.values():
        if value is not MISSING:
            return value
    return None


async def gather(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """``{worker: output}`` of the workers assigned this round.

    The first input is the assignment ``{worker: part}``; the others are ``<worker>.output``.
    Workers not assigned this round are left out, although an earlier round's output of theirs
    is still readable.
    """
    values = iter(inputs.items())
    _, assignment = next(values, ("", MISSING))
    if not isinstance(assignment, Mapping):
        raise ValidationError(f"gather's first input is an assignment, not {assignment!r}")
    outputs = {node_of(key): value for key, value in values}
    return {worker: outputs.get(worker) for worker in assignment}


def _votes(inputs: Mapping[str, Any]) -> dict[str, Any]:
    votes = {node_of(key): value for key, value in inputs.items() if value is not MISSING}
    if not votes:
        raise ValidationError("a jury's verdict needs at least one vote")
    return votes


def _key(vote: Any) -> str:
    return repr(vote)  # votes may be unhashable (dicts); equal values have equal reprs here


async def majority(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The vote most jurors cast; a tie goes to the one cast first (in juror order).

    Returns ``{"verdict": vote, "votes": {juror: vote}, "count": n}``.
    """
    votes = _votes(inputs)
    counts = Counter(_key(v) for v in votes.values())
    best = max(counts.values())
    verdict = next(v for v in votes.values() if counts[_key(v)] == best)
    return {"verdict": verdict, "votes": votes, "count": best}


async def unanimous(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The vote every juror cast, or ``None`` when they disagree.

    Returns ``{"verdict": vote or None, "votes": {juror: vote}, "count": n}``.
    """
    votes = _votes(inputs)
    first = next(iter(votes.values()))
    agreed = all(_key(v) == _key(first) for v in votes.values())
    count = sum(_key(v) == _key(first) for v in votes.values())
    return {"verdict": first if agreed else None, "votes": votes, "count": count}
