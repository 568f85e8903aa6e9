"""A run's coordination graph (``run_graph``) as Mermaid flowchart text, Graphviz DOT text, or
a rich tree for the terminal.

Nodes of a subgraph's child run are drawn inside a ``subgraph`` (Mermaid) or ``cluster``
(DOT) named for the subgraph node; coordination objects hang off the node they belong to
(dashed), or off the run when no node claims them.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["STATUS_COLOURS", "render_dot", "render_mermaid", "render_tree"]

STATUS_COLOURS = {
    "success": "#2e7d32",
    "completed": "#2e7d32",
    "fallback": "#f9a825",
    "answered": "#0277bd",
    "replanned": "#6a1b9a",
    "halted": "#00838f",
    "skipped": "#9e9e9e",
    "failed": "#c62828",
    "waiting": "#ef6c00",
    "running": "#1565c0",
}
"""The fill of a node by its trace status (shared by every renderer)."""

_NOTE = 'shape=note, style=filled, fillcolor="#eeeeee", fontcolor=black'
_RICH = {"success": "green", "failed": "bold red", "skipped": "dim", "waiting": "yellow"}


def _key(node_id: str) -> str:
    """A node id as an identifier both Mermaid and DOT accept."""
    return "n_" + re.sub(r"[^0-9A-Za-z_]", "_", node_id)


def _label(row: dict[str, Any]) -> str:
    name = row["node_id"].rsplit("/", 1)[-1]
    ms = row["latency_ms"]
    timing = f"{ms:.0f} ms" if ms is not None else "-"
    return f"{name} · {row['agent']} · {row['status']} · {timing}"


def _unique(graph: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per node id: its latest pass."""
    latest: dict[str, dict[str, Any]] = {}
    for row in graph["nodes"]:
        latest[row["node_id"]] = row
    return list(latest.values())


