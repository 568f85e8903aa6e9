"""``Subgraph``: another graph as a node (``kind: subgraph``).

The child graph runs as a run of its own whose id is the node's idempotency key
(``<run>/<node>/<iteration>``), in the parent's trace: its checkpoints, events and trace nodes
(``<node>/<child node>``) sit inside the parent run's. Retried or resumed, the node continues
that same child run, so what finished inside it does not run again; a child that waits for a
person makes the node wait with its question.

Inputs: by default the child's graph inputs are the node's inputs, each named by its
reference (``topic`` stays ``topic``; ``analyzer.output`` becomes ``analyzer``;
``analyzer.output.summary`` becomes ``summary``). ``inputs={"code": "analyzer.output"}`` names
them explicitly (child input <- the node's input reference).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from converge.errors import ValidationError
from converge.orchestration._context import NodeContext
from converge.orchestration._refs import MISSING
from converge.orchestration.graph import Graph
from converge.orchestration.kinds import Kind, KindContext

__all__ = ["KIND", "Subgraph"]


class Subgraph:
    """A graph run as one node of another.

    Args:
        graph: the child graph.
        inputs: child input name -> the node's input reference (default: see module doc).
    """

    def __init__(self, graph: Graph, *, inputs: Mapping[str, str] | None = None) -> None:
        if not isinstance(graph, Graph):
            raise ValidationError(f"a subgraph is a Graph, not {type(graph).__name__}")
        self.graph = graph
        self.inputs = dict(inputs) if inputs is not None else None
        self.name = graph.name
        graph.compile()

    async def __call__(self, inputs: dict[str, Any], ctx: NodeContext) -> Any:
        return await ctx.run_graph(self.graph, self.child_inputs(inputs))

    def child_inputs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The child run's graph inputs made from the node's inputs.

        Raises:
            ValidationError: a mapped input the node does not read, or a child input that is
                ``MISSING`` (a run's inputs are stored, and ``MISSING`` cannot be).
        """
        if self.inputs is not None:
            missing = [ref for ref in self.inputs.values() if ref not in inputs]
            if missing:
                raise ValidationError(
                    f"subgraph {self.name!r} maps inputs the node does not read: "
                    f"{', '.join(missing)}",
                    field="inputs",
                )
            sources = dict(self.inputs)
        else:
            sources = {}
            for key in inputs:
                parts = key.split(".")
                sources[parts[0] if len(parts) <= 2 else parts[-1]] = key
        out = {name: inputs[ref] for name, ref in sources.items()}
        for name, value in out.items():
            if value is MISSING:
                ref = sources[name]
                raise ValidationError(
                    f"subgraph {self.name!r} would get MISSING as its input {name!r}: the "
                    f"node's input {ref!r} is not there (a node that did not run or was "
                    "skipped, or a key its output lacks), and a run's inputs are stored: put "
                    "a value in its place (a node before it that returns a default)",
                    field=f"inputs.{name}",
                )
        return out

    def __repr__(self) -> str:
        return f"Subgraph({self.name!r})"


_OPTIONS = {
    "graph": "Path of the child graph's YAML file, relative to this file.",
    "inputs": "Maps the child's input names to this node's input references "
    "(default: each input under its last name).",
}


def _read(options: Mapping[str, Any], ctx: KindContext) -> Subgraph:
    from converge.orchestration.yaml_loader import load_graph, nesting_problem

    found = ctx.options(options, _OPTIONS, required=("graph",))
    path = found["graph"]
    if not isinstance(path, str) or not path:
        raise ctx.fail(f"graph is the path of a YAML graph, not {path!r}", "graph")
    problem = nesting_problem(ctx.base / path)
    if problem is not None:
        raise ctx.fail(problem, "graph")
    mapping = found.get("inputs")
    if mapping is not None and (
        not isinstance(mapping, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items())
    ):
        raise ctx.fail("inputs maps child input names to the node's input references", "inputs")
    return Subgraph(load_graph(ctx.base / path, agents=ctx.agents), inputs=mapping)


KIND = Kind(
    "subgraph",
    _read,
    options=_OPTIONS,
    required=("graph",),
    doc="Runs another YAML graph as a child run; its output is the node's output.",
)
