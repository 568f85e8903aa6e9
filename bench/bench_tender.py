"""What putting a node out to tender costs: a tender node among 20 in-process providers against
the same node with a fixed agent.

Each provider is an ``Agent`` in its own ``AgentRuntime`` on a ``LocalNetwork``: it answers the
intent with a ``SubmitBid`` (a signed offer, verified on arrival) and, when awarded, does the
work and sends its signed ``TaskDone`` and receipt; the engine's ``BiddingProtocol`` (serving
its inbox) closes the round as soon as all 20 offers are in, awards it, countersigns the
receipt and updates trust. The graph is one node; a run of it with a plain function agent is
the baseline. Per store (memory, SQLite in a temporary directory) it prints the median time of
a run of each, and the difference: the time the auction adds per node (target, issue 6:
<= 2 ms plus the bid window). A round closes early once every invited provider has bid, so the
bid window in effect is the offers' arrival, read from the round's events (opened -> last
offer accepted); ``added_beyond_the_bid_window`` is the rest (announce, close and award,
TaskStart, TaskDone, receipt, trust), judged against 2 ms.

Run: ``.venv/bin/python bench/bench_tender.py`` (``--runs`` per case, ``--window`` seconds)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import emit
from converge.coordination import BiddingProtocol, DiscoveryService, PoolManager
from converge.coordination.bidding import (
    INTENT_KIND,
    TASK_START_KIND,
    intent_of,
    report_done,
    task_start_of,
)
from converge.core import Agent, Decision, Identity, Message, SubmitBid, Task
from converge.core.pool import Pool
from converge.network import LocalNetwork
from converge.orchestration import Engine, Graph, Services, Tender
from converge.policy.trust import TrustModel
from converge.runtime import AgentRuntime, StandardExecutor
from converge.store import MemoryStore, SQLiteStore, Store

BENCH = "tender"
PROVIDERS = 20


def write(inputs: dict[str, Any]) -> str:
    return f"text on {inputs['topic']}"


class Provider(Agent):
    """Bids its cost on every intent; does the work when awarded."""

    def __init__(self, index: int) -> None:
        super().__init__(name=f"p{index}", capabilities=["write@1.0.0"])
        self.cost = 10.0 + index

    async def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        out: list[Decision] = []
        for m in messages:
            if m.kind == INTENT_KIND:
                out.append(SubmitBid(auction_id=intent_of(m).id, amount=self.cost))
            elif m.kind == TASK_START_KIND:
                start = task_start_of(m)
                now = time.time()
                out += report_done(self.identity, start, output=write(start.inputs), now=now)
        return out


async def measure(store: Store, runs: int, window: float) -> dict[str, float]:
    net = LocalNetwork()
    trust = TrustModel(store)
    discovery = DiscoveryService(store)
    pools = PoolManager(store)
    await pools.create_pool(Pool(name="writers", id="writers"))
    bidding = BiddingProtocol(
        store, Identity.generate(), network=net, discovery=discovery, pools=pools, trust=trust
    )
    providers = [Provider(i) for i in range(PROVIDERS)]
    for p in providers:
        await pools.join_pool(p.did, "writers")
    executor = StandardExecutor(network=net, bidding_protocols={"*": bidding})
    tender = Tender(pool="writers", capability="write", bid_window=window)
    graphs = {
        "fixed": Graph("fixed").add_node("write", write, inputs=["topic"]),
        "tender": Graph("tender").add_node("write", tender, inputs=["topic"]),
    }
    times: dict[str, list[float]] = {name: [] for name in graphs}
    times["offers"] = []
    async with contextlib.AsyncExitStack() as stack:
        for p in providers:
            runtime = AgentRuntime(
                p, network=net, store=store, discovery=discovery, executor=executor
            )
            await stack.enter_async_context(runtime)
        await stack.enter_async_context(bidding.serving())
        while len(await discovery.find(capability="write")) < PROVIDERS:  # noqa: ASYNC110 - runtimes register themselves as they start
            await asyncio.sleep(0.001)
        engine = Engine(store, services=Services(bidding=bidding, trust=trust))
        for i in range(runs + 3):  # alternate, so a noisy stretch hits both; 3 to warm up
            for name, graph in graphs.items():
                start = time.perf_counter()
                result = await engine.execute(graph, {"topic": f"t{i}"})
                elapsed = time.perf_counter() - start
                assert result.output == f"text on t{i}", result
                if i >= 3:
                    times[name].append(elapsed)
                if i >= 3 and name == "tender":
                    times["offers"].append(await offer_phase(store, result.run_id))
    return {name: statistics.median(t) * 1000 for name, t in times.items()}


async def offer_phase(store: Store, run_id: str) -> float:
    """Seconds from the round's opening to its last accepted offer: the bid window in effect
    (it closes as soon as every invited provider has bid)."""
    events = await store.read(trace_id=run_id)
    opened = min(e.at for e in events if e.kind == "bidding.opened")
    last = max(e.at for e in events if e.kind == "bidding.offer_accepted")
    return last - opened


async def main(runs: int, window: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        backends = {
            "memory": lambda: _memory(),
            "sqlite": lambda: SQLiteStore.open(Path(tmp) / "bench.db"),
        }
        for name, opener in backends.items():
            async with await opener() as store:
                ms = await measure(store, runs, window)
            added = ms["tender"] - ms["fixed"]
            target = 2.0 + window * 1000
            common = {"bench": BENCH, "providers": PROVIDERS, "runs": runs, "store": name}
            emit(**common, case=f"fixed_node_{name}", value=round(ms["fixed"], 3), unit="ms")
            emit(**common, case=f"tender_node_{name}", value=round(ms["tender"], 3), unit="ms")
            emit(
                **common,
                case=f"added_by_auction_{name}",
                value=round(added, 3),
                unit="ms",
                target=target,
                ok=added <= target,
                within_2ms_alone=added <= 2.0,
                bid_window_s=window,
            )
            # The bid window in effect is the offers' arrival (each offer signed by its
            # provider, verified and recorded); what the auction adds beyond it is the target.
            beyond = added - ms["offers"]
            emit(
                **common,
                case=f"added_beyond_the_bid_window_{name}",
                value=round(beyond, 3),
                unit="ms",
                offer_phase_ms=round(ms["offers"], 3),
                target=2.0,
                ok=beyond <= 2.0,
            )


async def _memory() -> MemoryStore:
    return MemoryStore()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--window", type=float, default=5.0)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.window))
