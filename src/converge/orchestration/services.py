"""``Services``: what the engine lends to nodes beyond an agent.

Nodes whose work goes beyond a plain agent get them.

A tender node needs a bidding protocol, a board node a task manager, a consensus node a
ballot box, a team node the pool to pick from and the trust model to weigh by. The graph says
*what* a node does (``kind: tender``, ``pool: writers``…); the engine's ``Services`` say *with
what*, so one graph runs unchanged against an in-memory test setup or a shared store.
Every field is optional; a node kind that needs a missing one fails with an error naming it.

A node kind says what it needs with a ``needs()`` method returning ``Needs``: the services, and
who beside the engine does its work (a board node's workers, a tender's providers, a consensus
gate's voters). ``needs_of(graph)`` collects them for every node, subgraphs included, so a host
(the command line) builds only what a graph uses and ``converge validate`` can say who provides
what. A child graph reached through several nodes (a file the loader read once) is walked once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from converge.errors import ValidationError

if TYPE_CHECKING:
    from converge.agents.memory import ContextScopes
    from converge.coordination.bidding import BiddingProtocol
    from converge.coordination.consensus import Consensus
    from converge.coordination.discovery import DiscoveryService
    from converge.coordination.pool_manager import PoolManager
    from converge.coordination.task_manager import TaskManager
    from converge.core.identity import Identity
    from converge.network.transport import Transport
    from converge.policy.trust import TrustModel

__all__ = ["Needs", "Services", "needs_of"]

SERVICES = (
    "identity",
    "network",
    "pools",
    "tasks",
    "discovery",
    "trust",
    "bidding",
    "consensus",
    "agents",
    "memory",
)
"""The services by name, as ``Services`` has them."""


class Needs(msgspec.Struct, frozen=True):
    """What one node needs of the engine's services, and who does its work."""

    kind: str
    """The node's kind (``board``, ``tender``…)."""
    services: tuple[str, ...]
    """The ``Services`` fields it uses."""
    participants: str = ""
    """Who beside the engine does its work (``workers``, ``providers``, ``voters``,
    ``members``); empty: nobody."""
    across_processes: bool = False
    """Whether those participants may run in another process sharing the store (the task board
    crosses processes through the store; messages do not yet)."""


def needs_of(graph: Any) -> list[tuple[str, Needs]]:
    """``(node id, Needs)`` of every node of ``graph`` that needs a service, in node order;
    nodes of a subgraph are named ``node/child``. A graph with ``grants`` needs ``memory``."""
    found: list[tuple[str, Needs]] = []
    _collect(graph, "", found, set())
    return found


def _collect(graph: Any, prefix: str, found: list[tuple[str, Needs]], seen: set[int]) -> None:
    if id(graph) in seen:  # a graph nested in itself is refused when compiled; do not loop
        return
    seen.add(id(graph))
    if getattr(graph, "grants", None):
        found.append((prefix.rstrip("/") or graph.name, Needs("grants", ("memory",))))
    agents = getattr(graph, "agents", {})
    for node in graph.nodes:
        agent = agents.get(node.agent, node.agent)
        needs = getattr(agent, "needs", None)
        if callable(needs):
            found.append((prefix + node.id, needs()))
        child = getattr(agent, "graph", None)
        if child is not None and hasattr(child, "nodes"):
            _collect(child, f"{prefix}{node.id}/", found, seen)


class Services:
    """The coordination services nodes may use (all optional).

    Args:
        identity: the engine's own identity (it signs what the engine issues, e.g. intents).
        network: where messages to other agents go.
        pools: pool membership (teams and tenders pick members from a pool).
        tasks: the task board (board nodes post their work here).
        discovery: who offers which capability.
        trust: the trust model (weights, minimum trust, updates from receipts).
        bidding: the requester's contract-net protocol (tender nodes).
        consensus: ballots (consensus nodes).
        agents: agents by name, for teams and kinds that name their members.
        memory: the context scopes (request, session, agent, graph, global) nodes reach through
            ``ctx.context``.
        grants: what each agent (by its name in the graph) may read and write there; an agent
            without grants sees nothing (the graph's own ``grants`` take precedence).
    """

    def __init__(
        self,
        *,
        identity: Identity | None = None,
        network: Transport | None = None,
        pools: PoolManager | None = None,
        tasks: TaskManager | None = None,
        discovery: DiscoveryService | None = None,
        trust: TrustModel | None = None,
        bidding: BiddingProtocol | None = None,
        consensus: Consensus | None = None,
        agents: dict[str, Any] | None = None,
        memory: ContextScopes | None = None,
        grants: dict[str, Any] | None = None,
    ) -> None:
        self.identity = identity
        self.network = network
        self.pools = pools
        self.tasks = tasks
        self.discovery = discovery
        self.trust = trust
        self.bidding = bidding
        self.consensus = consensus
        self.agents: dict[str, Any] = dict(agents or {})
        self.memory = memory
        self.grants: dict[str, Any] = dict(grants or {})

    def need(self, name: str, node: str, kind: str) -> Any:
        """The service ``name``, or a ``ValidationError`` saying the node of ``kind`` needs it."""
        value = getattr(self, name, None)
        if value is None:
            raise ValidationError(
                f"node {node!r} ({kind}) needs the engine's `{name}` service: "
                f"Engine(services=Services({name}=...))",
                field=f"services.{name}",
            )
        return value

    def __repr__(self) -> str:
        have = [k for k, v in vars(self).items() if v]
        return f"Services({', '.join(have)})"