def _groups(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows by the subgraph path that holds them (``""`` for the run's own nodes)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["node_id"].rpartition("/")[0], []).append(row)
    return groups


def render_mermaid(graph: dict[str, Any]) -> str:
    """Mermaid ``flowchart LR`` text of the run's nodes, edges and coordination objects."""
    out = ["flowchart LR", f"  %% run {graph['trace_id']} of graph {graph['graph_id']}"]
    rows = _unique(graph)
    for path, members in sorted(_groups(rows).items()):
        indent = "  "
        if path:
            out.append(f'  subgraph {_key("sub_" + path)}["{_esc_m(path)} (subgraph)"]')
            indent = "    "
        out.extend(f'{indent}{_key(r["node_id"])}["{_esc_m(_label(r))}"]' for r in members)
        if path:
            out.append("  end")
    out.extend(f"  {_key(e['from'])} --> {_key(e['to'])}" for e in graph["edges"])
    for i, obj in enumerate(graph["coordination"]):
        key = f"c_{i}"
        out.append(f'  {key}(["{_esc_m(obj["type"])}: {_esc_m(_short(obj))}"])')
        if obj["node"] is not None:
            out.append(f"  {_key(obj['node'])} -.- {key}")
    for status, colour in STATUS_COLOURS.items():
        keys = [_key(r["node_id"]) for r in rows if r["status"] == status]
        if keys:
            out.append(f"  classDef {status} fill:{colour},color:#fff")
            out.append(f"  class {','.join(keys)} {status}")
    return "\n".join(out) + "\n"


def render_dot(graph: dict[str, Any]) -> str:
    """Graphviz DOT text of the run's nodes, edges and coordination objects."""
    out = [
        "digraph run {",
        "  rankdir=LR;",
        f"  label={_q(_title(graph))};",
        '  node [shape=box, style="rounded,filled", fontcolor=white, fontname="Helvetica"];',
    ]
    rows = _unique(graph)
    for path, members in sorted(_groups(rows).items()):
        indent = "  "
        if path:
            out.append(f"  subgraph cluster_{_key(path)} {{")
            out.append(f"    label={_q(path + ' (subgraph)')};")
            indent = "    "
        for r in members:
            colour = STATUS_COLOURS.get(r["status"], "#616161")
            attrs = f"label={_q(_label(r))}, fillcolor={_q(colour)}"
            out.append(f"{indent}{_key(r['node_id'])} [{attrs}];")
        if path:
            out.append("  }")
    out.extend(f"  {_key(e['from'])} -> {_key(e['to'])};" for e in graph["edges"])
    for i, obj in enumerate(graph["coordination"]):
        key = f"c_{i}"
        label = f"{obj['type']}: {_short(obj)}"
        out.append(f"  {key} [label={_q(label)}, {_NOTE}];")
        if obj["node"] is not None:
            out.append(f"  {_key(obj['node'])} -> {key} [style=dashed, arrowhead=none];")
    out.append("}")
    return "\n".join(out) + "\n"


def render_tree(graph: dict[str, Any]) -> Any:
    """A ``rich.tree.Tree``: the run, its nodes (a subgraph's nested under it), each with the
    coordination objects it holds, then the agents."""
    from rich.text import Text
    from rich.tree import Tree

    head = Text.assemble(
        ("run ", "bold"),
        (graph["trace_id"], "bold cyan"),
        f"  graph {graph['graph_id']}  ",
        (graph["status"], _RICH.get(graph["status"], "")),
        f"  {graph['duration_ms']:.1f} ms  tokens {graph['total_tokens']}"
        f"  cost {graph['total_cost']:g}",
    )
    tree = Tree(head)
    branches: dict[str, Any] = {"": tree}
    objects: dict[str | None, list[dict[str, Any]]] = {}
    for obj in graph["coordination"]:
        objects.setdefault(obj["node"], []).append(obj)
    for row in graph["nodes"]:
        path, _, name = row["node_id"].rpartition("/")
        holder = branches.get(path) or tree
        ms = row["latency_ms"]
        label = Text.assemble(
            (name, "bold"),
            f"#{row['iteration']} " if row["iteration"] > 1 else " ",
            (f"[{row['agent']}] ", "cyan"),
            (row["status"], _RICH.get(row["status"], "")),
            f"  {ms:.1f} ms" if ms is not None else "",
            f"  tokens {row['tokens_in']}+{row['tokens_out']}" if row["tokens_in"] else "",
            f"  tools {row['tool_calls']}" if row["tool_calls"] else "",
            f"  attempts {row['attempts']}" if row["attempts"] > 1 else "",
        )
        branch = holder.add(label)
        branches[row["node_id"]] = branch
        for obj in objects.pop(row["node_id"], []):
            branch.add(_obj_text(obj))
    rest = [o for objs in objects.values() for o in objs]
    if rest:
        other = tree.add(Text("coordination", style="bold"))
        for obj in rest:
            other.add(_obj_text(obj))
    if graph["agents"]:
        agents = tree.add(Text("agents", style="bold"))
        for a in graph["agents"]:
            agents.add(
                f"{a['agent']}: {a['nodes']} node(s), tokens {a['tokens']}, "
                f"tools {a['tool_calls']}, cost {a['cost']:g}"
            )
    return tree


def _obj_text(obj: dict[str, Any]) -> Any:
    from rich.text import Text

    ms = obj["latency_ms"]
    return Text.assemble(
        (f"{obj['type']} ", "magenta"),
        _short(obj),
        f"  {obj['status']}",
        f"  {ms:.1f} ms" if ms is not None else "",
    )


def _short(obj: dict[str, Any]) -> str:
    """An object's id, shortened, with its most telling detail."""
    oid = obj["id"]
    oid = oid if len(oid) <= 28 else f"…{oid[-24:]}"
    detail = obj["detail"]
    for key in ("winner", "provider", "option", "agent", "capability", "question"):
        value = detail.get(key)
        if isinstance(value, str) and value:
            value = value if len(value) <= 24 else f"{value[:12]}…{value[-6:]}"
            return f"{oid} ({key} {value})"
    return oid


def _title(graph: dict[str, Any]) -> str:
    return f"run {graph['trace_id']} ({graph['graph_id']}): {graph['status']}"


def _q(text: str) -> str:
    """A DOT quoted string."""
    return json.dumps(text, ensure_ascii=False)


def _esc_m(text: str) -> str:
    """Text safe inside a Mermaid ``["…"]`` label."""
    return text.replace('"', "#quot;")
