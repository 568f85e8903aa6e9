"""The coordination services ``converge run`` lends a run.

``converge run`` and ``converge resume`` lend them, on the run's store.

A graph none of whose nodes needs a service gets none, and nothing more is imported. Otherwise
the engine gets every service over the run's store (``converge.orchestration.needs_of`` says
which nodes need which):

- ``tasks``, ``pools``, ``discovery``, ``trust``: the store's task board, pools, discovery and
  trust model — the same ones ``converge agents run`` uses on that store;
- ``consensus``: the store's ballots;
- ``identity``: the engine's own Ed25519 identity, from ``engine.pem`` in ``$CONVERGE_HOME``,
  else beside the store; created (mode 0600) on first use, so a resumed run signs, asks and
  countersigns as the same requester;
- ``network`` and ``bidding``: an in-process ``LocalNetwork`` and the engine's
  ``BiddingProtocol``, serving its inbox while the run lasts;
- ``memory``: context scopes on the store, for graphs with ``grants``.

With ``--agents FILE`` the file's agents run in this process on those services (their votes go
on the store's ballots, their bids to the engine's bidding protocol), and ``Services.agents``
holds them by name (team members). Across processes only the task board crosses (through the
store): a board node's workers may be ``converge agents run`` processes on the same store,
while a tender's providers and a consensus gate's voters, reached by message, must run here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from converge.cli._config import Settings

if TYPE_CHECKING:
    from converge.cli._agents_config import AgentsConfig
    from converge.core.identity import Identity
    from converge.orchestration import Graph, Services
    from converge.store import Store

__all__ = ["engine_key", "explain", "run_services"]


def engine_key(cfg: Settings) -> Path:
    """Where the engine's identity is kept: ``$CONVERGE_HOME/engine.pem``, else beside the
    store."""
    home = os.environ.get("CONVERGE_HOME")
    return Path(home) / "engine.pem" if home else cfg.store.parent / "engine.pem"


def _identity(path: Path) -> Identity:
    from converge.core.identity import Identity
    from converge.errors import IdentityError, ValidationError

    try:
        if path.exists():
            return Identity.load(path)
        identity = Identity.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        identity.save(path)
        return identity
    except (IdentityError, OSError) as exc:
        raise ValidationError(f"the engine's key {path}: {exc}", field="engine_key") from None


@contextlib.asynccontextmanager
async def run_services(
    cfg: Settings,
    store: Store,
    graph: Graph,
    agents: AgentsConfig | None,
    echo: Callable[[str], None],
) -> AsyncIterator[Services | None]:
    """The services ``graph`` needs on ``store`` (None if it needs none and no agents file is
    given), with the agents of ``agents`` running beside it for as long as the block lasts."""
    from converge.orchestration.services import needs_of

    needs = needs_of(graph)
    if not needs and agents is None:
        yield None
        return
    from converge.agents.memory import ContextScopes
    from converge.cli._agents_run import AgentHost, build_agents
    from converge.coordination import (
        BiddingProtocol,
        Consensus,
        DiscoveryService,
        PoolManager,
        TaskManager,
    )
    from converge.network import LocalNetwork
    from converge.orchestration import Services
    from converge.policy.trust import TrustModel
    from converge.runtime import StandardExecutor

    built = build_agents(agents) if agents is not None else []
    identity = _identity(engine_key(cfg))
    network = LocalNetwork()
    tasks = TaskManager(store)
    pools = PoolManager(store)
    discovery = DiscoveryService(store)
    trust = TrustModel(store)
    consensus = Consensus(store, trust=trust)
    bidding = BiddingProtocol(
        store, identity, network=network, discovery=discovery, pools=pools, trust=trust
    )
    services = Services(
        identity=identity,
        network=network,
        pools=pools,
        tasks=tasks,
        discovery=discovery,
        trust=trust,
        bidding=bidding,
        consensus=consensus,
        agents={spec.name: agent for spec, agent in built},
        memory=ContextScopes(store),
    )
    async with network, bidding.serving():
        if agents is None:
            yield services
            return
        executor = StandardExecutor(
            network=network,
            tasks=tasks,
            pools=pools,
            votes_store=consensus,
            bidding_protocols={"*": bidding},
        )
        host = AgentHost(
            agents,
            built,
            network=network,
            tasks=tasks,
            pools=pools,
            discovery=discovery,
            executor=executor,
            echo=echo,
        )
        try:
            await host.start()
            yield services
        finally:
            await host.stop("the run ended")


def explain(graph: Graph, agents: AgentsConfig | None) -> list[str]:
    """One line per node that needs a service: what it needs, and whether ``converge run``
    (with ``agents``, the agents file, if given) provides it and its participants."""
    from converge.orchestration.services import needs_of

    lines: list[str] = []
    for node, need in needs_of(graph):
        if need.kind == "grants":
            lines.append(
                f"graph {node}: grants need memory: `converge run` provides the store's "
                "context scopes"
            )
            continue
        services = ", ".join(need.services) or "nothing"
        text = f"node {node} ({need.kind}): needs {services}: `converge run` provides"
        if not need.participants:
            lines.append(f"{text} it")
            continue
        if agents is not None:
            names = ", ".join(spec.name for spec in agents.agents)
            who = f"its {need.participants} among the agents of {agents.source} ({names})"
        elif need.across_processes:
            who = (
                f"its {need.participants} are `converge agents run` processes on the same "
                "store, or the agents of --agents FILE"
            )
        else:
            who = (
                f"its {need.participants} must run in the run's process: pass --agents "
                "AGENTS.yaml (messages do not cross processes yet)"
            )
        lines.append(f"{text} them; {who}")
    return lines
