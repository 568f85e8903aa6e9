"""The marketplace: a requester's rounds of contract-net among a dozen provider runtimes.

Every provider is an ``Agent`` in its own ``AgentRuntime`` on one ``LocalNetwork``. It answers
each intent with a ``SubmitBid`` (its price, speed, quality and the reliability it *claims*) and,
when it wins, does the work — or fails it, as often as its true reliability says, drawn from its
own seeded RNG. The requester's ``BiddingProtocol`` picks winners by each round's strategy,
verifies and countersigns receipts, and updates trust from the outcomes; providers whose trust
falls below ``MIN_TRUST`` are no longer invited.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from converge.coordination import BiddingProtocol, DiscoveryService
from converge.coordination.bidding import (
    INTENT_KIND,
    TASK_START_KIND,
    RoundStage,
    Strategy,
    intent_of,
    report_done,
    task_start_of,
)
from converge.core import Agent, Decision, Identity, Message, SubmitBid, Task
from converge.errors import ValidationError
from converge.network import LocalNetwork
from converge.policy.trust import TrustModel
from converge.protocol import Constraints, Intent
from converge.runtime import AgentRuntime, StandardExecutor
from converge.store import Store

CAPABILITY = "translate"
STRATEGIES: tuple[Strategy, ...] = (
    "lowest_cost",
    "weighted",
    "second_price",
    "highest_quality",
    "first_price",
)
"""The strategy of round ``r`` (from 1) is ``STRATEGIES[(r - 1) % 5]``."""
UTILITY = {"cost": 0.3, "quality": 0.2, "reliability": 0.1, "trust": 0.4}
"""The weighted strategy's weights: trust counts most."""
MIN_TRUST = 0.4
"""Providers below this trust are not invited (a new provider starts at 0.5)."""


@dataclass(frozen=True)
class Profile:
    """What a provider is like: what it charges, how fast and good it is, how often it fails."""

    name: str
    cost: float
    latency_s: float
    quality: float
    reliability: float
    """The true chance its work succeeds; it claims at least 0.9 in its offers."""


PROVIDERS = (
    Profile("budgetbot", 4.0, 9.0, 0.55, 0.25),
    Profile("shortcut", 4.6, 2.0, 0.50, 0.50),
    Profile("flaky", 5.2, 3.0, 0.75, 0.60),
    Profile("bulk", 5.8, 12.0, 0.60, 0.85),
    Profile("quickdraw", 6.3, 1.5, 0.70, 0.90),
    Profile("midway", 7.0, 5.0, 0.78, 0.93),
    Profile("steady", 7.5, 4.0, 0.80, 0.97),
    Profile("nimble", 8.0, 1.0, 0.72, 0.92),
    Profile("veteran", 9.0, 4.5, 0.88, 0.96),
    Profile("careful", 10.0, 8.0, 0.90, 0.99),
    Profile("academy", 11.0, 6.0, 0.92, 0.95),
    Profile("premium", 14.0, 3.0, 0.97, 0.99),
)


class Provider(Agent):
    """Bids on every intent; when awarded, succeeds with its profile's reliability."""

    def __init__(self, profile: Profile, seed: int) -> None:
        super().__init__(name=profile.name, capabilities=[f"{CAPABILITY}@1.0.0"])
        self.profile = profile
        self.rng = random.Random(f"{seed}/{profile.name}")

    async def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        out: list[Decision] = []
        for m in messages:
            if m.kind == INTENT_KIND:
                p = self.profile
                price = round(p.cost * self.rng.uniform(0.95, 1.05), 2)
                terms = {
                    "latency_s": p.latency_s,
                    "quality": p.quality,
                    "reliability": max(p.reliability, 0.9),
                }
                out.append(SubmitBid(auction_id=intent_of(m).id, amount=price, terms=terms))
            elif m.kind == TASK_START_KIND:
                start = task_start_of(m)
                if self.rng.random() < self.profile.reliability:
                    text = f"{self.name} translated {start.inputs.get('document', '?')}"
                    out += report_done(self.identity, start, output=text, now=time.time())
                else:
                    out += report_done(
                        self.identity,
                        start,
                        now=time.time(),
                        status="failed",
                        error=f"{self.name} dropped the job",
                    )
        return out


@dataclass
class RoundReport:
    """One round: who was invited, who won at what price, and how the work ended."""

    number: int
    strategy: str
    invited: int
    offers: int
    stage: str
    winner: str | None = None
    price: float | None = None
    reason: str = ""
    receipt: dict[str, Any] | None = None
    """The verified receipt: ``status``, ``cost``, ``verified`` (both signatures checked)."""


@dataclass
class MarketReport:
    """A whole run: the rounds, and every provider's trust before round 1 and after each round."""

    rounds: list[RoundReport] = field(default_factory=list)
    trust: dict[str, list[float]] = field(default_factory=dict)


async def run_market(store: Store, rounds: int = 10, *, seed: int = 7) -> MarketReport:
    """Run ``rounds`` rounds of the market on ``store`` (deterministic for a ``seed``).

    Raises:
        ValidationError: ``rounds`` < 1.
    """
    if rounds < 1:
        raise ValidationError(f"rounds must be >= 1, not {rounds}", field="rounds")
    net = LocalNetwork()
    trust = TrustModel(store)
    discovery = DiscoveryService(store)
    bidding = BiddingProtocol(
        store, Identity.generate(), network=net, discovery=discovery, trust=trust
    )
    providers = [Provider(p, seed) for p in PROVIDERS]
    names = {p.did: p.name for p in providers}
    executor = StandardExecutor(network=net, bidding_protocols={"*": bidding})
    report = MarketReport(trust={p.name: [0.5] for p in providers})
    async with contextlib.AsyncExitStack() as stack:
        for p in providers:
            runtime = AgentRuntime(
                p, network=net, store=store, discovery=discovery, executor=executor
            )
            await stack.enter_async_context(runtime)
        # Each runtime is registered with discovery once its `async with` is entered.
        await stack.enter_async_context(bidding.serving())
        for number in range(1, rounds + 1):
            strategy = STRATEGIES[(number - 1) % len(STRATEGIES)]
            intent = Intent(
                goal=f"translate document {number} to French",
                capability=f"{CAPABILITY}>=1.0",
                inputs={"document": f"doc-{number}"},
                constraints=Constraints(max_cost=20.0),
                utility=UTILITY,
                bid_window_s=2.0,
            )
            opened = await bidding.announce(intent, strategy=strategy, min_trust=MIN_TRUST)
            await bidding.run(opened.id)
            final = await bidding.wait(opened.id, timeout=10.0)
            entry = RoundReport(
                number=number,
                strategy=strategy,
                invited=len(final.invited),
                offers=len(final.auction.offers),
                stage=str(final.stage),
                reason=final.reason or "",
            )
            award = final.auction.award
            if award is not None:
                entry.winner, entry.price = names.get(award.provider, "?"), award.price
            receipt = await bidding.receipt(opened.id)
            if receipt is not None:
                entry.receipt = {
                    "status": receipt.status,
                    "cost": receipt.cost,
                    "verified": final.stage is RoundStage.SETTLED,
                }
            report.rounds.append(entry)
            scores = await trust.scores(list(names))
            for did, name in names.items():
                report.trust[name].append(scores[did])
    return report
