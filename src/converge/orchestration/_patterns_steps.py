"""The small steps the orchestration patterns add around their agents, and their YAML kinds.

Async functions, so they run on the event loop rather than in the thread pool (referenced from
YAML as ``converge.orchestration.patterns:<name>``):

- ``collect``: ``{node id: output}`` of every input (a fan-out's default merge);
- ``forward``: its only input, as is (a supervisor's ``done``);
- ``first_present``: the first input that is not ``MISSING`` (the join after a router);
- ``gather``: its first input is an assignment ``{worker: part}``, the rest the workers'
  outputs (``<worker>.output``): ``{worker: output}`` of the workers assigned this round;
- ``majority``, ``unanimous``: rules a jury's verdict node runs over the jurors' votes.

Checking steps, each with a kind (``{kind: assign, workers: [...]}``,
``{kind: unknown_route, routes: [...]}``), because they must know the names they accept:

- ``Assign``: checks a supervisor's output and passes its assignment on;
- ``UnknownRouteGuard``: reached only when a router chose no known route; it fails the run
  with ``UnknownRoute`` naming the choices.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from converge.errors import OrchestrationError, ValidationError
from converge.orchestration._refs import MISSING
from converge.orchestration.kinds import KindContext, register_kind

__all__ = [
    "Assign",
    "UnknownRoute",
    "UnknownRouteGuard",
    "collect",
    "first_present",
    "forward",
    "gather",
    "majority",
    "unanimous",
]


class UnknownRoute(OrchestrationError, LookupError):
    """A router (or a supervisor) chose a route (or a worker) the graph does not have.

    Attributes:
        chooser: the id of the node that chose.
        choice: what it chose.
        choices: the names it may choose from.
    """

    def __init__(self, chooser: str, choice: Any, choices: Iterable[str]) -> None:
        self.chooser = chooser
        self.choice = choice
        self.choices = tuple(choices)
        super().__init__(
            f"{chooser!r} chose {choice!r}, which is not one of its choices: "
            f"{', '.join(self.choices)}"
        )


def _node(key: str) -> str:
    """``"writer.output.x"`` -> ``"writer"``; a graph input's name stays as is."""
    return key.split(".", 1)[0]


async def collect(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """``{node id: output}`` for every input that is there (``MISSING`` ones are left out)."""
    return {_node(key): value for key, value in inputs.items() if value is not MISSING}


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
    outputs = {_node(key): value for key, value in values}
    return {worker: outputs.get(worker) for worker in assignment}


def _votes(inputs: Mapping[str, Any]) -> dict[str, Any]:
    votes = {_node(key): value for key, value in inputs.items() if value is not MISSING}
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


class Assign:
    """Checks a supervisor's output and passes its assignment on.

    The supervisor returns ``{"assign": {worker: part, ...}}`` (at least one known worker) or
    ``{"done": result}``; this step runs only on the former (the graph routes ``done`` past it)
    and returns the assignment.

    Args:
        workers: the worker ids the supervisor may assign to.
    """

    def __init__(self, workers: Iterable[str]) -> None:
        self.workers = tuple(workers)
        self.name = "assign"

    async def __call__(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        if len(inputs) != 1:
            raise ValidationError(
                f"assign reads the supervisor's output alone, not {sorted(inputs)}"
            )
        key, output = next(iter(inputs.items()))
        chooser = _node(key)
        assignment = output.get("assign") if isinstance(output, Mapping) else None
        if not isinstance(assignment, Mapping) or not assignment:
            raise ValidationError(
                f"supervisor {chooser!r} must return {{'assign': {{worker: part, ...}}}} with "
                f"at least one worker, or {{'done': result}}; it returned {output!r}"
            )
        for worker in assignment:
            if worker not in self.workers:
                raise UnknownRoute(chooser, worker, self.workers)
        return dict(assignment)

    def __repr__(self) -> str:
        return f"Assign({list(self.workers)!r})"


class UnknownRouteGuard:
    """Reached when a router's output names no route: fails the run with ``UnknownRoute``.

    Args:
        routes: the route names the router may choose.
    """

    def __init__(self, routes: Iterable[str]) -> None:
        self.routes = tuple(routes)
        self.name = "unknown_route"

    async def __call__(self, inputs: Mapping[str, Any]) -> Any:
        key, choice = next(iter(inputs.items()), ("router", MISSING))
        raise UnknownRoute(_node(key), choice, self.routes)

    def __repr__(self) -> str:
        return f"UnknownRouteGuard({list(self.routes)!r})"


def _names(ctx: KindContext, options: Mapping[str, Any], key: str) -> list[str]:
    found = ctx.options(options, (key,), required=(key,))
    names = found[key]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise ctx.fail(f"{key} is a non-empty list of node ids, not {names!r}", key)
    return names


register_kind(
    "assign",
    lambda options, ctx: Assign(_names(ctx, options, "workers")),
    options={"workers": "The worker node ids a supervisor may assign parts to."},
    required=("workers",),
    doc="The supervisor pattern's check: passes a valid assignment on, refuses unknown workers.",
)
register_kind(
    "unknown_route",
    lambda options, ctx: UnknownRouteGuard(_names(ctx, options, "routes")),
    options={"routes": "The route names the router may choose."},
    required=("routes",),
    doc="The router pattern's guard: fails the run with ``UnknownRoute`` naming the routes.",
)
