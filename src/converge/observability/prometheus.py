"""A run's metrics in the Prometheus text format.

The metrics of ``converge metrics``, with the ``metrics`` extra.

```
converge_node_latency_seconds{node="analyzer"} 0.012
converge_tokens_total{agent="code_analyzer"} 2300.0
converge_tool_calls_total{agent="code_analyzer"} 3.0
converge_node_executions_total{status="success"} 4.0
converge_checkpoints_total 2.0
```

Every sample also carries ``run`` and ``graph`` labels, so the texts of many runs can be served side
by side; one collector per run. Also ``converge_retries_total``, ``converge_agents_spawned`` and
``converge_success_ratio``. ``converge metrics --prometheus`` writes it; without the extra that is
``MissingExtra`` naming it (exit 1). ``prometheus-client`` is imported when a text is made, not
before.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from converge.errors import MissingExtra

__all__ = ["MissingExtra", "prometheus_text"]


def prometheus_text(metrics: dict[str, Any], trace: dict[str, Any]) -> str:
    """The exposition text of a run's ``metrics_of`` and ``trace_of`` results.

    Raises:
        MissingExtra: ``prometheus-client`` is not installed (the ``metrics`` extra).
    """
    try:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    except ImportError as exc:
        raise MissingExtra("prometheus-client", "metrics", "--prometheus") from exc

    run = [str(metrics["trace_id"]), str(metrics["graph_id"])]
    statuses: dict[str, int] = {}
    for row in trace["nodes"]:
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1

    class RunCollector:
        def collect(self) -> Iterator[Any]:
            latency = GaugeMetricFamily(
                "converge_node_latency_seconds",
                "Time a node took, summed over its passes.",
                labels=["run", "graph", "node"],
            )
            for node, ms in metrics["latency_ms_per_node"].items():
                latency.add_metric([*run, node], ms / 1e3)
            tokens = CounterMetricFamily(
                "converge_tokens", "Tokens an agent used.", labels=["run", "graph", "agent"]
            )
            for agent, n in metrics["tokens_per_agent"].items():
                tokens.add_metric([*run, agent], n)
            tools = CounterMetricFamily(
                "converge_tool_calls", "Tool calls an agent made.", labels=["run", "graph", "agent"]
            )
            for agent, n in metrics["tool_calls_per_agent"].items():
                tools.add_metric([*run, agent], n)
            executions = CounterMetricFamily(
                "converge_node_executions",
                "Node passes, by their status.",
                labels=["run", "graph", "status"],
            )
            for status, n in sorted(statuses.items()):
                executions.add_metric([*run, status], n)
            yield latency
            yield tokens
            yield tools
            yield executions
            for name, doc, key in (
                ("converge_checkpoints", "Checkpoints the run recorded.", "checkpoints"),
                ("converge_retries", "Node retries.", "retries"),
            ):
                family = CounterMetricFamily(name, doc, labels=["run", "graph"])
                family.add_metric(run, metrics[key])
                yield family
            spawned = GaugeMetricFamily(
                "converge_agents_spawned", "Distinct agents the run used.", labels=["run", "graph"]
            )
            spawned.add_metric(run, metrics["agents_spawned"])
            yield spawned
            if metrics["success_rate"] is not None:
                rate = GaugeMetricFamily(
                    "converge_success_ratio",
                    "Finished node passes that succeeded.",
                    labels=["run", "graph"],
                )
                rate.add_metric(run, metrics["success_rate"])
                yield rate

    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunCollector())
    return generate_latest(registry).decode()
