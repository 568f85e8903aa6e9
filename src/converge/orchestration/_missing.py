"""Why a node's output holds ``MISSING``: where in the output it sits, which of the node's inputs
were ``MISSING``, and why each was (a node that did not run and the condition that kept it
from running, a node skipped after it failed, a key an output lacks).

``MISSING`` cannot be stored, so an output holding it fails its node. The engine asks for this
explanation only then — after the output failed to encode, or when it is ``MISSING`` itself —
so outputs without it cost nothing more.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import msgspec

from converge.orchestration._plan import Plan, PlanNode
from converge.orchestration._refs import MISSING, Ref, resolve_path

__all__ = ["explain_missing", "missing_paths"]

_SHOWN = 3  # paths named in the message; more are counted


def missing_paths(value: Any, root: str = "output") -> list[str]:
    """Where ``MISSING`` sits in ``value``, as Python would reach it (``output["x"][0]``), in
    the order the value is written; ``[root]`` if it is ``MISSING`` itself."""
    found: list[str] = []
    seen: set[int] = set()  # containers already walked: a cycle is walked once
    stack: list[tuple[str, Any]] = [(root, value)]
    while stack:
        path, item = stack.pop()
        if item is MISSING:
            found.append(path)
            continue
        children = _children(path, item)
        if children and id(item) not in seen:
            seen.add(id(item))
            stack.extend(reversed(children))
    return found


def _children(path: str, item: Any) -> list[tuple[str, Any]]:
    if isinstance(item, (str, bytes, int, float, bool)) or item is None:
        return []  # the common leaves, before the costlier checks below
    if isinstance(item, Mapping):
        return [(f"{path}[{_key(k)}]", v) for k, v in item.items()]
    if isinstance(item, (list, tuple)):
        return [(f"{path}[{i}]", v) for i, v in enumerate(item)]
    if isinstance(item, (set, frozenset)):
        return [(f"{path} (a member)", v) for v in item]
    if isinstance(item, msgspec.Struct):
        return [(f"{path}.{f}", getattr(item, f)) for f in item.__struct_fields__]
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return [(f"{path}.{f.name}", getattr(item, f.name)) for f in dataclasses.fields(item)]
    return []


def _key(key: Any) -> str:
    return json.dumps(key) if isinstance(key, str) else repr(key)


def explain_missing(
    plan: Plan,
    node: PlanNode,
    output: Any,
    graph_inputs: Mapping[str, Any],
    outputs: Mapping[int, Any],
) -> str | None:
    """Why ``node``'s ``output`` cannot be stored, if it is because it holds ``MISSING``: where,
    which inputs were ``MISSING`` and why, and how to give a value instead. None if ``output``
    holds no ``MISSING``.

    Args:
        plan: the run's plan.
        node: the node whose output it is.
        output: what it returned.
        graph_inputs: the run's graph inputs.
        outputs: the latest output of every node that has run, by node index.
    """
    paths = missing_paths(output)
    if not paths:
        return None
    if paths == ["output"]:
        text = "its output is MISSING (a value that is not there)."
    else:
        where = ", ".join(paths[:_SHOWN])
        if len(paths) > _SHOWN:
            where += f" and {len(paths) - _SHOWN} more"
        verb = "is" if len(paths) == 1 else "are"
        text = f"{where} {verb} MISSING (a value that is not there)."
    absent = [
        (ref, _why(plan, node, ref, graph_inputs, outputs))
        for ref in node.inputs
        if _value(ref, plan, graph_inputs, outputs) is MISSING
    ]
    if not absent:
        return (
            f"{text} None of the node's inputs is MISSING: its agent put it there. "
            "Return None or a default in its place."
        )
    if len(absent) == 1:
        ref, why = absent[0]
        text += f" The node's input {ref.text!r} is MISSING: {why}."
    else:
        listed = "; ".join(f"{ref.text!r}: {why}" for ref, why in absent)
        text += f" The node's inputs that are MISSING: {listed}."
    key = json.dumps(absent[0][0].text)
    return f"{text} Put a value in its place: inputs.get({key}) or None, or a default."


def _value(
    ref: Ref, plan: Plan, graph_inputs: Mapping[str, Any], outputs: Mapping[int, Any]
) -> Any:
    if ref.node is None:
        value = graph_inputs.get(ref.name, MISSING)
    else:
        value = outputs.get(plan.by_id[ref.node].index, MISSING)
    return resolve_path(value, ref.path) if ref.path else value


def _why(
    plan: Plan,
    reader: PlanNode,
    ref: Ref,
    graph_inputs: Mapping[str, Any],
    outputs: Mapping[int, Any],
) -> str:
    if ref.node is None:
        if ref.name not in graph_inputs:
            return f"the graph input {ref.name!r} was not given"
        return _lacks(f"the graph input {ref.name!r}", graph_inputs[ref.name], ref.path)
    source = plan.by_id[ref.node]
    if source.index not in outputs:
        return _not_run(plan, reader, source, outputs, set())
    value = outputs[source.index]
    if value is MISSING:
        return f"node {source.id!r} failed and was skipped (on_error: skip)"
    return _lacks(f"node {source.id!r} ran, but its output", value, ref.path)


def _lacks(what: str, value: Any, path: tuple[str, ...]) -> str:
    for i in range(len(path)):
        if resolve_path(value, path[: i + 1]) is MISSING:
            return f"{what} has nothing at {'.'.join(path[: i + 1])!r}"
    return f"{what} has nothing at {'.'.join(path)!r}"


def _not_run(
    plan: Plan, reader: PlanNode, node: PlanNode, outputs: Mapping[int, Any], seen: set[int]
) -> str:
    """Why ``node`` has not run: the edges into it that were not taken, followed back to the
    conditions that were false (or the gates that halted)."""
    seen.add(node.index)
    if node.cyclic and node.loop == reader.loop:
        return f"node {node.id!r} has not run yet (it comes later in the loop)"
    reasons: list[str] = []
    for edge in node.in_edges:
        if edge.back:
            continue
        source = plan.nodes[edge.source]
        if source.index not in outputs:
            if source.index not in seen:
                reasons.append(_not_run(plan, reader, source, outputs, seen))
        elif edge.when is not None:
            reasons.append(
                f"the condition on its edge from {source.id!r} did not hold: {edge.when.source}"
            )
        else:
            reasons.append(f"node {source.id!r} before it halted (took none of its edges)")
    if not reasons:
        return f"node {node.id!r} has not run"
    return f"node {node.id!r} did not run ({'; '.join(reasons)})"
