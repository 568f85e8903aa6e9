"""What a node's context reports to its run: streamed chunks, progress, checkpoints, child
runs (subgraphs) and the context scopes. ``RunState`` inherits it; kept apart so one run's
loop and one node's view of it read on their own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from converge.errors import ValidationError
from converge.orchestration.services import Services

if TYPE_CHECKING:
    from converge.orchestration._budget import AgentBudget
    from converge.orchestration._plan import Plan

__all__ = ["NodeHost"]


class NodeHost:
    """The run-side half of ``NodeContext`` (mixed into ``RunState``)."""

    # Set by RunState.__init__.
    plan: Plan
    run_id: str
    trace_id: str
    inputs: dict[str, Any]
    plan_grants: dict[str, Any]
    listener: Callable[[str, str | None, dict[str, Any]], None] | None
    _services: Services
    budget: AgentBudget
    _spawn: Callable[[Any, dict[str, Any], str, str, Any, AgentBudget], Awaitable[Any]] | None
    _request: Any

    def log(
        self,
        kind: str,
        data: dict[str, Any],
        *,
        parent: str | None = None,
        at: float | None = None,
    ) -> Any:
        raise NotImplementedError  # RunState's

    async def flush(self) -> None:
        raise NotImplementedError  # RunState's

    def chunk(self, node_id: str, chunk: Any) -> None:
        """Stream a node's partial output to the listener (never logged)."""
        if self.listener is not None:
            self.listener("node.chunk", node_id, {"node": node_id, "chunk": chunk})

    def progress(self, node_id: str, iteration: int, fraction: float, message: str) -> None:
        """Log a node's progress."""
        if not 0.0 <= fraction <= 1.0:
            raise ValidationError(f"progress is a fraction in [0, 1], not {fraction!r}")
        self.log(
            "node.progress",
            {"node": node_id, "iteration": iteration, "fraction": fraction, "message": message},
        )

    async def checkpoint(self, node_id: str, label: str) -> None:
        """Log a checkpoint named by a node, and write it at once."""
        self.log("run.checkpoint", {"label": label, "node": node_id})
        await self.flush()

    @property
    def services(self) -> Services:
        """What the engine lends to nodes."""
        return self._services

    def memory_context(self, node_id: str) -> Any:
        """The context of a node's agent: its grants, the run's request scope (shared by the
        run's nodes), the session named by the graph input ``session_id`` if any, the agent
        scope of its name and the graph scope of the run's root."""
        scopes = self._services.memory
        if scopes is None:
            raise ValidationError(
                f"node {node_id!r} asks for its context, but the engine has no memory: "
                "Engine(services=Services(memory=ContextScopes(store)))",
                field="services.memory",
            )
        agent = self.plan.by_id[node_id].agent.name
        grants = self.plan_grants.get(agent, self._services.grants.get(agent, {}))
        from converge.agents.memory import Grants, RequestScope

        if isinstance(grants, dict) and grants and set(grants) <= {"read", "write"}:
            grants = Grants(
                read={k: tuple(v) for k, v in grants.get("read", {}).items()},
                write={k: tuple(v) for k, v in grants.get("write", {}).items()},
            )
        if self._request is None:
            self._request = RequestScope()
        session = self.inputs.get("session_id")
        return scopes.context(
            grants,
            agent=agent,
            session_id=str(session) if session is not None else None,
            run_id=self.trace_id,
            request=self._request,
        )

    async def subrun(
        self, node_id: str, iteration: int, graph: Any, inputs: dict[str, Any], answer: Any
    ) -> Any:
        """Run (or continue) the child run of a node's pass; see ``NodeContext.run_graph``."""
        if self._spawn is None:
            raise ValidationError("this run cannot start child runs")
        child = f"{self.run_id}/{node_id}/{iteration}"
        # The child's agents count in this run's budget (``_budget``).
        return await self._spawn(graph, inputs, child, self.trace_id, answer, self.budget)
