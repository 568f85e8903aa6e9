"""The checking steps of the orchestration patterns, as kinds.

The checking steps the orchestration patterns add, as kinds, because they must know the
names they accept (``{kind: assign, workers: [...]}``, ``{kind: unknown_route, routes: [...]}``):

- ``Assign``: checks a supervisor's output and passes its assignment on;
- ``UnknownRouteGuard``: reached only when a router chose no known route; it fails the run
  with ``UnknownRoute`` naming the choices.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from converge.errors import UnknownRoute, ValidationError
from converge.orchestration._patterns_steps import node_of
from converge.orchestration._refs import MISSING
from converge.orchestration.kinds import Kind, KindContext

__all__ = ["ASSIGN", "UNKNOWN_ROUTE", "Assign", "UnknownRouteGuard"]


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
        chooser = node_of(key)
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
        raise UnknownRoute(node_of(key), choice, self.routes)

    def __repr__(self) -> str:
        return f"UnknownRouteGuard({list(self.routes)!r})"


def _names(ctx: KindContext, options: Mapping[str, Any], key: str) -> list[str]:
    found = ctx.options(options, (key,), required=(key,))
    names = found[key]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise ctx.fail(f"{key} is a non-empty list of node ids, not {names!r}", key)
    return names


ASSIGN = Kind(
    "assign",
    lambda options, ctx: Assign(_names(ctx, options, "workers")),
    options={"workers": "The worker node ids a supervisor may assign parts to."},
    required=("workers",),
    doc="The supervisor pattern's check: passes a valid assignment on, refuses unknown workers.",
)
UNKNOWN_ROUTE = Kind(
    "unknown_route",
    lambda options, ctx: UnknownRouteGuard(_names(ctx, options, "routes")),
    options={"routes": "The route names the router may choose."},
    required=("routes",),
    doc="The router pattern's guard: fails the run with ``UnknownRoute`` naming the routes.",
)
