"""A run's coordination graph as Mermaid, DOT or a terminal tree.

``run_graph`` as Mermaid flowchart text, Graphviz DOT text, or a rich tree.

Nodes of a subgraph's child run are drawn inside a ``subgraph`` (Mermaid) or ``cluster``
(DOT) named for the subgraph node; coordination objects hang off the node they belong to
(dashed), or off the run when no node claims them.

Every name and detail comes from the log, so it is written so it can only be text: Mermaid and
DOT identifiers are ``n_`` (nodes), ``s_`` / ``cluster_n_`` (subgraphs) or ``c_`` (objects) plus
the name with ASCII letters and digits kept, ``_`` doubled and any other character written
``_<hex>_`` — only ``[0-9A-Za-z_]``, and one id per name (``a-b`` and ``a_b`` do not share
one) (``_key``); a Mermaid
label or comment keeps letters, digits, spaces and a few punctuation marks and writes every
other character as a Mermaid entity code (``#34;``), so no quote, newline, ``%%`` or ``{`` can
end it and start a statement; a DOT label is a quoted string whose control characters are shown
as escapes (``printable``), then JSON-quoted (which DOT reads the same way, checked with
Graphviz); the tree shows them so too. A test reads every Mermaid line back as exactly one
expected statement, for any text.
"""

from __future__ import annotations

import json
import re
from typing import Any

from converge.observability.cost import format_cost
from converge.observability.terminal import printable

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


_NOT_ALNUM = re.compile("[^0-9A-Za-z]")
# Kept as they are in a Mermaid label: nothing Mermaid reads inside ``["…"]`` (a quote, ``#``
# of an entity code, ``%%`` of a directive, ``{``, markdown's backtick, HTML's ``<>&``).
_MERMAID_PLAIN = frozenset(" .,:!?()/+-*=_@'·…")


def _key(text: str, prefix: str = "n_") -> str:
    """``text`` (a node id, a subgraph's path) as an identifier Mermaid and DOT both accept,
    and a different one for each text: ASCII letters and digits stay, ``_`` is doubled and any
    other character is ``_<hex code>_`` (``a-b`` is ``n_a_2d_b``, ``a_b`` is ``n_a__b``)."""
    return prefix + _NOT_ALNUM.sub(_key_char, text)


def _key_char(match: re.Match[str]) -> str:
    char = match.group()
    return "__" if char == "_" else f"_{ord(char):x}_"


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
    comment = _esc_m(f"run {graph['trace_id']} of graph {graph['graph_id']}")
    out = ["flowchart LR", f"  %% {comment}"]
    rows = _unique(graph)
    for path, members in sorted(_groups(rows).items()):
        indent = "  "
        if path:
            out.append(f'  subgraph {_key(path, "s_")}["{_esc_m(path)} (subgraph)"]')
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
            out.append(f"  subgraph {_key(path, 'cluster_n_')} {{")
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
    coordination objects it holds, then the agents. Every name is plain text (never rich
    markup), its control characters shown as escapes."""
    from rich.text import Text
    from rich.tree import Tree

    head = Text.assemble(
        ("run ", "bold"),
        (printable(graph["trace_id"]), "bold cyan"),
        f"  graph {printable(graph['graph_id'])}  ",
        (printable(graph["status"]), _RICH.get(graph["status"], "")),
        f"  {graph['duration_ms']:.1f} ms  tokens {graph['total_tokens']}"
        f"  cost {format_cost(graph['total_cost'])}",
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
            (printable(name), "bold"),
            f"#{row['iteration']} " if row["iteration"] > 1 else " ",
            (f"[{printable(row['agent'])}] ", "cyan"),
            (printable(row["status"]), _RICH.get(row["status"], "")),
            f"  {ms:.1f} ms" if ms is not None else "",
            f"  tokens {row['tokens_in']}+{row['tokens_out']}" if row["tokens_in"] else "",
            f"  tools {row['tool_calls']}" if row["tool_calls"] else "",
            f"  cost {format_cost(row['cost'])}" if row.get("cost") else "",
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
                Text(
                    f"{printable(a['agent'])}: {a['nodes']} node(s), tokens {a['tokens']}, "
                    f"tools {a['tool_calls']}, cost {format_cost(a['cost'])}"
                )
            )
    return tree


def _obj_text(obj: dict[str, Any]) -> Any:
    from rich.text import Text

    ms = obj["latency_ms"]
    return Text.assemble(
        (f"{printable(obj['type'])} ", "magenta"),
        printable(_short(obj)),
        f"  {printable(obj['status'])}",
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
    """A DOT quoted string of ``text``, its control characters shown as escapes (JSON's
    quoting is DOT's: ``\\"`` and ``\\\\``)."""
    return json.dumps(printable(text), ensure_ascii=False)


def _esc_m(text: str) -> str:
    """``text`` as Mermaid shows it inside ``["…"]`` (and in a ``%%`` comment): letters,
    digits and plain punctuation as they are, every other character as its entity code."""
    return "".join(
        c if (c.isalnum() and c.isprintable()) or c in _MERMAID_PLAIN else f"#{ord(c)};"
        for c in text
    )
