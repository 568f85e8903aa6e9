"""Observability: everything derived from the event log.

Everything derived from the event log — one model of a run's coordination (``RunModel``:
every node and edge of its graph, each pass's inputs and output, its auctions and ballots) and
its renderings (tree, JSON, Mermaid, DOT, a self-contained HTML page), replay, the Prometheus
exposition of its metrics — JSON-lines logging, and text made safe to print on a terminal
(``printable``: control characters shown as escapes).

```python
events = await store.read(trace_id=run_id)
view = RunModel(run_id).add(events).view()  # nodes, edges, passes, auctions, ballots, tasks
Path("run.html").write_text(render_html(view))
graph = run_graph(events, run_id)           # the §8.1 trace + edges, agents, coordination
report = replay(events, run_id)             # report.differences: [] when the log agrees
print(printable(node_error))                # control characters shown as escapes
```
"""

from __future__ import annotations

from converge.observability._graph import coordination_objects, run_events, run_graph
from converge.observability.log_format import JsonFormatter, configure_logging
from converge.observability.prometheus import MissingExtra, prometheus_text
from converge.observability.render_html import render_html
from converge.observability.render_text import render_dot, render_mermaid, render_tree
from converge.observability.replay import ReplayReport, replay
from converge.observability.run_model import RunModel, RunView
from converge.observability.terminal import printable, printable_json

__all__ = [
    "JsonFormatter",
    "MissingExtra",
    "ReplayReport",
    "RunModel",
    "RunView",
    "configure_logging",
    "coordination_objects",
    "printable",
    "printable_json",
    "prometheus_text",
    "render_dot",
    "render_html",
    "render_mermaid",
    "render_tree",
    "replay",
    "run_events",
    "run_graph",
]
