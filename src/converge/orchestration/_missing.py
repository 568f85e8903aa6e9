"""Why a node's output holds ``MISSING`` (or a NaN), and where.

``MISSING`` cannot be stored, so an output holding it fails its node; so does returning
``MISSING`` itself (it would be logged as null, and a resumed run would read ``null`` where the
live run read ``MISSING``). The error names every place it sits (``output["x"][0]``; lists,
tuples, sets, msgspec structs and dataclasses are walked), the node's inputs that are
``MISSING`` and why — a node that did not run, followed back along its incoming edges to the
``when:`` that was false (or a gate that halted); a node skipped after it failed; a key an
output lacks; "has not run yet" for a later node of the same loop — or that no input was (its
agent made it), and the fix (``inputs.get("<ref>") or None``, or a default). Which input
produced it cannot be known (``MISSING`` is one object), so all that are ``MISSING`` are
listed. The engine asks for this explanation only after the output failed to encode, or when it
is ``MISSING`` itself, so outputs without it cost one identity test more.

A NaN or an infinity is refused too (``explain_nonfinite``), as in protocol objects: JSON has no
such number (``converge run --json`` would print invalid JSON), and a NaN equals nothing, not
even itself, so a replay, a resumed run's conditions or a consensus on the value could not
match what ran. It is told the same way: every place it sits (``output["score"] is NaN``,
``output[1] is -Infinity``; up to three, then a count) and what to return instead (None, or the
number as a string). The rule covers a person's answer (it becomes the output), a ``Halt``'s
output and each replacement node's output (that replacement fails); graph inputs holding one
are refused before the run starts (``ValidationError``, ``field="inputs"``). The output is
MessagePack-encoded anyway to check it is storable (not for None, bools, finite floats, 64-bit
ints, ASCII strings); its bytes are scanned for a float64 whose first byte is 0x7f or 0xff
(~0.1 µs), and only a hit walks the value. Like any unstorable output, it fails the run at once
(``node.failed``, then ``run.failed``), without the node's retry or ``on_error``: a retry would
return the same thing.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from converge.core.signing import maybe_nonfinite
from converge.orchestration._plan import ExecutionPlan, PlanNode
from converge.orchestration._refs import MISSING, Ref, resolve_path

__all__ = ["explain_missing", "explain_nonfinite", "missing_paths", "unstorable"]

_SHOWN = 3  # paths named in the message; more are counted

_encoder = msgspec.msgpack.Encoder()


def explain_nonfinite(value: Any, root: str = "output") -> str | None:
    """Where ``value`` (named ``root``) holds a NaN or an infinity, and why that is refused;
    None if it holds none. Call it when ``core.signing.maybe_nonfinite`` finds a hit in the
    value's MessagePack (about 0.1 µs): a hit may be a false one, inside a string or an int."""
    found = _paths(value, root, _nonfinite)
    if not found:
        return None
    where = ", ".join(f"{path} is {_number(item)}" for path, item in found[:_SHOWN])
    if len(found) > _SHOWN:
        where += f" and {len(found) - _SHOWN} more"
    return (
        f"{where}: a run holds no NaN or infinity (JSON has none, and a NaN equals nothing, "
        "so a replay or a condition could not match it). Use None, or the number as a "
        "string, in its place."
    )


def unstorable(value: Any, root: str = "output") -> str | None:
    """Why ``value`` cannot be stored as a node's output (``MISSING`` in it, a NaN or an
    infinity, a type MessagePack has no form for), or None if it can."""
    try:
        encoded = _encoder.encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        paths = missing_paths(value, root)
        if paths:
            verb = "is" if len(paths) == 1 else "are"
            return f"{', '.join(paths[:_SHOWN])} {verb} MISSING (a value that is not there)"
        return str(exc)
    return explain_nonfinite(value, root) if maybe_nonfinite(encoded) else None


def _nonfinite(item: Any) -> bool:
    return isinstance(item, float) and not math.isfinite(item)


def _number(value: float) -> str:
    return "NaN" if math.isnan(value) else ("-Infinity" if value < 0 else "Infinity")


def missing_paths(value: Any, root: str = "output") -> list[str]:
    """Where ``MISSING`` sits in ``value``, as Python would reach it (``output["x"][0]``), in
    the order the value is written; ``[root]`` if it is ``MISSING`` itself."""
    return [path for path, _ in _paths(value, root, _is_missing)]


def _is_missing(item: Any) -> bool:
    return item is MISSING


def _paths(value: Any, root: str, found_in: Callable[[Any], bool]) -> list[tuple[str, Any]]:
    """Where in ``value`` the items ``found_in`` picks sit, and each item, in written order."""
    found: list[tuple[str, Any]] = []
    seen: set[int] = set()  # containers already walked: a cycle is walked once
    stack: list[tuple[str, Any]] = [(root, value)]
    while stack:
        path, item = stack.pop()
        if found_in(item):
            found.append((path, item))
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
    plan: ExecutionPlan,
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
    ref: Ref, plan: ExecutionPlan, graph_inputs: Mapping[str, Any], outputs: Mapping[int, Any]
) -> Any:
    if ref.node is None:
        value = graph_inputs.get(ref.name, MISSING)
    else:
        value = outputs.get(plan.by_id[ref.node].index, MISSING)
    return resolve_path(value, ref.path) if ref.path else value


def _why(
    plan: ExecutionPlan,
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
    plan: ExecutionPlan,
    reader: PlanNode,
    node: PlanNode,
    outputs: Mapping[int, Any],
    seen: set[int],
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
