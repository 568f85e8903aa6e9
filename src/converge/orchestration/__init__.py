"""Graph orchestration: graphs in YAML or Python, the engine, checkpoints and resume.

```python
from converge.orchestration import Engine, Graph, load_graph

graph = load_graph("review.yaml")            # or Graph("review").add_node(...)...
async with Engine(store) as engine:
    result = await engine.execute(graph, {"source_code": code})
```
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from converge.orchestration._agents import AgentSpec
    from converge.orchestration._budget import UsageExceeded
    from converge.orchestration._context import NodeContext
    from converge.orchestration._expr import Expression, ExpressionError, parse_expression
    from converge.orchestration._model import (
        Edge,
        ExecutionConfig,
        GraphConfig,
        Node,
        NodePolicy,
        RetryPolicy,
    )
    from converge.orchestration._pass import NodeFailure, Replacement
    from converge.orchestration._refs import MISSING, Halt, Missing
    from converge.orchestration.board_node import BoardTask, BoardTaskFailed
    from converge.orchestration.consensus_gate import ConsensusGate
    from converge.orchestration.engine import (
        Engine,
        RunEvent,
        RunFailed,
        RunHandle,
        RunResult,
        RunStatus,
    )
    from converge.orchestration.graph import Graph
    from converge.orchestration.kinds import KindContext, kind_names, register_kind
    from converge.orchestration.ownership import LeasePolicy, RunOwned
    from converge.orchestration.patterns import (
        UnknownRoute,
        debate,
        fan_out,
        hierarchy,
        pipeline,
        router,
        supervisor,
    )
    from converge.orchestration.services import Services
    from converge.orchestration.subgraph import Subgraph
    from converge.orchestration.team import Team
    from converge.orchestration.tender import Tender, TenderFailed
    from converge.orchestration.yaml_loader import load_graph, loads_graph

# Names are imported on first use (PEP 562), so `converge validate` and the other commands that
# only read graphs do not import the coordination layer, the node kinds or the engine.
_EXPORTS: dict[str, str] = {
    "AgentSpec": "converge.orchestration._agents",
    "BoardTask": "converge.orchestration.board_node",
    "BoardTaskFailed": "converge.orchestration.board_node",
    "ConsensusGate": "converge.orchestration.consensus_gate",
    "Edge": "converge.orchestration._model",
    "Engine": "converge.orchestration.engine",
    "ExecutionConfig": "converge.orchestration._model",
    "Expression": "converge.orchestration._expr",
    "ExpressionError": "converge.orchestration._expr",
    "Graph": "converge.orchestration.graph",
    "GraphConfig": "converge.orchestration._model",
    "Halt": "converge.orchestration._refs",
    "KindContext": "converge.orchestration.kinds",
    "LeasePolicy": "converge.orchestration.ownership",
    "MISSING": "converge.orchestration._refs",
    "Missing": "converge.orchestration._refs",
    "Node": "converge.orchestration._model",
    "NodeContext": "converge.orchestration._context",
    "NodeFailure": "converge.orchestration._pass",
    "NodePolicy": "converge.orchestration._model",
    "Replacement": "converge.orchestration._pass",
    "RetryPolicy": "converge.orchestration._model",
    "RunEvent": "converge.orchestration.engine",
    "RunFailed": "converge.orchestration.engine",
    "RunHandle": "converge.orchestration.engine",
    "RunOwned": "converge.orchestration.ownership",
    "RunResult": "converge.orchestration.engine",
    "RunStatus": "converge.orchestration.engine",
    "Services": "converge.orchestration.services",
    "Subgraph": "converge.orchestration.subgraph",
    "Team": "converge.orchestration.team",
    "Tender": "converge.orchestration.tender",
    "TenderFailed": "converge.orchestration.tender",
    "UnknownRoute": "converge.orchestration.patterns",
    "UsageExceeded": "converge.orchestration._budget",
    "debate": "converge.orchestration.patterns",
    "fan_out": "converge.orchestration.patterns",
    "hierarchy": "converge.orchestration.patterns",
    "kind_names": "converge.orchestration.kinds",
    "load_graph": "converge.orchestration.yaml_loader",
    "loads_graph": "converge.orchestration.yaml_loader",
    "parse_expression": "converge.orchestration._expr",
    "pipeline": "converge.orchestration.patterns",
    "register_kind": "converge.orchestration.kinds",
    "router": "converge.orchestration.patterns",
    "supervisor": "converge.orchestration.patterns",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "MISSING",
    "AgentSpec",
    "BoardTask",
    "BoardTaskFailed",
    "ConsensusGate",
    "Edge",
    "Engine",
    "ExecutionConfig",
    "Expression",
    "ExpressionError",
    "Graph",
    "GraphConfig",
    "Halt",
    "KindContext",
    "LeasePolicy",
    "Missing",
    "Node",
    "NodeContext",
    "NodeFailure",
    "NodePolicy",
    "Replacement",
    "RetryPolicy",
    "RunEvent",
    "RunFailed",
    "RunHandle",
    "RunOwned",
    "RunResult",
    "RunStatus",
    "Services",
    "Subgraph",
    "Team",
    "Tender",
    "TenderFailed",
    "UnknownRoute",
    "UsageExceeded",
    "debate",
    "fan_out",
    "hierarchy",
    "kind_names",
    "load_graph",
    "loads_graph",
    "parse_expression",
    "pipeline",
    "register_kind",
    "router",
    "supervisor",
]
