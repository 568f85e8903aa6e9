"""Graph orchestration: graphs, the engine, checkpoints and resume.

Graphs in YAML or Python.

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
    from converge.core.missing import MISSING, Missing
    from converge.errors import (
        BoardTaskFailed,
        ExpressionError,
        RunFailed,
        RunOwned,
        TenderFailed,
        UnknownRoute,
        UsageExceeded,
    )
    from converge.orchestration._agents import AgentSpec
    from converge.orchestration._attempt import NodeFailure, Replacement
    from converge.orchestration._context import NodeContext
    from converge.orchestration._expr import Expression, parse_expression
    from converge.orchestration._model import (
        Edge,
        ExecutionConfig,
        GraphConfig,
        Node,
        NodePolicy,
        RetryPolicy,
    )
    from converge.orchestration._refs import Halt
    from converge.orchestration.engine import (
        Engine,
        RunEvent,
        RunHandle,
        RunResult,
        RunStatus,
        default_engine,
    )
    from converge.orchestration.graph import Graph
    from converge.orchestration.kinds import KindContext, kind_names, register_kind
    from converge.orchestration.kinds.board import BoardTask
    from converge.orchestration.kinds.consensus import ConsensusGate
    from converge.orchestration.kinds.subgraph import Subgraph
    from converge.orchestration.kinds.team import Team
    from converge.orchestration.kinds.tender import Tender
    from converge.orchestration.ownership import LeasePolicy
    from converge.orchestration.patterns import (
        debate,
        fan_out,
        hierarchy,
        pipeline,
        router,
        supervisor,
    )
    from converge.orchestration.planner import GoalPlanner
    from converge.orchestration.services import Services
    from converge.orchestration.yaml_loader import load_graph, loads_graph

# Names are imported on first use (PEP 562), so `converge validate` and the other commands that
# only read graphs do not import the coordination layer, the node kinds or the engine.
_EXPORTS: dict[str, str] = {
    "AgentSpec": "converge.orchestration._agents",
    "BoardTask": "converge.orchestration.kinds.board",
    "BoardTaskFailed": "converge.errors",
    "ConsensusGate": "converge.orchestration.kinds.consensus",
    "Edge": "converge.orchestration._model",
    "Engine": "converge.orchestration.engine",
    "ExecutionConfig": "converge.orchestration._model",
    "Expression": "converge.orchestration._expr",
    "ExpressionError": "converge.errors",
    "GoalPlanner": "converge.orchestration.planner",
    "Graph": "converge.orchestration.graph",
    "GraphConfig": "converge.orchestration._model",
    "Halt": "converge.orchestration._refs",
    "KindContext": "converge.orchestration.kinds",
    "LeasePolicy": "converge.orchestration.ownership",
    "MISSING": "converge.core.missing",
    "Missing": "converge.core.missing",
    "Node": "converge.orchestration._model",
    "NodeContext": "converge.orchestration._context",
    "NodeFailure": "converge.orchestration._attempt",
    "NodePolicy": "converge.orchestration._model",
    "Replacement": "converge.orchestration._attempt",
    "RetryPolicy": "converge.orchestration._model",
    "RunEvent": "converge.orchestration.engine",
    "RunFailed": "converge.errors",
    "RunHandle": "converge.orchestration.engine",
    "RunOwned": "converge.errors",
    "RunResult": "converge.orchestration.engine",
    "RunStatus": "converge.orchestration.engine",
    "Services": "converge.orchestration.services",
    "Subgraph": "converge.orchestration.kinds.subgraph",
    "Team": "converge.orchestration.kinds.team",
    "Tender": "converge.orchestration.kinds.tender",
    "TenderFailed": "converge.errors",
    "UnknownRoute": "converge.errors",
    "UsageExceeded": "converge.errors",
    "debate": "converge.orchestration.patterns",
    "default_engine": "converge.orchestration.engine",
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
    "GoalPlanner",
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
    "default_engine",
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
