"""A run's coordination as one self-contained HTML page.

No network is needed to open it: the page holds inline CSS, inline JavaScript and the run's
``RunView`` (``run_model``) as JSON, and draws, each in a panel of its own:

- **the graph**: every node of the graph in layers by ``depth``, top to bottom (a layer wider
  than ``_PER_LINE`` nodes wraps, so the width is capped whatever the run's size), each a
  ``<g class="node" data-node="…" data-status="…">`` filled by its status; a node that never
  ran is grey with a dashed border, and an untaken one says why (``when …``); every edge of the
  graph is a ``<path class="edge …" data-from data-to data-state>`` — all the edges into a
  join, a condition written beside its edge, an edge not taken dashed. The SVG scales down to
  its panel's width (``viewBox``) and scrolls down when taller than it;
- **the timeline**: one bar per node pass (``<div class="bar" data-i="…">``) on a time axis from
  the run's first pass, placed in per cent of the track, so at zoom 1 the whole run fits the
  panel at any window width. Zoom in to detail with ``+`` and out with the minus button (or
  Ctrl + wheel, about the pointer), back to the whole run with ``Fit``; a double click on a bar
  zooms until that pass fills the view; the labels stay put while the track scrolls; the ticks
  are chosen again at each zoom;
- **coordination**: each auction drawn as intent → offers (provider by name, price, score, rank;
  the winner marked) → award → receipt (and the winner's trust); each ballot as question →
  votes (voter by name → option) → outcome (winner, tallies); board tasks with their worker;
- **details**: clicking a node or a bar shows that pass as a readable form — agent, status,
  timings, attempts and each failed try's error, tokens, tool calls, cost, each input the node
  read with its value, its output, its error, and the coordination it caused (links down to
  the drawings); for a node that never ran, why, and what it would have read.

Once painted, the page sets ``<body data-drawn="1">`` (for whoever drives a browser).

Every string from the log is HTML-escaped, its control characters shown as escapes
(``printable``); the script fills the details with ``textContent`` only; the embedded JSON holds
no ``<`` and no raw control character, so nothing in the log can end the script, and the page
is safe to print on a terminal too.

Layout is linear in the number of nodes and edges (``bench/bench_trace.py``). The browser tests
(``tests/observability/test_render_browser.py``, marked ``browser``) drive Debian's
``chromium`` with Playwright: the geometry of the panels at 1400 x 1000 and 1920 x 1080, the
edges, the grey nodes, the drawings, the details, zoom, and a screenshot of each size.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Sequence

import msgspec

from converge.observability.cost import format_cost
from converge.observability.render_text import STATUS_COLOURS
from converge.observability.run_model import (
    AuctionView,
    BallotView,
    BoardTaskView,
    EdgeView,
    NodeView,
    RunView,
)
from converge.observability.terminal import printable, printable_json

__all__ = ["render_html"]

_NODE_W, _NODE_H, _COL_W, _PAD = 170, 36, 200, 20
# Nodes side by side in a layer, at most: the SVG is at most _PAD * 2 + 4 * _COL_W - 30 = 810 px
# wide (its natural size; it scales down to a narrower panel), and a wider layer wraps.
_PER_LINE = 4
_LINE_GAP, _LAYER_GAP = 14, 58  # between the lines of a layer; between layers (edges, conditions)
_GREY = "#eceff1"
_NOT_RUN = frozenset({"untaken", "not_run", "pending"})

_CSS = """
*{box-sizing:border-box}
body{font:13px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{padding:10px 20px;background:#263238;color:#fff}
header h1{font-size:16px;margin:0 0 4px;overflow-wrap:anywhere}
main{display:grid;grid-template-columns:minmax(0,1fr) minmax(300px,380px);gap:12px;
  padding:12px 20px;align-items:start}
.col{display:flex;flex-direction:column;gap:12px;min-width:0}
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;min-width:0}
h2{font-size:14px;margin:2px 0 8px;display:flex;gap:8px;align-items:center}
h2 .tools{margin-left:auto;display:flex;gap:4px;font-weight:normal}
button{font:12px system-ui,sans-serif;padding:1px 8px;cursor:pointer}
#graph-view{overflow:auto;max-height:46vh}
#graph{display:block;max-width:100%;height:auto;margin:0 auto}
.node rect{stroke:#333;stroke-width:1}
.node text{fill:#fff;font-size:11px;pointer-events:none}
.node.grey rect{fill:#eceff1;stroke:#90a4ae;stroke-dasharray:4 3}
.node.grey text{fill:#546e7a}
.node{cursor:pointer}
.node.sel rect{stroke:#ffb300;stroke-width:3}
.edge{stroke:#78909c;stroke-width:1.5;fill:none}
.edge.not_taken,.edge.pending{stroke:#b0bec5;stroke-dasharray:5 4}
.edge.back{stroke:#8d6e63}
.cond{font-size:10px;fill:#37474f;paint-order:stroke;stroke:#fff;stroke-width:3px;
  text-anchor:middle}
#timeline-view{overflow:auto;max-height:36vh;position:relative;border-top:1px solid #eee}
#timeline{width:calc(180px + (100% - 180px) * var(--zoom,1));position:relative}
.tl-row{display:grid;grid-template-columns:180px minmax(0,1fr);height:18px;align-items:center}
.tl-row:hover{background:#f5f5f5}
.tl-label{position:sticky;left:0;z-index:2;background:inherit;background-color:#fff;
  font-size:11px;padding-right:6px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;
  height:100%;line-height:18px}
.tl-track{position:relative;height:100%}
#ticks{overflow:hidden}
.bar{position:absolute;top:3px;height:12px;min-width:2px;border-radius:2px;cursor:pointer}
.bar.sel{outline:3px solid #ffb300}
.tl-axis{position:sticky;top:0;z-index:3;background:#fff;height:20px;border-bottom:1px solid #ddd}
.tl-axis .tl-label{font-weight:600}
.tick{position:absolute;top:0;height:100%;border-left:1px solid #ccc;font-size:10px;
  padding-left:2px;color:#555;white-space:nowrap}
.gridline{position:absolute;top:0;bottom:0;border-left:1px dashed #eee;pointer-events:none}
#zoom-level{font-size:11px;color:#555;min-width:44px;text-align:right}
.flow{display:flex;flex-wrap:wrap;align-items:stretch;gap:4px;margin:6px 0 12px}
.step{border:1px solid #b0bec5;border-radius:6px;padding:4px 8px;background:#f7f9fa;
  min-width:120px;max-width:min(100%,300px)}
.step.offers{max-width:100%}
.step h4{margin:0 0 2px;font-size:11px;text-transform:uppercase;color:#546e7a}
.step.won,.step.award{border-color:#2e7d32;background:#e8f5e9}
.step.failed{border-color:#c62828;background:#ffebee}
.arrow{align-self:center;color:#78909c;font-size:16px}
.coord-title{font-weight:600;overflow-wrap:anywhere}
table{border-collapse:collapse;font-size:12px}
td,th{padding:1px 6px;text-align:left;border-bottom:1px solid #eee;vertical-align:top}
tr.won td{font-weight:600;color:#1b5e20}
tr.refused td{color:#9e9e9e}
.muted{color:#78909c}
#details dl{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:2px 10px;margin:0}
#details dt{color:#546e7a}
#details dd{margin:0;overflow-wrap:anywhere}
#details h3{font-size:13px;margin:10px 0 4px}
#details pre{white-space:pre-wrap;overflow-wrap:anywhere;font-size:12px;margin:0;
  background:#f5f7f8;border-radius:4px;padding:4px 6px;max-height:240px;overflow:auto}
#details .err{background:#ffebee;color:#b71c1c}
.badge{display:inline-block;padding:0 6px;border-radius:3px;color:#fff;font-size:11px}
#agents-view{overflow:auto;max-height:40vh}
#summary .err{color:#ffcdd2}
.legend span{display:inline-block;padding:1px 6px;margin:2px;border-radius:3px;color:#fff}
.legend span.grey{color:#546e7a;background:#eceff1;border:1px dashed #90a4ae}
"""

_JS = r"""
(function(){
  var data=JSON.parse(document.getElementById('trace-data').textContent);
  var colours=JSON.parse(document.getElementById('trace-colours').textContent);
  var panel=document.getElementById('details');
  var nodes={};data.nodes.forEach(function(n){nodes[n.id]=n;});
  function el(tag,cls,text){var e=document.createElement(tag);if(cls)e.className=cls;
    if(text!==undefined&&text!==null)e.textContent=String(text);return e;}
  function shown(v){return typeof v==='string'?v:JSON.stringify(v,null,2);}
  function value(v,err){var p=el('pre',err?'err':'');var t=shown(v);
    if(t===undefined)t=String(v);
    if(t.length>4000){p.textContent=t.slice(0,4000)+'…';var b=el('button','', 'show all '+
      t.length+' characters');b.onclick=function(){p.textContent=t;b.remove();};
      var d=el('div');d.appendChild(p);d.appendChild(b);return d;}
    p.textContent=t;return p;}
  function usd(x){if(x===null||x===undefined)return '-';if(x===0)return '0 USD';
    var m=Math.floor(Math.log10(Math.abs(x)));if(m<-12||!isFinite(x))return x.toPrecision(3)+' USD';
    var d=Math.max(2,2-m),t=x.toFixed(d);if(d>2){var q=t.split('.'),f=q[1].replace(/0+$/,'');
    while(f.length<2)f+='0';t=q[0]+'.'+f;}return t+' USD';}
  function num(x){return x===null||x===undefined?'-':
    (Math.abs(x)>=1e-4||x===0?String(+x.toPrecision(6)):x.toExponential(3));}
  function ms(x){return x===null||x===undefined?'-':x<1000?num(+x.toFixed(x<10?3:1))+' ms':
    num(+(x/1000).toFixed(3))+' s';}
  function row(dl,k,v){dl.appendChild(el('dt','',k));var d=el('dd');
    if(v instanceof Node)d.appendChild(v);else d.textContent=String(v);dl.appendChild(d);}
  function badge(status){var b=el('span','badge',status);
    b.style.background=colours[status]||'#90a4ae';return b;}
  function select(sel){document.querySelectorAll('.sel').forEach(function(e){
    e.classList.remove('sel');});document.querySelectorAll(sel).forEach(function(e){
    e.classList.add('sel');});}
  function coordination(node){
    var out=[];
    data.auctions.forEach(function(a,i){if(a.node===node)out.push(['auction-'+i,
      'auction '+a.status+(a.award?': '+a.award.name+' at '+num(a.award.price)+' '+
      (a.award.currency||''):'')+' ('+a.offers.length+' offer(s))']);});
    data.ballots.forEach(function(b,i){if(b.node===node)out.push(['ballot-'+i,
      'ballot '+b.status+(b.winner?': '+b.winner+' won':'')+' ('+b.votes.length+
      ' vote(s))']);});
    data.tasks.forEach(function(t,i){if(t.node===node)out.push(['task-'+i,
      'board task '+t.status+(t.worker?' by '+t.worker:'')]);});
    return out;}
  function show(nodeId,passIndex){
    var n=nodes[nodeId];if(!n)return;panel.textContent='';
    var head=el('h3');head.appendChild(document.createTextNode(n.id+' '));
    var p=passIndex===undefined?(n.passes.length?data.passes[n.passes[n.passes.length-1]]:null)
      :data.passes[passIndex];
    head.appendChild(badge(p?p.status:n.status));panel.appendChild(head);
    if(n.passes.length>1){var pick=el('div');n.passes.forEach(function(i){
      var b=el('button','', '#'+data.passes[i].iteration);if(p&&i===p.index)b.disabled=true;
      b.onclick=function(){show(nodeId,i);};pick.appendChild(b);});panel.appendChild(pick);}
    var dl=el('dl');panel.appendChild(dl);
    row(dl,'agent',n.agent);
    if(!p){
      row(dl,'status',n.status==='untaken'?'not taken':n.status==='not_run'?
        'did not run (the run ended first)':'not run yet');
      if(n.condition)row(dl,'because',n.condition);
      if(n.inputs)row(dl,'would read',n.inputs.join(', '));
      select('.node[data-node="'+CSS.escape(n.id)+'"]');return;}
    row(dl,'pass',p.iteration);row(dl,'started',p.start_time);
    row(dl,'duration',ms(p.latency_ms));
    row(dl,'attempts',p.attempts+(p.retries.length?' ('+p.retries.length+' failed)':''));
    row(dl,'tokens',p.tokens_in+' in, '+p.tokens_out+' out');
    row(dl,'tool calls',p.tool_calls);row(dl,'cost',usd(p.cost));
    if(p.run!==data.run_id)row(dl,'run',p.run);
    if(p.question)row(dl,'asks',p.question);
    panel.appendChild(el('h3','','Inputs'));
    if(p.inputs===null)panel.appendChild(el('div','muted','not recorded'));
    else{var keys=Object.keys(p.inputs);
      if(!keys.length&&!p.missing_inputs.length)panel.appendChild(el('div','muted','none'));
      var il=el('dl');keys.forEach(function(k){row(il,k,value(p.inputs[k]));});
      p.missing_inputs.forEach(function(k){row(il,k,el('span','muted',
        'nothing (a branch not taken, or a key not there)'));});panel.appendChild(il);}
    panel.appendChild(el('h3','','Output'));
    panel.appendChild(p.end_time===null?el('div','muted','none yet'):value(p.output));
    if(p.error){panel.appendChild(el('h3','','Error'));panel.appendChild(value(p.error,true));}
    if(p.retries.length){panel.appendChild(el('h3','','Failed tries'));
      p.retries.forEach(function(r,i){var d=el('div');d.appendChild(el('div','muted',
        'try '+(i+1)));d.appendChild(value(r,true));panel.appendChild(d);});}
    var coord=coordination(n.id);
    if(coord.length){panel.appendChild(el('h3','','Coordination'));coord.forEach(function(c){
      var a=el('a','',c[1]);a.href='#'+c[0];var d=el('div');d.appendChild(a);
      panel.appendChild(d);});}
    select('.node[data-node="'+CSS.escape(n.id)+'"],.bar[data-i="'+p.index+'"]');
  }
  document.querySelectorAll('.node').forEach(function(g){
    g.addEventListener('click',function(){show(g.getAttribute('data-node'));});});
  document.querySelectorAll('.bar').forEach(function(b){
    b.addEventListener('click',function(){var p=data.passes[+b.getAttribute('data-i')];
      show(p.node,p.index);});
    b.addEventListener('dblclick',function(){zoomTo(+b.getAttribute('data-i'));});});
  // -- the timeline's zoom ----------------------------------------------------------------
  var view=document.getElementById('timeline-view');
  var line=document.getElementById('timeline');
  var ticks=document.getElementById('ticks');
  var level=document.getElementById('zoom-level');
  var span=+line.getAttribute('data-span-ms');
  var zoom=1;var LABEL=180;
  function track(){return (view.clientWidth-LABEL)*zoom;}
  function drawTicks(){
    ticks.textContent='';var grid=line.querySelectorAll('.gridline');
    grid.forEach(function(g){g.remove();});
    var px=track();if(px<=0||!(span>0))return;
    var raw=span/Math.max(px/110,1);var p=Math.pow(10,Math.floor(Math.log10(raw)));
    var step=[1,2,5,10].map(function(m){return m*p;}).find(function(s){return s>=raw;});
    for(var t=0;t<=span*1.0001;t+=step){var left=(t/span*100)+'%';
      var k=el('div','tick',ms(t));k.style.left=left;ticks.appendChild(k);}
    level.textContent=Math.round(zoom*100)+'%';
  }
  function setZoom(z,anchor){
    z=Math.min(Math.max(z,1),2000);
    var inner=view.clientWidth-LABEL;var at=anchor===undefined?inner/2:anchor;
    var frac=(view.scrollLeft+at)/(inner*zoom);zoom=z;
    line.style.setProperty('--zoom',String(z));
    view.scrollLeft=Math.max(frac*inner*z-at,0);drawTicks();}
  function zoomTo(i){var p=data.passes[i];var bar=line.querySelector('.bar[data-i="'+i+'"]');
    var inner=view.clientWidth-LABEL;var w=parseFloat(bar.getAttribute('data-w'));
    var l=parseFloat(bar.getAttribute('data-l'));
    var z=Math.min(Math.max(60/Math.max(w,1e-9),1),2000);zoom=z;
    line.style.setProperty('--zoom',String(z));
    view.scrollLeft=Math.max(l/100*inner*z-inner*0.2,0);drawTicks();
    show(p.node,p.index);}
  document.getElementById('zoom-in').onclick=function(){setZoom(zoom*2);};
  document.getElementById('zoom-out').onclick=function(){setZoom(zoom/2);};
  document.getElementById('zoom-fit').onclick=function(){setZoom(1);view.scrollLeft=0;};
  view.addEventListener('wheel',function(e){if(!e.ctrlKey&&!e.metaKey)return;
    e.preventDefault();var r=view.getBoundingClientRect();
    setZoom(zoom*(e.deltaY<0?1.25:0.8),Math.max(e.clientX-r.left-LABEL,0));},{passive:false});
  window.addEventListener('resize',drawTicks);
  drawTicks();
  // Set once the page is laid out and painted (the frame after the first), for whoever
  // drives a browser: tests, the benchmark.
  requestAnimationFrame(function(){requestAnimationFrame(function(){
    document.body.dataset.drawn='1';
  });});
})();
"""


def render_html(view: RunView) -> str:
    """The HTML page of a run (``RunModel(run_id).add(events).view()``)."""
    title = f"run {view.run_id} · {view.graph}"
    used = {n.status for n in view.nodes}
    legend = "".join(
        f'<span style="background:{c}">{s}</span>' for s, c in STATUS_COLOURS.items() if s in used
    )
    legend += "".join(
        f"<span class='grey'>{label}</span>"
        for status, label in (
            ("untaken", "not taken"),
            ("not_run", "not run"),
            ("pending", "pending"),
        )
        if status in used
    )
    counts = [
        _count(len(view.auctions), "auction"),
        _count(len(view.ballots), "ballot"),
        _count(len(view.tasks), "board task"),
    ]
    summary = (
        f"status <b>{_e(view.status)}</b> · {_count(len(view.nodes), 'node')}, "
        f"{_count(len(view.passes), 'pass', 'passes')} · {_duration(view.duration_ms)} · "
        f"tokens {view.total_tokens} · cost {_e(format_cost(view.total_cost))}"
        + "".join(f" · {c}" for c in counts if not c.startswith("0 "))
    )
    failed = next((p for p in reversed(view.passes) if p.status == "failed"), None)
    if failed is not None:
        summary += (
            f"<br><span class='err'>failed at {_e(failed.node)}: "
            f"{_e(_clip(failed.error or 'failed', 200))}</span>"
        )
    data = printable_json(msgspec.json.encode(view, enc_hook=str).decode()).replace("<", "\\u003c")
    colours = msgspec.json.encode(STATUS_COLOURS).decode()
    return "".join(
        [
            "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>",
            "<meta name='viewport' content='width=device-width, initial-scale=1'>",
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
            f"<header><h1>{_e(title)}</h1><div id='summary'>{summary}</div>",
            f"<div class='legend'>{legend}</div></header><main><div class='col'>",
            "<section id='graph-panel'><h2>Graph</h2><div id='graph-view'>",
            _graph_svg(view),
            "</div></section>",
            "<section id='timeline-panel'><h2>Timeline<span class='tools'>",
            "<span id='zoom-level'>100%</span>",
            "<button id='zoom-out' title='Zoom out'>&minus;</button>",
            "<button id='zoom-in' title='Zoom in (or Ctrl + wheel)'>+</button>",
            "<button id='zoom-fit' title='The whole run'>Fit</button></span></h2>",
            _timeline(view),
            "</section>",
            _coordination(view),
            "</div><div class='col'><section id='details-panel'><h2>Details</h2>",
            "<div id='details'><span class='muted'>Click a node or a bar.</span></div>",
            "</section>",
            _agents_table(view),
            "</div></main>",
            f"<script type='application/json' id='trace-data'>{data}</script>",
            f"<script type='application/json' id='trace-colours'>{colours}</script>",
            f"<script>{_JS}</script></body></html>\n",
        ]
    )


# -- the graph -------------------------------------------------------------------------------------


def _graph_svg(view: RunView) -> str:
    at, width, height = _layout(view.nodes, view.edges)
    parts = [
        f"<svg id='graph' xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' "
        f"width='{width}' height='{height}'><defs>",
        "<marker id='arrow' viewBox='0 0 10 10' refX='9' refY='5' markerWidth='7' "
        "markerHeight='7' orient='auto-start-reverse'><path d='M0,0 L10,5 L0,10 z' "
        "fill='#78909c'/></marker></defs>",
    ]
    ends = _ends(view.edges, at)
    parts.extend(
        _edge(edge, at, ends[i])
        for i, edge in enumerate(view.edges)
        if edge.source in at and edge.target in at
    )
    parts.extend(_node(node, at[node.id], view) for node in view.nodes)
    parts.append("</svg>")
    return "".join(parts)


def _node(node: NodeView, corner: tuple[float, float], view: RunView) -> str:
    x, y = corner
    name = node.id if len(node.id) <= 26 else f"…{node.id[-24:]}"
    grey = node.status in _NOT_RUN
    if grey:
        label = "not taken" if node.status == "untaken" else node.status.replace("_", " ")
        sub = f"{label}: {node.condition}" if node.condition else label
        colour = _GREY
    else:
        last = view.passes[node.passes[-1]]
        ms = last.latency_ms
        sub = f"{node.agent} · {_duration(ms) if ms is not None else '-'}"
        if len(node.passes) > 1:
            sub += f" · {len(node.passes)} passes"
        colour = STATUS_COLOURS.get(node.status, "#616161")
    tip = f"{node.id}: {node.status}" + (f" ({node.condition})" if node.condition else "")
    return (
        f"<g class='node{' grey' if grey else ''}' data-node='{_e(node.id)}' "
        f"data-status='{_e(node.status)}' transform='translate({x:g},{y:g})'>"
        f"<title>{_e(tip)}</title>"
        f"<rect width='{_NODE_W}' height='{_NODE_H}' rx='6' fill='{colour}'/>"
        f"<text x='8' y='15'>{_e(name)}</text>"
        f"<text x='8' y='29'>{_e(_clip(sub, 30))}</text></g>"
    )


def _layout(
    nodes: Sequence[NodeView], edges: Sequence[EdgeView]
) -> tuple[dict[str, tuple[float, float]], int, int]:
    """Each node's top-left corner, and the SVG's size: a layer per ``depth``, top to bottom,
    as LangGraph Studio draws a graph; a layer's nodes side by side, ordered by where the
    nodes with edges into them stand (fewer crossings), centred, wrapped into lines of
    ``_PER_LINE`` — so the width is capped whatever the run's size (a 1,000-node chain is one
    column, a 1,000-way fan-out 250 lines of 4)."""
    layers: dict[int, list[NodeView]] = {}
    for node in nodes:
        layers.setdefault(node.depth, []).append(node)
    into: dict[str, list[str]] = {}
    for e in edges:
        if not e.back:
            into.setdefault(e.target, []).append(e.source)
    columns = min(max((len(m) for m in layers.values()), default=1), _PER_LINE)
    width = _PAD * 2 + columns * _COL_W - (_COL_W - _NODE_W)
    at: dict[str, tuple[float, float]] = {}
    top = float(_PAD)
    for depth in sorted(layers):
        members = layers[depth]
        centre = (width - _NODE_W) / 2

        def barycentre(pair: tuple[int, NodeView], centre: float = centre) -> tuple[float, int]:
            xs = [at[s][0] for s in into.get(pair[1].id, ()) if s in at]
            return (sum(xs) / len(xs) if xs else centre, pair[0])

        ordered = [n for _, n in sorted(enumerate(members), key=barycentre)]
        for k, node in enumerate(ordered):
            line, col = divmod(k, _PER_LINE)
            in_line = min(_PER_LINE, len(ordered) - line * _PER_LINE)
            offset = (columns - in_line) * _COL_W / 2
            at[node.id] = (_PAD + offset + col * _COL_W, top + line * (_NODE_H + _LINE_GAP))
        lines = -(-len(ordered) // _PER_LINE)
        top += lines * (_NODE_H + _LINE_GAP) - _LINE_GAP + _LAYER_GAP
    height = int(top - _LAYER_GAP + _PAD) if at else _PAD * 2
    return at, int(width), height


def _ends(
    edges: Sequence[EdgeView], at: dict[str, tuple[float, float]]
) -> list[tuple[float, float]]:
    """Where each edge leaves its source's bottom and enters its target's top: a node's edges
    spread along its side in the order of the nodes at their other ends, so the edges into a
    join (or out of a fan-out) each end apart."""
    out: dict[str, list[int]] = {}
    into: dict[str, list[int]] = {}
    for i, e in enumerate(edges):
        if e.source in at and e.target in at and not e.back:
            out.setdefault(e.source, []).append(i)
            into.setdefault(e.target, []).append(i)
    ends = [(_NODE_W / 2, _NODE_W / 2)] * len(edges)
    starts: dict[int, float] = {}
    for members in out.values():
        members.sort(key=lambda i: at[edges[i].target][0])
        for k, i in enumerate(members):
            starts[i] = _NODE_W * (k + 1) / (len(members) + 1)
    for members in into.values():
        members.sort(key=lambda i: at[edges[i].source][0])
        for k, i in enumerate(members):
            ends[i] = (starts.get(i, _NODE_W / 2), _NODE_W * (k + 1) / (len(members) + 1))
    return ends


def _edge(edge: EdgeView, at: dict[str, tuple[float, float]], ends: tuple[float, float]) -> str:
    """An edge as a path with an arrowhead: down from its source's bottom into its target's
    top; an edge that goes back (a loop's) leaves the source's right side and runs up
    outside the layers into the target's right side. A condition is written just above the
    point where its edge enters."""
    (sx, sy), (tx, ty) = at[edge.source], at[edge.target]
    if edge.back or ty <= sy:
        x1, y1 = sx + _NODE_W, sy + _NODE_H / 2
        x2, y2 = tx + _NODE_W, ty + _NODE_H / 2
        bulge = max(x1, x2) + 30
        path = f"M{x1:g},{y1:g} C{bulge:g},{y1:g} {bulge:g},{y2:g} {x2 + 2:g},{y2:g}"
        label = (bulge, (y1 + y2) / 2)
    else:
        x1, y1 = sx + ends[0], sy + _NODE_H
        x2, y2 = tx + ends[1], ty
        bend = min(40.0, (y2 - y1) / 2)
        path = f"M{x1:g},{y1:g} C{x1:g},{y1 + bend:g} {x2:g},{y2 - bend:g} {x2:g},{y2 - 2:g}"
        label = (x2, y2 - 8)
    classes = f"edge {edge.state}" + (" back" if edge.back else "")
    out = (
        f"<path class='{classes}' data-from='{_e(edge.source)}' data-to='{_e(edge.target)}' "
        f"data-state='{edge.state}' d='{path}' marker-end='url(#arrow)'>"
        f"<title>{_e(edge.source)} → {_e(edge.target)}: {edge.state.replace('_', ' ')}"
        f"{_e(' when ' + edge.when) if edge.when else ''}</title></path>"
    )
    if edge.when:
        out += (
            f"<text class='cond' x='{label[0]:g}' y='{label[1]:g}'>"
            f"{_e(_clip(edge.when, 30))}</text>"
        )
    return out


# -- the timeline ----------------------------------------------------------------------------------


def _timeline(view: RunView) -> str:
    starts = [_seconds(p.start_time) for p in view.passes]
    ends = [
        _seconds(p.end_time) if p.end_time is not None else s
        for p, s in zip(view.passes, starts, strict=True)
    ]
    t0 = min(starts, default=0.0)
    span = max(max(ends, default=0.0) - t0, 1e-6)
    rows = [
        "<div id='timeline-view'>",
        f"<div id='timeline' data-span-ms='{span * 1e3:.6f}'>",
        "<div class='tl-row tl-axis'><div class='tl-label'>node</div>",
        "<div class='tl-track' id='ticks'></div></div>",
    ]
    for p, start, end in zip(view.passes, starts, ends, strict=True):
        left = (start - t0) / span * 100
        width = (end - start) / span * 100
        colour = STATUS_COLOURS.get(p.status, "#616161")
        label = p.node + (f" #{p.iteration}" if p.iteration > 1 else "")
        tip = f"{label}: {p.status}, {_duration(p.latency_ms) if p.latency_ms is not None else '-'}"
        rows.append(
            f"<div class='tl-row'><div class='tl-label' title='{_e(label)}'>{_e(label)}</div>"
            f"<div class='tl-track'><div class='bar' data-i='{p.index}' "
            f"data-node='{_e(p.node)}' data-l='{left:.4f}' data-w='{width:.4f}' "
            f"style='left:min({left:.4f}%,calc(100% - 2px));width:{width:.4f}%;"
            f"background:{colour}' "
            f"title='{_e(tip)}'></div></div></div>"
        )
    rows.append("</div></div>")
    return "".join(rows)


# -- coordination ----------------------------------------------------------------------------------


def _coordination(view: RunView) -> str:
    if not (view.auctions or view.ballots or view.tasks):
        return ""
    parts = ["<section id='coordination-panel'><h2>Coordination</h2>"]
    parts += [_auction(i, a) for i, a in enumerate(view.auctions)]
    parts += [_ballot(i, b) for i, b in enumerate(view.ballots)]
    if view.tasks:
        parts.append(_tasks(view.tasks))
    parts.append("</section>")
    return "".join(parts)


def _auction(i: int, a: AuctionView) -> str:
    head = (
        f"<div class='coord-title'>Auction for node {_e(a.node or '-')} "
        f"<span class='muted'>{_e(a.id)}</span></div>"
    )
    intent = _step(
        "intent",
        "Intent",
        f"{_e(a.capability or '-')} · {_e(a.strategy or '-')}<br>"
        f"<span class='muted'>invited {_e(', '.join(a.invited) or '-')}</span>",
    )
    rows = "".join(
        f"<tr class='offer{' won' if o.won else ''}{' refused' if o.status == 'refused' else ''}' "
        f"data-provider='{_e(o.name)}'><td>{o.rank if o.rank is not None else '-'}</td>"
        f"<td title='{_e(o.provider)}'>{_e(o.name)}</td><td>{_number(o.price)}</td>"
        f"<td>{_number(o.score)}</td><td>{_e(o.reason or o.status)}</td></tr>"
        for o in a.offers
    )
    offers = _step(
        "offers",
        f"Offers ({len(a.offers)})",
        "<table><tr><th>#</th><th>provider</th><th>price</th><th>score</th><th></th></tr>"
        f"{rows}</table>",
    )
    steps = [intent, offers]
    if a.award is not None:
        w = a.award
        steps.append(
            _step(
                "award",
                "Award",
                f"<b title='{_e(w.winner)}'>{_e(w.name)}</b> at {_number(w.price)} "
                f"{_e(w.currency or '')}<br><span class='muted'>{_e(w.reason or '')}</span>",
            )
        )
    elif a.status == "failed":
        steps.append(_step("award failed", "No award", _e(a.reason or "failed")))
    if a.receipt is not None:
        r = a.receipt
        trust = ""
        if a.trust is not None:
            trust = (
                f"<br><span class='muted'>trust of {_e(a.trust.name)}: {_e(a.trust.outcome)}"
                f" → {_number(a.trust.score)}</span>"
            )
        steps.append(
            _step(
                "receipt" + (" failed" if r.status in ("failed", "disputed") else ""),
                "Receipt",
                f"{_e(r.status)} · {_number(r.cost)} {_e(r.currency or '')}"
                + (f" · {_e(r.reason)}" if r.reason else "")
                + trust,
            )
        )
    flow = "<span class='arrow'>→</span>".join(steps)
    return (
        f"<div class='auction' id='auction-{i}' data-node='{_e(a.node or '')}' "
        f"data-status='{_e(a.status)}'>{head}<div class='flow'>{flow}</div></div>"
    )


def _ballot(i: int, b: BallotView) -> str:
    head = (
        f"<div class='coord-title'>Ballot for node {_e(b.node or '-')} "
        f"<span class='muted'>{_e(b.id)}</span></div>"
    )
    question = _step(
        "question",
        "Ballot",
        f"{_e(b.question or '-')}<br><span class='muted'>{_e(' / '.join(b.options))} · "
        f"{_e(b.rule or '-')}</span>",
    )
    votes = "".join(
        f"<tr class='vote{' refused' if v.status == 'refused' else ''}' "
        f"data-voter='{_e(v.name)}'><td title='{_e(v.voter)}'>{_e(v.name)}</td>"
        f"<td>→ {_e(v.option if v.option is not None else '-')}</td>"
        f"<td>{_e(v.reason or '')}</td></tr>"
        for v in b.votes
    )
    vote_step = _step("votes", f"Votes ({len(b.votes)})", f"<table>{votes}</table>")
    if b.status == "closed":
        tallies = " : ".join(f"{_e(k)} {n}" for k, n in b.tallies.items())
        outcome = _step(
            "outcome" + (" won" if b.winner else " failed"),
            "Outcome",
            f"<b>{_e(b.winner) + ' wins' if b.winner else 'no winner'}</b>"
            f"{' · ' + tallies if tallies else ''}<br>"
            f"<span class='muted'>{_e(b.cause or '')} · {_e(b.reason or '')}</span>",
        )
    else:
        outcome = _step("outcome", "Outcome", "<span class='muted'>open</span>")
    flow = "<span class='arrow'>→</span>".join([question, vote_step, outcome])
    return (
        f"<div class='ballot' id='ballot-{i}' data-node='{_e(b.node or '')}' "
        f"data-status='{_e(b.status)}'>{head}<div class='flow'>{flow}</div></div>"
    )


def _tasks(tasks: Sequence[BoardTaskView]) -> str:
    rows = "".join(
        f"<tr class='task' id='task-{i}' data-node='{_e(t.node or '')}'>"
        f"<td>{_e(t.node or '-')}</td><td>{_e(t.status)}</td><td>{_e(t.worker or '-')}</td>"
        f"<td>{t.attempt if t.attempt is not None else '-'}</td>"
        f"<td>{_duration(t.latency_ms) if t.latency_ms is not None else '-'}</td>"
        f"<td class='muted'>{_e(t.reason or t.id)}</td></tr>"
        for i, t in enumerate(tasks)
    )
    return (
        "<div class='coord-title'>Board tasks</div><table id='tasks'><tr><th>node</th>"
        "<th>status</th><th>worker</th><th>try</th><th>took</th><th></th></tr>"
        f"{rows}</table>"
    )


def _step(kind: str, title: str, body: str) -> str:
    return f"<div class='step {kind}'><h4>{title}</h4>{body}</div>"


def _agents_table(view: RunView) -> str:
    if not view.agents:
        return ""
    body = "".join(
        f"<tr><td>{_e(a.agent)}</td><td>{a.nodes}</td><td>{a.tokens}</td>"
        f"<td>{a.tool_calls}</td><td>{_e(format_cost(a.cost))}</td></tr>"
        for a in view.agents
    )
    head = "<tr><th>agent</th><th>passes</th><th>tokens</th><th>tools</th><th>cost</th></tr>"
    return (
        "<section><h2>Agents</h2><div id='agents-view'>"
        f"<table id='agents'>{head}{body}</table></div></section>"
    )


# -- text ------------------------------------------------------------------------------------------


def _count(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def _number(x: float | None) -> str:
    """A figure with up to 6 significant digits (``3.25e-05``, ``10.0325``), ``-`` for None."""
    if x is None:
        return "-"
    if not math.isfinite(x):
        return str(x)
    return f"{x:.6g}"


def _duration(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.3g} ms" if ms < 1000 else f"{ms / 1000:.3g} s"


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _seconds(iso: str) -> float:
    return dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()


def _e(text: str) -> str:
    """``text`` as HTML text or an attribute value, control characters shown as escapes (the
    page's JSON keeps the exact value)."""
    return html.escape(printable(str(text)), quote=True)
