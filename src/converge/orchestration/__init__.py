"""Graph orchestration: graphs in YAML or Python, the engine, checkpoints and resume.

```python
from converge.orchestration import Engine, Graph, load_graph

graph = load_graph("review.yaml")            # or Graph("review").add_node(...)...
async with Engine(store) as engine:
    result = await engine.execute(graph, {"source_code": code})
```
"""

from converge.orchestration._agents import AgentSpec
from converge.orchestration._context import NodeContext, UsageExceeded
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
