"""``Market``: a requester and its providers; contract-net in a few lines.

```python
async with Market() as market:
    await market.add(
        Provider("alice", "translate@1.0", price=4.0, work=translate),
        Provider("bob", "translate@1.0", price=3.0, work=translate),
    )
    deal = await market.request("translate>=1.0", {"text": "hello"}, strategy="lowest_cost")
    print(deal.provider_name, deal.price, deal.output, deal.receipt.status)
```

A market owns what a contract-net round needs and wires it once: a store (a ``MemoryStore``
unless one is given), a ``LocalNetwork``, discovery, trust, the requester's identity and its
``BiddingProtocol`` serving its inbox, and an executor shared by the providers' runtimes.
``add`` starts each agent in its own ``AgentRuntime`` and returns once every one is
registered with discovery (``AgentRuntime.ready``), so a request finds them without polling.
``request`` is one whole round: it signs the intent, sends it to the providers that have the
capability, closes when every invited provider has bid (or the window ends), awards by the
named strategy, and returns once the winner's receipt is checked and countersigned — a
``Contract`` with the output and the receipt. Anything short of that is an exception, not a
result to inspect: ``ContractFailed`` (too few offers, the winner failed the job, a disputed
output) or ``TimeoutError`` (no receipt in ``timeout`` seconds after the award).

Decisions, for a user of a high-level helper: the helper is a context manager, as an HTTP
client is (everything it started is stopped on exit, its own store closed); it lives in the
runtime layer because it runs agents' runtimes (``converge.coordination`` keeps the protocol
and the ``Provider`` agent, which run anywhere); it hides nothing it owns — ``store``,
``network``, ``discovery``, ``trust``, ``bidding`` and ``runtimes`` are attributes, and every
step is an event in the store under the round's trace id, as with ``BiddingProtocol`` used by
hand. Any agent with ``decide()`` can join, not only a ``Provider``: the executor takes its
``SubmitBid`` decisions on this market's rounds.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from converge.coordination.bidding import (
    BiddingProtocol,
    ContractRound,
    OutputCheck,
    RoundStage,
    Strategy,
)
from converge.coordination.discovery import DiscoveryService
from converge.core.agent import Agent
from converge.core.capability import Requirement
from converge.core.clock import Clock, system_clock
from converge.core.identity import Identity
from converge.core.signing import unseal
from converge.errors import ContractFailed, StateError, ValidationError
from converge.network.local import LocalNetwork
from converge.network.transport import Transport
from converge.policy.trust import TrustModel
from converge.protocol.objects import Constraints, Intent, Receipt, TaskDone
from converge.runtime.agent_runtime import AgentRuntime
from converge.runtime.executor import StandardExecutor
from converge.store.base import Store
from converge.store.memory import MemoryStore

__all__ = ["Contract", "Market"]


@dataclasses.dataclass(frozen=True)
class Contract:
    """What a request came to: the winner, its price, the output and the receipt."""

    round: ContractRound
    """The round as it ended (SETTLED): the intent, every offer, the award, the reports."""
    provider: str
    """The winner's did."""
    provider_name: str
    """The winner's name (as registered with discovery; empty if it gave none)."""
    price: float
    """What the winner is paid: its own price, or the second price under ``second_price``."""
    output: Any
    """The winner's output."""
    receipt: Receipt
    """The receipt, signed by the winner and countersigned by the requester, both verified."""

    @property
    def auction_id(self) -> str:
        """The round's id (the intent's)."""
        return self.round.id


