"""``Tender``: a node whose work is put out to tender.

The providers of a pool bid for it (``kind: tender``).

The node's inputs become a signed ``Intent`` for ``capability``, sent by the engine's
``bidding`` service (a ``BiddingProtocol`` whose identity is the engine's, as requester) to the
members of ``pool`` that offer it; they bid from their own runtimes; the named ``strategy``
awards the work; the winner does it and reports; the engine checks and countersigns the
receipt, and the winner's trust moves. The node's output is the winner's ``TaskDone`` output;
its price is reported as the node's cost (``ctx.report_usage(cost=…)``) and the award is a
``node.progress`` note; every step of the round is a ``bidding.*`` event in the run's trace.

Rounds have ids derived from the node's idempotency key, ``tender:<run>/<node>/<iteration>:<n>``,
so a retried or resumed node finds the rounds it opened and never announces one again: an
open round is closed, an awarded one waited for (its ``TaskStart`` sent again, in case the
winner's copy died with a crashed process), a finished one read.

What takes over when things go wrong, in order, within ``max_rounds`` rounds per pass:

* **The winner fails** (a failed ``TaskDone``, an output the engine disputes, or no report
  within ``work_timeout``): a new round among the other valid bidders of the last round, best
  first (with unchanged bids its winner is the next-best offer); when none is left, the
  ``fallback`` agent runs in the node's place; without one the node fails (``TenderFailed``),
  and the node's own ``retry``/``on_error`` policies apply.
* **Nobody bids** (or fewer than ``min_offers`` valid offers): ``on_no_bids`` says —
  ``fail``; ``fallback`` (the agent runs); ``retry`` (a new round after ``retry_after``
  seconds on the engine's clock, timed from the failed round's close, so a resumed node waits
  no longer than it had left).

Measured (``bench/bench_tender.py``, 20 runtimes, one core): the auction adds ~9 ms per node on
``MemoryStore`` and ~19 ms on ``SQLiteStore`` over a fixed agent — within seed 003's "2 ms plus
the bid window" only because the window is seconds; the 20 signed, committed offers dominate,
as in ``BiddingProtocol``'s own figures.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

from converge.coordination.bidding import (
    CRITERIA,
    BiddingProtocol,
    ContractRound,
    RoundStage,
    Strategy,
)
from converge.core.capability import Requirement
from converge.core.clock import Clock
from converge.core.signing import unseal
from converge.core.user_code import call_in_thread
from converge.errors import ConvergeError, TenderFailed, ValidationError
from converge.orchestration._agents import NodeAgent, call_kwargs, resolve_agent
from converge.orchestration._context import NodeContext
from converge.orchestration.kinds import Kind, KindContext
from converge.orchestration.services import Needs
from converge.protocol.objects import Constraints, Intent, TaskDone

__all__ = ["KIND", "NoBids", "Tender", "TenderFailed"]

NoBids = Literal["fail", "retry", "fallback"]
"""What a tender does when an auction closes without enough valid offers."""
_NO_BIDS: tuple[str, ...] = get_args(NoBids)
_STRATEGIES: tuple[str, ...] = get_args(Strategy)


class Tender:
    """A node's work put out to tender (contract-net) among the providers of a capability.

    Args:
        capability: the capability requirement the work needs (``"write"``, ``"write>=1.2"``).
        pool: invite only members of this pool (the protocol's ``pools`` checks membership).
        providers: invite exactly these dids (still filtered by ``pool`` and ``min_trust``);
            None: those the protocol's discovery finds for ``capability``.
        goal: the intent's goal, in words (default: the node's id).
        strategy: ``lowest_cost``, ``highest_quality``, ``weighted``, ``first_price`` or
            ``second_price``.
        weights: the weighted strategy's weights by criterion (``cost``, ``latency``,
            ``quality``, ``reliability``, ``trust``; default 1 each).
        bid_window: seconds offers are taken (a round closes early once every invited
            provider has an accepted offer).
        min_offers: the fewest valid offers worth awarding.
        on_no_bids: ``fail``, ``retry`` or ``fallback`` (see the module doc).
        fallback: an agent (callable, ``Agent``, ``"module:attr"``) run in the node's place
            when nobody bids (with ``on_no_bids="fallback"``) or every winner failed.
        max_cost: the most the node will pay.
        min_quality: the least quality an offer may state.
        min_trust: invite, and accept offers from, only providers trusted at least this much.
        work_timeout: seconds after the bid window the winner has to report; then it counts
            as failed (None: wait, bounded by the node's own timeout).
        retry_after: seconds between a round nobody bid on and the next (``on_no_bids:
            retry``; default: ``bid_window``).
        max_rounds: the most rounds one pass of the node opens.
        currency: the currency offers are priced in.

    Raises:
        ValidationError: a bad option (``field`` names it).
    """

    def __init__(
        self,
        *,
        capability: str,
        pool: str | None = None,
        providers: Sequence[str] | None = None,
        goal: str | None = None,
        strategy: Strategy = "weighted",
        weights: Mapping[str, float] | None = None,
        bid_window: float = 5.0,
        min_offers: int = 1,
        on_no_bids: NoBids = "fail",
        fallback: Any = None,
        max_cost: float | None = None,
        min_quality: float | None = None,
        min_trust: float | None = None,
        work_timeout: float | None = None,
        retry_after: float | None = None,
        max_rounds: int = 3,
        currency: str = "USD",
    ) -> None:
        if not isinstance(capability, str) or not capability:
            raise _bad("capability", f"is a capability requirement, not {capability!r}")
        try:
            Requirement.parse(capability)
        except ConvergeError as exc:
            raise _bad("capability", f"{capability!r} does not parse: {exc}") from None
        if pool is not None and (not isinstance(pool, str) or not pool):
            raise _bad("pool", f"is a pool id, not {pool!r}")
        if providers is not None and (
            isinstance(providers, str) or not all(isinstance(p, str) and p for p in providers)
        ):
            raise _bad("providers", "is a list of provider dids")
        if goal is not None and (not isinstance(goal, str) or not goal):
            raise _bad("goal", f"is a non-empty string, not {goal!r}")
        if strategy not in _STRATEGIES:
            raise _bad("strategy", f"{strategy!r} is not one of {', '.join(_STRATEGIES)}")
        self.weights = _weights(weights)
        self.bid_window = _seconds("bid_window", bid_window, positive=True)
        self.min_offers = _count("min_offers", min_offers)
        if on_no_bids not in _NO_BIDS:
            raise _bad("on_no_bids", f"{on_no_bids!r} is not one of {', '.join(_NO_BIDS)}")
        if on_no_bids == "fallback" and fallback is None:
            raise _bad("fallback", "on_no_bids: fallback needs a `fallback` agent")
        self.capability = capability
        self.pool = pool
        self.providers = None if providers is None else tuple(providers)
        self.goal = goal
        self.strategy: Strategy = strategy
        self.on_no_bids: NoBids = on_no_bids
        self.name = f"tender:{capability}"
        self.fallback: NodeAgent | None = None
        if fallback is not None:
            try:
                self.fallback = resolve_agent(f"{self.name}.fallback", fallback)
            except ValidationError as exc:
                raise _bad("fallback", f"is not an agent: {exc.message}") from None
        self.max_cost = _optional("max_cost", max_cost)
        self.min_quality = _optional("min_quality", min_quality)
        if self.min_quality is not None and self.min_quality > 1:
            raise _bad("min_quality", f"is a fraction from 0 to 1, not {min_quality!r}")
        self.min_trust = None if min_trust is None else _seconds("min_trust", min_trust)
        self.work_timeout = (
            None if work_timeout is None else _seconds("work_timeout", work_timeout, True)
        )
        self.retry_after = (
            self.bid_window if retry_after is None else _seconds("retry_after", retry_after)
        )
        self.max_rounds = _count("max_rounds", max_rounds)
        if not isinstance(currency, str) or not currency:
            raise _bad("currency", f"is a currency code, not {currency!r}")
        self.currency = currency

    def needs(self) -> Needs:
        """The engine's bidding protocol and identity; its providers answer by message, so
        they run in the engine's process (until messages cross processes)."""
        return Needs("tender", ("bidding", "identity"), "providers")

    def __repr__(self) -> str:
        return f"Tender({self.capability!r}, pool={self.pool!r}, strategy={self.strategy!r})"

    async def __call__(self, inputs: dict[str, Any], ctx: NodeContext) -> Any:
        bidding: BiddingProtocol = ctx.services.need("bidding", ctx.node_id, "tender")
        _check_serving(bidding, ctx.node_id)
        base = f"tender:{ctx.idempotency_key}"
        candidates: tuple[str, ...] | None = None  # None: the pool; else who may take over
        failed: set[str] = set()
        auction_id, reason = f"{base}:1", "no_offers"
        for n in range(1, self.max_rounds + 1):
            auction_id = f"{base}:{n}"
            started = ctx.clock.now()
            round_ = await bidding.get(auction_id)
            if round_ is None:
                round_ = await self._announce(bidding, auction_id, inputs, ctx, candidates)
            elif round_.stage is RoundStage.AWARDED:
                await bidding.redeliver(auction_id)  # resumed: the winner's copy may be lost
            if round_.stage is RoundStage.BIDDING:
                least = self.min_offers if candidates is None else 1
                round_ = await bidding.run(auction_id, min_offers=least)
            if round_.stage is RoundStage.FAILED:
                reason = round_.reason or "no_offers"
                if candidates is not None:  # nobody left to take over
                    break
                if self.on_no_bids == "retry" and n < self.max_rounds:
                    await _sleep_until(ctx.clock, round_.updated_at + self.retry_after)
                    continue
                if self.on_no_bids == "fallback":
                    return await self._fall_back(inputs, ctx)
                raise TenderFailed(ctx.node_id, auction_id, reason, "no valid offer to award")
            award = round_.award
            assert award is not None  # AWARDED or later
            await ctx.progress(
                0.5, f"{auction_id} awarded to {award.provider} at {award.price} {award.currency}"
            )
            round_ = await self._finished(bidding, round_, ctx.clock)
            ctx.record_call(
                "auction",
                auction_id,
                started,
                ctx.clock.now(),
                winner=award.provider,
                price=award.price,
                currency=award.currency,
                stage=str(round_.stage.value),
            )
            done = None if round_.done is None else unseal(round_.done, TaskDone)
            if round_.stage is RoundStage.SETTLED and done and done.status == "completed":
                u = done.usage
                ctx.report_usage(u.tokens_in, u.tokens_out, u.tool_calls, cost=award.price)
                return done.output
            reason = "winner_failed"
            failed.add(award.provider)
            by_offer = {o.id: o.provider for o in round_.auction.offers}
            ranked = (by_offer[r.offer_id] for r in award.ranking)
            candidates = tuple(p for p in ranked if p not in failed)
            if not candidates:
                break
        if self.fallback is not None:
            return await self._fall_back(inputs, ctx)
        raise TenderFailed(ctx.node_id, auction_id, reason, f"after {n} round(s), no fallback")

    async def _announce(
        self,
        bidding: BiddingProtocol,
        auction_id: str,
        inputs: Mapping[str, Any],
        ctx: NodeContext,
        candidates: tuple[str, ...] | None,
    ) -> ContractRound:
        now = ctx.clock.now()
        deadline = None
        if self.work_timeout is not None:
            deadline = now + self.bid_window + self.work_timeout
        intent = Intent(
            goal=self.goal or ctx.node_id,
            capability=self.capability,
            inputs=dict(inputs),
            constraints=Constraints(
                max_cost=self.max_cost, min_quality=self.min_quality, deadline=deadline
            ),
            utility=dict(self.weights),
            bid_window_s=self.bid_window,
            id=auction_id,
            trace_id=ctx.trace_id,  # the run's trace (a child run's is its root's)
        )
        return await bidding.announce(
            intent,
            strategy=self.strategy,
            providers=self.providers if candidates is None else candidates,
            pool_id=self.pool,
            min_trust=self.min_trust,
            currency=self.currency,
        )

    async def _finished(
        self, bidding: BiddingProtocol, round_: ContractRound, clock: Clock
    ) -> ContractRound:
        """The round once terminal, or as it is when the winner's time is up."""
        deadline = round_.auction.intent.constraints.deadline
        if round_.is_terminal:
            return round_
        if deadline is None:
            return await bidding.wait(round_.id)
        delay = deadline - clock.now()
        if delay > 0:
            async with asyncio.TaskGroup() as group:
                timer = group.create_task(clock.sleep(delay))
                settled = group.create_task(bidding.wait(round_.id))
                await asyncio.wait({timer, settled}, return_when=asyncio.FIRST_COMPLETED)
                timer.cancel()
                settled.cancel()
        latest = await bidding.get(round_.id)
        assert latest is not None
        return latest

    async def _fall_back(self, inputs: dict[str, Any], ctx: NodeContext) -> Any:
        agent = self.fallback
        if agent is None:
            raise ValidationError("no fallback agent", field="fallback")
        args = call_kwargs(agent, inputs, ctx)
        if agent.is_async:
            return await agent.fn(*args)
        if agent.inline:
            return agent.fn(*args)
        return await call_in_thread(agent.fn, *args)


def _check_serving(bidding: BiddingProtocol, node: str) -> None:
    network = bidding.network
    if network is None or not network.is_registered(bidding.did):
        raise ValidationError(
            f"node {node!r} (tender) needs the bidding service to receive the winner's "
            "reports: run the engine inside `async with protocol.serving():`",
            field="services.bidding",
        )


async def _sleep_until(clock: Clock, at: float) -> None:
    delay = at - clock.now()
    if delay > 0:
        await clock.sleep(delay)


def _bad(option: str, message: str) -> ValidationError:
    return ValidationError(f"tender option `{option}` {message}", field=option)


def _number(option: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(option, f"must be a finite number, not {value!r}")
    return float(value)


def _seconds(option: str, value: object, positive: bool = False) -> float:
    number = _number(option, value)
    if number < 0 or (positive and number == 0):
        raise _bad(option, f"must be {'> 0' if positive else '>= 0'}, not {value!r}")
    return number


def _optional(option: str, value: object) -> float | None:
    return None if value is None else _seconds(option, value)


def _count(option: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad(option, f"must be an integer >= 1, not {value!r}")
    return value


def _weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    if weights is None:
        return {}
    if not isinstance(weights, Mapping):
        raise _bad("weights", f"maps criteria to weights, not {weights!r}")
    unknown = sorted(str(k) for k in weights if k not in CRITERIA)
    if unknown:
        raise _bad("weights", f"has unknown criteria {unknown}; use {', '.join(CRITERIA)}")
    out = {k: _seconds(f"weights.{k}", v) for k, v in weights.items()}
    if out and not any(out.values()):
        raise _bad("weights", "are all 0: nothing to score")
    return out


_OPTIONS = {
    "capability": "The capability the work needs, with an optional version range (``write>=1.2``).",
    "pool": "Invite only members of this pool.",
    "providers": "Invite exactly these dids (default: those discovery finds for the capability).",
    "goal": "The intent's goal, in words (default: the node's id).",
    "strategy": "``lowest_cost``, ``highest_quality``, ``weighted`` (default), ``first_price`` "
    "or ``second_price``.",
    "weights": "The weighted strategy's weights by criterion: cost, latency, quality, "
    "reliability, trust.",
    "bid_window": "Seconds offers are taken (default 5; closes early once every invitee bid).",
    "min_offers": "The fewest valid offers worth awarding (default 1).",
    "on_no_bids": "``fail`` (default), ``retry`` or ``fallback`` when too few valid offers came.",
    "fallback": "An agent name or ``module:attr`` run in the node's place when bidding fails.",
    "max_cost": "The most the node will pay.",
    "min_quality": "The least quality an offer may state.",
    "min_trust": "Invite, and accept offers from, only providers trusted at least this much.",
    "work_timeout": "Seconds after the bid window the winner has to report.",
    "retry_after": "Seconds between a round nobody bid on and the next (``on_no_bids: retry``).",
    "max_rounds": "The most rounds one pass of the node opens.",
    "currency": "The currency offers are priced in.",
}


def _read(options: Mapping[str, Any], ctx: KindContext) -> Tender:
    found = ctx.options(options, _OPTIONS, required=("capability",))
    fallback = found.get("fallback")
    if fallback is not None:
        if not isinstance(fallback, str) or not fallback:
            message = f"fallback names an agent or 'module:attr', not {fallback!r}"
            raise ctx.fail(message, "fallback")
        found["fallback"] = ctx.agents.get(fallback, fallback)
    try:
        return Tender(**found)
    except ValidationError as exc:
        raise ctx.fail(exc.message, exc.field) from None


KIND = Kind(
    "tender",
    _read,
    options=_OPTIONS,
    required=("capability",),
    doc="Puts the node's work out to tender: a contract-net round among providers, "
    "a signed receipt, trust.",
)
