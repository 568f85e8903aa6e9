"""What the tender tests share: provider agents that bid from their own runtimes and do the
work with a plain function, and a world of 20 of them around an engine's bidding service."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from converge.coordination import BiddingProtocol, DiscoveryService, PoolManager
from converge.coordination.bidding import (
    INTENT_KIND,
    TASK_START_KIND,
    intent_of,
    report_done,
    task_start_of,
)
from converge.core import Agent, Decision, Identity, Message, SubmitBid, Task
from converge.core.clock import Clock, ManualClock, system_clock
from converge.core.pool import Pool
from converge.network import LocalNetwork
from converge.orchestration import Services
from converge.policy.trust import TrustModel
from converge.runtime import AgentRuntime, StandardExecutor
from converge.store import Store

__all__ = ["POOL", "N", "Provider", "SleepClock", "World", "eventually", "identity", "world"]

N = 20
POOL = "writers"
Work = Callable[[dict[str, Any]], Any]


def identity(index: int) -> Identity:
    """Provider ``index``'s identity: the same in every process (the crash test needs it)."""
    return Identity.from_private_bytes(bytes([index + 1]) * 32)


def write(inputs: dict[str, Any]) -> str:
    return f"text on {', '.join(map(str, inputs.values()))}"


class Provider(Agent):
    """Bids its own figures on every intent; when awarded, runs ``work(inputs)`` (a plain
    function, sync or async) and reports its output, or a failure if it raises. A task it
    was already given (a TaskStart sent again) is not done twice."""

    def __init__(
        self,
        index: int,
        clock: Clock,
        *,
        work: Work = write,
        cost: float | None = None,
        quality: float | None = None,
        bids: bool = True,
    ) -> None:
        super().__init__(identity(index), name=f"p{index}", capabilities=["write@1.0.0"])
        self.index = index
        self.clock = clock
        self.work = work
        self.cost = 10.0 + index if cost is None else cost
        self.quality = round(0.5 + 0.02 * index, 4) if quality is None else quality
        self.bids = bids
        self.intents = 0
        self.tasks: list[str] = []

    async def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        out: list[Decision] = []
        for m in messages:
            if m.kind == INTENT_KIND:
                self.intents += 1
                if self.bids:
                    terms = {"quality": self.quality, "latency_s": 1.0, "reliability": 0.9}
                    out.append(SubmitBid(auction_id=intent_of(m).id, amount=self.cost, terms=terms))
            elif m.kind == TASK_START_KIND:
                start = task_start_of(m)
                if start.task_id in self.tasks:
                    continue
                self.tasks.append(start.task_id)
                begun = self.clock.now()
                try:
                    output = self.work(dict(start.inputs))
                    if inspect.isawaitable(output):
                        output = await output
                except Exception as exc:
                    out += report_done(
                        self.identity, start, status="failed", error=str(exc), now=begun
                    )
                else:
                    now = self.clock.now()
                    out += report_done(
                        self.identity, start, output=output, now=now, started_at=begun
                    )
        return out


class SleepClock(ManualClock):
    """A manual clock that keeps how long each sleeper on it asked to sleep, so a test
    advances time once the waiter it means is really waiting."""

    def __init__(self, start: float) -> None:
        super().__init__(start)
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await super().sleep(seconds)


class World:
    """The engine's side (requester identity, bidding service) and the providers' runtimes."""

    def __init__(self, store: Store, clock: Clock, requester: Identity) -> None:
        self.store = store
        self.clock = clock
        self.network = LocalNetwork()
        self.trust = TrustModel(store, clock=clock)
        self.discovery = DiscoveryService(store, clock=clock)
        self.pools = PoolManager(store, clock=clock)
        self.bidding = BiddingProtocol(
            store,
            requester,
            network=self.network,
            discovery=self.discovery,
            pools=self.pools,
            trust=self.trust,
            clock=clock,
        )
        self.services = Services(identity=requester, bidding=self.bidding, trust=self.trust)
        self.providers: list[Provider] = []


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait until ``check()`` holds, failing on timeout."""
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110 - a test's bounded wait for a condition
            await asyncio.sleep(0.002)


@contextlib.asynccontextmanager
async def world(
    store: Store,
    providers: Callable[[Clock], Sequence[Provider]] | None = None,
    *,
    clock: Clock = system_clock,
    members: Callable[[Provider], bool] = lambda p: True,
    requester: Identity | None = None,
) -> AsyncIterator[World]:
    """A running world: 20 providers (or ``providers(clock)``), those ``members`` admits in the
    pool ``writers``, each in its own ``AgentRuntime``, and the bidding service serving."""
    w = World(store, clock, requester or Identity.from_private_bytes(b"\x7f" * 32))
    w.providers = list(providers(clock) if providers else (Provider(i, clock) for i in range(N)))
    if await w.pools.get_pool(POOL) is None:
        await w.pools.create_pool(Pool(name=POOL, id=POOL))
    for p in w.providers:
        if members(p):
            await w.pools.join_pool(p.did, POOL)
    executor = StandardExecutor(network=w.network, bidding_protocols={"*": w.bidding}, clock=clock)

    async def registered() -> bool:
        return len(await w.discovery.find(capability="write")) >= len(w.providers)

    async with contextlib.AsyncExitStack() as stack:
        for p in w.providers:
            runtime = AgentRuntime(
                p, network=w.network, store=store, discovery=w.discovery, executor=executor,
                clock=clock,
            )  # fmt: skip
            await stack.enter_async_context(runtime)
        await stack.enter_async_context(w.bidding.serving())
        await eventually(registered)
        yield w