class Market:
    """A requester and the providers it hires, on one network (see the module docstring).

    Args:
        store: where rounds, events and trust are kept; a new ``MemoryStore`` by default,
            closed with the market (a store given is left open).
        identity: the requester's key pair (a new one by default).
        network: the transport (a new ``LocalNetwork`` by default, closed with the market).
        clock: the time of bid windows, messages and trust.
        check_output: the requester's check of an output before it countersigns (None:
            every output the receipt vouches for is accepted).
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        identity: Identity | None = None,
        network: Transport | None = None,
        clock: Clock = system_clock,
        check_output: OutputCheck | None = None,
    ) -> None:
        if store is not None and not isinstance(store, Store):
            raise ValidationError(f"store is a Store, not {type(store).__name__}", field="store")
        if network is not None and not isinstance(network, Transport):
            raise ValidationError(
                f"network is a Transport, not {type(network).__name__}", field="network"
            )
        self._own_store = store is None
        self._own_network = network is None
        self.store: Store = MemoryStore() if store is None else store
        self.network: Transport = LocalNetwork() if network is None else network
        self.clock = clock
        self.discovery = DiscoveryService(self.store, clock=clock)
        self.trust = TrustModel(self.store, clock=clock)
        self.bidding = BiddingProtocol(
            self.store,
            identity if identity is not None else Identity.generate(),
            network=self.network,
            discovery=self.discovery,
            trust=self.trust,
            clock=clock,
            check_output=check_output,
        )
        self.executor = StandardExecutor(
            network=self.network, bidding_protocols={"*": self.bidding}, clock=clock
        )
        self.runtimes: dict[str, AgentRuntime] = {}
        """The runtime of every agent added, by did."""
        self._stack: contextlib.AsyncExitStack | None = None
        self._closed = False

    @property
    def did(self) -> str:
        """The requester's did."""
        return self.bidding.did

    @property
    def identity(self) -> Identity:
        """The requester's identity (an engine whose tender nodes use ``bidding`` needs it)."""
        return self.bidding.identity

    # -- lifetime ----------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._stack is not None or self._closed:
            raise StateError("a Market is entered once")
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            if self._own_network and isinstance(self.network, LocalNetwork):
                await stack.enter_async_context(self.network)
            await stack.enter_async_context(self.bidding.serving())
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop every runtime (newest first), stop serving, close what the market opened.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._stack is not None:
                await self._stack.aclose()
        finally:
            if self._own_store:
                await self.store.aclose()

    # -- providers ---------------------------------------------------------------------------------

    async def add(self, *agents: Agent) -> list[AgentRuntime]:
        """Start each agent in its own runtime on the market's network; returns once each is
        registered with discovery, so the next request invites it.

        Raises:
            StateError: the market is not entered (``async with``), or is closed.
            ValidationError: not an ``Agent`` with ``decide()``, or one added already.
            Exception: what an agent's ``on_start()`` raised (the agents before it run on).
        """
        stack = self._require_open()
        for agent in agents:
            if not isinstance(agent, Agent):
                raise ValidationError(
                    f"a market runs Agents (a Provider, say), not {type(agent).__name__}",
                    field="agents",
                )
            if agent.did in self.runtimes:
                raise ValidationError(f"agent {agent.name!r} is in the market already")
        added = []
        for agent in agents:
            runtime = AgentRuntime(
                agent,
                network=self.network,
                store=self.store,
                discovery=self.discovery,
                executor=self.executor,
                clock=self.clock,
            )
            await stack.enter_async_context(runtime)
            self.runtimes[agent.did] = runtime
            added.append(runtime)
        return added

    # -- requests ----------------------------------------------------------------------------------

    async def request(
        self,
        capability: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        strategy: Strategy = "weighted",
        goal: str | None = None,
        max_cost: float | None = None,
        utility: Mapping[str, float] | None = None,
        bid_window: float = 5.0,
        providers: Sequence[str] | None = None,
        min_trust: float | None = None,
        min_offers: int = 1,
        timeout: float | None = 60.0,
    ) -> Contract:
        """Put ``inputs`` out to tender among the providers of ``capability`` and return the
        contract once the winner's receipt is countersigned.

        Args:
            capability: the requirement, a name and a version range (``"translate>=1.0"``;
                ``"translate@1.0"``, a capability, is a ``CapabilityError``).
            inputs: the data for the work (what the winner's ``work`` receives).
            strategy: ``lowest_cost``, ``highest_quality``, ``weighted``, ``first_price`` or
                ``second_price``.
            goal: the intent's goal in words (default: the capability's name).
            max_cost: the most the requester pays; dearer offers are refused.
            utility: the weighted strategy's weights (``cost``, ``latency``, ``quality``,
                ``reliability``, ``trust``).
            bid_window: seconds offers are taken; the round closes as soon as every invited
                provider has bid.
            providers: invite only these dids (default: every provider discovery finds).
            min_trust: invite, and accept offers from, only providers trusted this much.
            min_offers: the fewest valid offers worth awarding.
            timeout: seconds to wait, after the award, for the winner's receipt (None: no
                limit).

        Raises:
            ValidationError: a bad argument (``field`` names it).
            ContractFailed: too few valid offers, the winner failed the job, or its output was
                disputed (``reason`` says which; ``round`` is the round).
            TimeoutError: no receipt within ``timeout`` seconds of the award.
            StateError: the market is not entered, or is closed.
        """
        self._require_open()
        need = Requirement.parse(capability)  # a CapabilityError says what was meant
        if inputs is not None and not isinstance(inputs, Mapping):
            raise ValidationError(
                f"inputs is a mapping, not {type(inputs).__name__}", field="inputs"
            )
        intent = _intent(need, capability, inputs, goal, max_cost, utility, bid_window)
        opened = await self.bidding.announce(
            intent, strategy=strategy, providers=providers, min_trust=min_trust
        )
        closed = await self.bidding.run(opened.id, min_offers=min_offers)
        final = (
            closed if closed.is_terminal else await self.bidding.wait(opened.id, timeout=timeout)
        )
        return await self._contract(final)

    async def _contract(self, final: ContractRound) -> Contract:
        award = final.award
        if final.stage is not RoundStage.SETTLED or award is None or final.done is None:
            raise ContractFailed(final.id, str(final.stage), final.reason or "no award", final)
        done = unseal(final.done, TaskDone)
        if done.status != "completed":
            why = f"the winner's job {done.status}: {done.error or 'no reason given'}"
            raise ContractFailed(final.id, str(final.stage), why, final)
        receipt = await self.bidding.receipt(final.id)
        if receipt is None:  # a SETTLED round holds its receipt: never trust that blindly
            raise ContractFailed(final.id, str(final.stage), "no receipt", final)
        return Contract(
            round=final,
            provider=award.provider,
            provider_name=await self._name_of(award.provider),
            price=award.price,
            output=done.output,
            receipt=receipt,
        )

    async def _name_of(self, did: str) -> str:
        runtime = self.runtimes.get(did)
        if runtime is not None:
            return runtime.agent.name
        descriptor = await self.discovery.get(did)
        return descriptor.name if descriptor is not None else ""

    def _require_open(self) -> contextlib.AsyncExitStack:
        if self._closed:
            raise StateError("the market is closed")
        if self._stack is None:
            raise StateError("enter the market first: async with Market() as market")
        return self._stack


def _intent(
    need: Requirement,
    capability: str,
    inputs: Mapping[str, Any] | None,
    goal: str | None,
    max_cost: float | None,
    utility: Mapping[str, float] | None,
    bid_window: float,
) -> Intent:
    """The unsigned intent of a request (``Intent`` checks its own fields)."""
    return Intent(
        goal=goal if goal is not None else need.name,
        capability=capability,
        inputs=dict(inputs or {}),
        constraints=Constraints(max_cost=max_cost),
        utility=dict(utility or {}),
        bid_window_s=bid_window,
    )
