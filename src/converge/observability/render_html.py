"""A run's coordination graph as one self-contained HTML file.

No network is needed to open it.

The page holds inline CSS, inline JavaScript and two inline SVGs laid out here:

- **the graph**: nodes layered by their ``depth`` (columns, left to right), the edges the log
  records between them, a subgraph's nodes a column past the node that holds them; each node
  is a ``<g class="node" data-node="…" data-i="…">`` filled by its status;
- **the timeline**: one bar per node pass (``<rect class="bar" data-i="…">``) on a shared time
  axis from the run's first event, so passes that overlap ran concurrently;
- **details**: clicking a node or a bar shows that pass's row of the trace, and the
  coordination objects it holds, from the JSON embedded in the page.

Each SVG scrolls in a viewport of its own. The graph's layers wrap into bands of ``_WRAP``
columns, so its width is capped whatever the run's depth (a 1,000-node chain is 4 columns by
250 bands, not 200,000 px wide). Once painted, the page sets ``<body data-drawn="1">``.

Every string from the log is HTML-escaped, its control characters shown as escapes
(``printable``); the embedded JSON holds no ``<`` and no raw control character, so nothing in the
log can end the script, and the page is safe to print on a terminal too.

Layout is linear in the number of nodes: a 1,000-node run is written in about 0.06 s
(``bench/bench_trace.py``; 0.5 s for the whole ``converge trace`` command in a new process), and
headless chromium draws it in about 0.3 s from navigation. The browser tests
(``tests/observability/test_render_browser.py``, marked ``browser``) drive Debian's ``chromium``
over the DevTools protocol (``websockets``, in ``dev``): they count the status colours' pixels in
the graph's viewport on a screenshot (``pillow``), click a node and read the details panel, and
check that a 1,000-node chain does not widen the page.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from typing import Any

from converge.observability.render_text import STATUS_COLOURS
from converge.observability.terminal import printable, printable_json

__all__ = ["render_html"]

_COL_W, _NODE_W, _NODE_H, _ROW_H, _PAD = 200, 170, 36, 48, 20
# Columns (layers) per band of the graph: the SVG is at most _PAD * 2 + _WRAP * _COL_W = 840 px
# wide, which fits the graph's viewport in a 1,280 px window beside the details.
_WRAP, _BAND_GAP = 4, 40
_BAR_H, _BAR_ROW, _AXIS_W, _LABEL_W = 12, 18, 900, 220

_CSS = """
body{font:13px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{padding:12px 20px;background:#263238;color:#fff}
header h1{font-size:16px;margin:0 0 4px}
main{display:grid;grid-template-columns:minmax(0,1fr) 360px;gap:12px;padding:12px 20px}
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;overflow:auto}
h2{font-size:14px;margin:4px 0 8px}
.scroll{overflow:auto;max-height:60vh}
.node rect{stroke:#333;stroke-width:1;rx:6}
.node text{fill:#fff;font-size:11px;pointer-events:none}
.node,.bar{cursor:pointer}
.node.sel rect,.bar.sel{stroke:#ffeb3b;stroke-width:3}
.edge{stroke:#90a4ae;stroke-width:1.5;fill:none}
.lbl{font-size:11px;fill:#333}
.axis{stroke:#bbb}
pre{white-space:pre-wrap;word-break:break-all;font-size:12px;margin:0}
.legend span{display:inline-block;padding:1px 6px;margin:2px;border-radius:3px;color:#fff}
"""

_JS = """
(function(){
  var data=JSON.parse(document.getElementById('trace-data').textContent);
  var panel=document.getElementById('details');
  function show(i){
    var row=data.nodes[i];
    var objs=data.coordination.filter(function(o){return o.node===row.node_id;});
    panel.textContent=JSON.stringify({node:row,coordination:objs},null,2);
    document.querySelectorAll('.sel').forEach(function(e){e.classList.remove('sel');});
    document.querySelectorAll('[data-i="'+i+'"]').forEach(function(e){e.classList.add('sel');});
  }
  document.querySelectorAll('[data-i]').forEach(function(el){
    el.addEventListener('click',function(){show(+el.getAttribute('data-i'));});
  });
  // Set once the page is laid out and painted (the frame after the first), for whoever
  // drives a browser: tests, the benchmark.
  requestAnimationFrame(function(){requestAnimationFrame(function(){
    document.body.dataset.drawn='1';
  });});
})();
"""


def render_html(graph: dict[str, Any]) -> str:
    """The HTML page of ``graph`` (a ``run_graph`` result)."""
    rows: list[dict[str, Any]] = graph["nodes"]
    title = f"run {graph['trace_id']} · {graph['graph_id']}"
    legend = "".join(
        f'<span style="background:{c}">{s}</span>'
        for s, c in STATUS_COLOURS.items()
        if any(r["status"] == s for r in rows)
    )
    summary = (
        f"status <b>{_e(graph['status'])}</b> · {len(rows)} node pass(es) · "
        f"{graph['duration_ms']:.1f} ms · tokens {graph['total_tokens']} · "
        f"cost {graph['total_cost']:g} · {len(graph['coordination'])} coordination object(s)"
    )
    # No "<" at all inside the script element: nothing in the log can close it or open another.
    data = printable_json(json.dumps(graph, ensure_ascii=False, default=str)).replace(
        "<", "\\u003c"
    )
    return "".join(
        [
            "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>",
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
            f"<header><h1>{_e(title)}</h1><div>{summary}</div>",
            f"<div class='legend'>{legend}</div></header><main><div>",
            "<section><h2>Graph</h2><div class='scroll'>",
            _graph_svg(rows, graph["edges"]),
            "</div></section><section><h2>Timeline</h2><div class='scroll'>",
            _timeline_svg(rows),
            "</div></section></div><section><h2>Details</h2>",
            "<pre id='details'>Click a node or a bar.</pre>",
            _agents_table(graph["agents"]),
            "</section></main>",
            f"<script type='application/json' id='trace-data'>{data}</script>",
            f"<script>{_JS}</script></body></html>\n",
        ]
    )


def _graph_svg(rows: list[dict[str, Any]], edges: list[dict[str, str]]) -> str:
    at, band_of = _layout(rows)
    index: dict[str, int] = {}  # node id -> its latest pass's row index
    for i, row in enumerate(rows):
        index[row["node_id"]] = i
    columns = min(max((int(r.get("depth", 0)) for r in rows), default=0) + 1, _WRAP)
    width = _PAD * 2 + columns * _COL_W
    height = _PAD * 2 + max((y for _, y in at.values()), default=0) + _ROW_H
    parts = [
        f"<svg id='graph' xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}'>"
    ]
    for edge in edges:
        if edge["from"] in at and edge["to"] in at:
            src, dst = at[edge["from"]], at[edge["to"]]
            path = _edge_path(src, dst, band_of[edge["to"]] - _BAND_GAP // 2)
            parts.append(f"<path class='edge' d='{path}'/>")
    for node_id, i in index.items():
        row, (x, y) = rows[i], at[node_id]
        colour = STATUS_COLOURS.get(row["status"], "#616161")
        name = node_id if len(node_id) <= 24 else f"…{node_id[-22:]}"
        ms = row["latency_ms"]
        sub = f"{row['agent']} · {ms:.0f} ms" if ms is not None else f"{row['agent']} · -"
        parts.append(
            f"<g class='node' data-node='{_e(node_id)}' data-i='{i}' data-status="
            f"'{_e(row['status'])}' transform='translate({x},{y})'>"
            f"<title>{_e(node_id)}: {_e(row['status'])}</title>"
            f"<rect width='{_NODE_W}' height='{_NODE_H}' fill='{colour}'/>"
            f"<text x='8' y='15'>{_e(name)}</text>"
            f"<text x='8' y='29'>{_e(sub[:30])}</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _layout(
    rows: list[dict[str, Any]],
) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
    """Each node's top-left corner, and the top of its band: a column per ``depth``, the
    columns wrapped into bands of ``_WRAP``, one under the other, so a long chain reads like
    lines of text instead of one row as wide as the run is long."""
    depth: dict[str, int] = {}  # node id -> depth of its latest pass, in first-seen order
    for row in rows:
        depth[row["node_id"]] = int(row.get("depth", 0))
    slots: dict[int, int] = {}  # depth -> nodes placed in that column so far
    slot_of: dict[str, int] = {}
    for node_id, d in depth.items():
        slot_of[node_id] = slots.get(d, 0)
        slots[d] = slot_of[node_id] + 1
    band_rows: dict[int, int] = {}  # band -> the most nodes a column of it holds
    for d, n in slots.items():
        band_rows[d // _WRAP] = max(band_rows.get(d // _WRAP, 0), n)
    band_top: dict[int, int] = {}
    top = _PAD
    for band in range(max(band_rows, default=0) + 1):
        band_top[band] = top
        top += band_rows.get(band, 0) * _ROW_H + _BAND_GAP
    at = {
        node_id: (_PAD + d % _WRAP * _COL_W, band_top[d // _WRAP] + slot_of[node_id] * _ROW_H)
        for node_id, d in depth.items()
    }
    return at, {node_id: band_top[d // _WRAP] for node_id, d in depth.items()}


def _edge_path(src: tuple[int, int], dst: tuple[int, int], gap_y: int) -> str:
    """A curve rightwards to a later column; an edge that wraps to a later band runs down
    the gutter right of its source, left along ``gap_y`` (the gap above the band of its
    target) and into the target, so it crosses no node."""
    x1, y1 = src[0] + _NODE_W, src[1] + _NODE_H // 2
    x2, y2 = dst[0], dst[1] + _NODE_H // 2
    if x2 > x1:
        mid = (x1 + x2) // 2
        return f"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}"
    gutter = (_COL_W - _NODE_W) // 2
    return f"M{x1},{y1} h{gutter} V{gap_y} H{x2 - gutter} V{y2} H{x2}"


def _timeline_svg(rows: list[dict[str, Any]]) -> str:
    starts = [_seconds(r["start_time"]) for r in rows]
    ends = [
        _seconds(r["end_time"]) if r["end_time"] is not None else s
        for r, s in zip(rows, starts, strict=True)
    ]
    t0 = min(starts, default=0.0)
    span = max(max(ends, default=0.0) - t0, 1e-6)
    scale = _AXIS_W / span
    width = _LABEL_W + _AXIS_W + _PAD * 2
    height = _PAD * 2 + len(rows) * _BAR_ROW + 20
    parts = [
        f"<svg id='timeline' xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}'>",
        f"<line class='axis' x1='{_LABEL_W}' y1='{_PAD}' x2='{_LABEL_W}' y2='{height - 20}'/>",
    ]
    for tick in range(5):
        x = _LABEL_W + tick * _AXIS_W / 4
        parts.append(
            f"<text class='lbl' x='{x:.1f}' y='{height - 6}'>{tick * span / 4 * 1e3:.1f} ms</text>"
        )
    for i, (row, start, end) in enumerate(zip(rows, starts, ends, strict=True)):
        y = _PAD + i * _BAR_ROW
        x = _LABEL_W + (start - t0) * scale
        w = max((end - start) * scale, 2.0)
        colour = STATUS_COLOURS.get(row["status"], "#616161")
        label = row["node_id"] + (f" #{row['iteration']}" if row["iteration"] > 1 else "")
        parts.append(
            f"<text class='lbl' x='4' y='{y + _BAR_H - 2}'>{_e(label[-32:])}</text>"
            f"<rect class='bar' data-i='{i}' data-node='{_e(row['node_id'])}' x='{x:.1f}' "
            f"y='{y}' width='{w:.1f}' height='{_BAR_H}' fill='{colour}'>"
            f"<title>{_e(label)}: {_e(row['status'])}</title></rect>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _agents_table(agents: list[dict[str, Any]]) -> str:
    if not agents:
        return ""
    body = "".join(
        f"<tr><td>{_e(a['agent'])}</td><td>{a['nodes']}</td><td>{a['tokens']}</td>"
        f"<td>{a['tool_calls']}</td><td>{a['cost']:g}</td></tr>"
        for a in agents
    )
    head = "<tr><th>agent</th><th>nodes</th><th>tokens</th><th>tools</th><th>cost</th></tr>"
    return f"<h2>Agents</h2><table id='agents'>{head}{body}</table>"


def _seconds(iso: str) -> float:
    return dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()


def _e(text: str) -> str:
    """``text`` as HTML text or an attribute value, control characters shown as escapes (the
    page's JSON keeps the exact value)."""
    return html.escape(printable(str(text)), quote=True)
