"""Contract-net and auctions: ``BiddingProtocol`` runs a requester's rounds end to end.

A round (seed 003): the requester's signed ``Intent`` goes as a signed message to the providers
that discovery finds and the pool admits; they answer from their own runtimes with signed
``Offer``s (a ``SubmitBid`` decision, or an ``offer`` message) within the bid window; each
offer's signature is verified on arrival and the offer checked (``_auction.receive``); at close
the named strategy picks the winner, who gets a signed ``TaskStart``; its ``TaskProgress`` and
``TaskDone`` follow, then a ``Receipt`` it signs, which the requester checks and countersigns;
the winner's trust is updated from the outcome. One trace id (the intent's) links it all.

Pure parts: ``_auction``/``_auction_select`` (who wins), ``_bidding_core`` (the stored round,
checks on the winner's reports), ``_bidding_steps`` (the auction phase's steps),
``_bidding_provider`` (the provider's side). I/O: this driver, ``_bidding_exchange`` (whom to
invite, sending, the inbox), ``_bidding_offers`` (offers arriving, and who and where their
refusals name) and ``_bidding_work`` (the winner's reports, receipt, trust).

Keys: ``bidding/<auction id>`` holds the ``ContractRound`` (MessagePack), changed only by a
compare-and-set on the version read, in one unit of work with its events (writes of one process
to one round also queue on a lock, so 20 offers at once do not retry each other);
``bidding-task/<task id>`` names the round of an awarded task. The auction id is the intent id.

Events: ``bidding.opened``, ``bidding.unreachable``, ``bidding.offer_accepted``,
``bidding.offer_refused``, ``bidding.awarded``, ``bidding.failed`` (their data: see
``_bidding_steps``), then ``bidding.progress``, ``bidding.done``, ``bidding.settled``,
``bidding.disputed``, ``bidding.refused`` (see ``_bidding_work``); all in the intent's trace,
about the auction id.

An offer's fault is never an exception: it is refused with a machine-readable reason and an
event, and nothing else changes. A caller's mistake (an unknown auction, a bad argument) is a
typed ``ConvergeError``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import msgspec

from converge.coordination import _auction as core
from converge.coordination import _bidding_exchange as exchange
from converge.coordination import _bidding_offers as offers
from converge.coordination import _bidding_work as work
from converge.coordination._auction import (
    Auction,
    AuctionClosed,
    Award,
    BidWindowOpen,
    Rejection,
    RejectReason,
    Strategy,
)
from converge.coordination._bidding_core import (
    ROUND_TRANSITIONS,
    ContractRound,
    ProgressNote,
    RoundRefusal,
    RoundStage,
)
from converge.coordination._bidding_provider import (
    INTENT_KIND,
    OFFER_KIND,
    RECEIPT_KIND,
    TASK_DONE_KIND,
    TASK_PROGRESS_KIND,
    TASK_START_KIND,
    intent_of,
    offer_from_bid,
    report_done,
    report_progress,
    task_start_of,
)
from converge.coordination._bidding_steps import (
    Step,
    close_step,
    drop_step,
    open_round,
)
from converge.coordination.discovery import DiscoveryService
from converge.coordination.pool_manager import PoolManager
from converge.core.capability import CapabilitySet
from converge.core.clock import Clock, system_clock
from converge.core.decisions import SubmitBid
from converge.core.identity import Identity
from converge.core.ids import new_id
from converge.core.message import Message, ReplayGuard
from converge.core.signing import unseal
from converge.errors import ConflictError, ValidationError
from converge.network.local import Inbox, LocalNetwork
from converge.policy.trust import TrustModel
from converge.protocol.objects import Intent, Offer, Receipt, TaskDone
from converge.store.base import Store

__all__ = [
    "INTENT_KIND",
    "OFFER_KIND",
    "RECEIPT_KIND",
    "ROUND_TRANSITIONS",
    "TASK_DONE_KIND",
    "TASK_PROGRESS_KIND",
    "TASK_START_KIND",
    "Auction",
    "AuctionClosed",
    "Award",
    "BidWindowOpen",
    "BiddingProtocol",
    "ContractRound",
    "OutputCheck",
    "ProgressNote",
    "RejectReason",
    "Rejection",
    "RoundRefusal",
    "RoundStage",
    "Strategy",
    "intent_of",
    "report_done",
    "report_progress",
    "task_start_of",
]

OutputCheck = Callable[[TaskDone], "bool | Awaitable[bool]"]
"""The requester's check of a completed ``TaskDone``: true accepts the output."""

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ContractRound)
_MAX_RETRIES = 32


class BiddingProtocol:
    """A requester's contract-net rounds over a ``Store``.

    Args:
        store: where rounds and their events live.
        identity: the requester: it signs intents, task starts and countersigns receipts.
        network: where intents and task starts are sent, and (``serving()``) replies arrive.
        discovery: finds the providers of the intent's capability, and what each one lists.
        pools: checks pool membership when ``announce`` names a pool.
        trust: scores providers (``min_trust``, the weighted strategy's ``trust`` criterion)
            and is updated from each receipt.
        clock: the time source for bid windows, deadlines and timestamps.
        id_factory: makes task, task-start and offer ids.
        check_output: the requester's check of a completed output before it countersigns
            (None: any output the receipt vouches for is accepted).
        replay_guard: rejects stale and replayed messages in ``handle`` (one per protocol by
            default).
    """

    def __init__(
        self,
        store: Store,
        identity: Identity,
        *,
        network: LocalNetwork | None = None,
        discovery: DiscoveryService | None = None,
        pools: PoolManager | None = None,
        trust: TrustModel | None = None,
        clock: Clock = system_clock,
        id_factory: Callable[[], str] = new_id,
        check_output: OutputCheck | None = None,
        replay_guard: ReplayGuard | None = None,
    ) -> None:
        if not isinstance(identity, Identity):
            raise ValidationError(
                "a BiddingProtocol needs the requester's Identity", field="identity"
            )
        self.store = store
        self.identity = identity
        self.network = network
        self.discovery = discovery
        self.pools = pools
        self.trust = trust
        self.clock = clock
        self.id_factory = id_factory
        self.check_output = check_output
        # Not `replay_guard or ...`: a guard holding no nonce yet is falsy (it has a length).
        self.guard = ReplayGuard(clock=clock) if replay_guard is None else replay_guard
        self._locks: dict[str, asyncio.Lock] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._waiting: dict[str, int] = {}

    @property
    def did(self) -> str:
        """The requester's did."""
        return self.identity.did

    # -- announcing --------------------------------------------------------------------------------

    async def announce(
        self,
        intent: Intent,
        *,
        strategy: Strategy = "weighted",
        providers: Sequence[str] | None = None,
        pool_id: str | None = None,
        min_trust: float | None = None,
        currency: str = "USD",
        limit: int = 100,
    ) -> ContractRound:
        """Open an auction for ``intent`` and send it to the admitted providers.

        Args:
            intent: the intent; an unsigned one is stamped with the clock's time and signed by
                the requester, a signed one must be the requester's and verify.
            strategy: how the winner is picked and paid.
            providers: the providers to invite; None: those ``discovery`` finds for the
                intent's capability (at most ``limit``).
            pool_id: invite only members of this pool (needs ``pools``).
            min_trust: invite, and accept offers from, only providers with at least this trust
                (needs ``trust``).
            currency: the currency offers must be priced in.
            limit: the most providers discovery returns.

        Raises:
            ValidationError: a bad intent, strategy or filter, or a filter without the service
                it needs (``field`` names it).
            SignatureError: a signed intent that does not verify.
            ConflictError: a round for this intent exists.
        """
        now = self.clock.now()
        intent = exchange.signed_intent(self, intent, now)
        invited = await exchange.invite(self, intent, providers, pool_id, min_trust, limit)
        auction = core.open_auction(
            intent,
            now=now,
            strategy=strategy,
            admitted=frozenset(invited),
            min_trust=min_trust,
            currency=currency,
        )
        round_, opened = open_round(auction, self.did, invited, now)
        async with self.store.transaction() as tx:
            tx.put_if_absent(_key(round_.id), _encoder.encode(round_))
            tx.append(opened)
        unreachable = await exchange.send_intent(self, round_, invited)
        if unreachable:
            await self._update(round_.id, drop_step(self.did, unreachable))
            round_ = await self._require(round_.id)
        return round_

    # -- offers ------------------------------------------------------------------------------------

    async def bid(
        self, provider: Identity, bid: SubmitBid, *, capabilities: CapabilitySet | None = None
    ) -> Offer | Rejection:
        """Make ``bid`` an ``Offer`` signed by ``provider`` and submit it (how ``SubmitBid``
        decisions run through the ``StandardExecutor``).

        Returns:
            The offer as accepted, or its ``Rejection`` (also recorded as an event).

        Raises:
            ValidationError: no such auction, or a malformed bid (see ``offer_from_bid``).
        """
        round_ = await self._require(bid.auction_id)
        offer = offer_from_bid(
            bid,
            round_.auction.intent,
            capabilities=capabilities,
            offer_id=self.id_factory(),
            now=self.clock.now(),
        ).sign(provider)
        return await self.receive_offer(offer.seal(), sender=provider.did)

    async def receive_offer(self, sealed: bytes, *, sender: str | None = None) -> Offer | Rejection:
        """Verify a sealed offer and put it to its auction.

        Args:
            sealed: the offer's wire form (``Offer.seal()``).
            sender: the authenticated did that delivered it; when given, it must be the offer's
                provider.

        Returns:
            The offer as accepted, or its ``Rejection``; either way an event records it.
        """
        return await offers.receive_offer(self, sealed, sender)

    # -- closing -----------------------------------------------------------------------------------

    async def run(self, auction_id: str, *, min_offers: int = 1) -> ContractRound:
        """Wait until the bid window ends or every invited provider has an accepted offer in,
        then close (a refused offer does not count: its provider may bid again).

        ``min_offers``: with fewer valid offers at close, the round FAILS (``too_few_offers``).

        Returns:
            The round, AWARDED (its ``TaskStart`` sent) or FAILED; if another caller closed it
            meanwhile, as that caller left it.
        """
        round_ = await self._require(auction_id)
        delay = round_.auction.closes_at - self.clock.now()
        if delay > 0 and not round_.all_answered:
            async with asyncio.TaskGroup() as group:
                timer = group.create_task(self.clock.sleep(delay))
                answered = group.create_task(
                    self.wait(auction_id, until=lambda r: r.all_answered or r.auction.is_closed)
                )
                await asyncio.wait({timer, answered}, return_when=asyncio.FIRST_COMPLETED)
                timer.cancel()
                answered.cancel()
        try:
            return await self.close(auction_id, force=True, min_offers=min_offers)
        except AuctionClosed:
            return await self._require(auction_id)

    async def close(
        self, auction_id: str, *, force: bool = False, min_offers: int = 1
    ) -> ContractRound:
        """Close the auction: award it by its strategy and send the winner its ``TaskStart``,
        or fail it with a reason when no offer is valid (or fewer than ``min_offers`` are).

        Raises:
            ValidationError: no such auction.
            BidWindowOpen: the window is still open and ``force`` is false.
            AuctionClosed: it is already closed.
        """
        task_id, start_id = self.id_factory(), self.id_factory()

        async def step_for(r: ContractRound) -> Step:
            # Read under the round's lock, for the offers of the round being closed: an offer
            # accepted meanwhile is scored on its trust, not on a missing 0.
            trust = None
            if self.trust is not None and r.auction.weights.get("trust"):
                bidders = [o.provider for o in r.auction.offers]
                trust = await self.trust.scores(bidders) if bidders else {}
            return close_step(
                self.identity,
                trust,
                force=force,
                task_id=task_id,
                start_id=start_id,
                min_offers=min_offers,
            )

        await self._update(auction_id, prepare=step_for, index={work.task_key(task_id): auction_id})
        round_ = await self._require(auction_id)
        if round_.stage is RoundStage.AWARDED:
            await exchange.send_task_start(self, round_)
        return round_

    async def redeliver(self, auction_id: str) -> None:
        """Send the winner its stored ``TaskStart`` again if the work is still AWARDED: after a
        restart the winner's copy may have died with the process that held it. The same signed
        start (same task id) goes; nothing is re-opened or re-awarded.

        Raises:
            ValidationError: no such auction.
        """
        round_ = await self._require(auction_id)
        if round_.stage is RoundStage.AWARDED:
            await exchange.send_task_start(self, round_)

    # -- the winner's reports ----------------------------------------------------------------------

    async def handle(self, message: Message) -> None:
        """Take one message addressed to the requester: an offer, or the winner's progress,
        ``TaskDone`` or receipt. A message that does not verify, is stale or replayed, or is
        of another kind is refused with a ``bidding.refused`` event."""
        await exchange.dispatch(self, message)

    @contextlib.asynccontextmanager
    async def serving(self, inbox_size: int = 1000) -> AsyncIterator[BiddingProtocol]:
        """Receive the requester's messages from the network while inside the block.

        The requester is on the network as soon as the block starts; messages still queued
        when it ends are handled before it returns.

        Raises:
            ValidationError: the protocol has no network.
        """
        if self.network is None:
            raise ValidationError("serving() needs the protocol's network", field="network")
        wake = asyncio.Event()
        stop = asyncio.Event()
        inbox = Inbox(inbox_size, notify=wake.set)
        self.network.register(self.did, inbox)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(exchange.pump(self, inbox, wake, stop))
                try:
                    yield self
                finally:
                    stop.set()
                    wake.set()
        finally:
            inbox.close()
            self.network.unregister(self.did)

    # -- reading and waiting -----------------------------------------------------------------------

    async def get(self, auction_id: str) -> ContractRound | None:
        """The round, or None."""
        entry = await self.store.get(_key(auction_id))
        return None if entry is None else _decoder.decode(entry.value)

    async def receipt(self, auction_id: str) -> Receipt | None:
        """The round's receipt, its signatures verified (both once SETTLED), or None."""
        round_ = await self._require(auction_id)
        if round_.receipt is None:
            return None
        settled = round_.stage is RoundStage.SETTLED
        return unseal(round_.receipt, Receipt, require_all=settled)

    async def wait(
        self,
        auction_id: str,
        *,
        until: Callable[[ContractRound], bool] = lambda r: r.is_terminal,
        timeout: float | None = None,
    ) -> ContractRound:
        """Wait until the round satisfies ``until`` (by default: it is terminal).

        Wakes on this process's changes to the round, not on a timer.

        Raises:
            ValidationError: no such auction.
            TimeoutError: ``timeout`` seconds passed first.
        """
        self._waiting[auction_id] = self._waiting.get(auction_id, 0) + 1
        try:
            async with asyncio.timeout(timeout):
                while True:
                    changed = self._changed.setdefault(auction_id, asyncio.Event())
                    round_ = await self._require(auction_id)
                    if until(round_):
                        return round_
                    await changed.wait()
        finally:  # the last waiter to leave (done, timed out, cancelled) drops the event
            left = self._waiting.pop(auction_id) - 1
            if left:
                self._waiting[auction_id] = left
            else:
                self._changed.pop(auction_id, None)

    # -- internals ---------------------------------------------------------------------------------

    async def _require(self, auction_id: str) -> ContractRound:
        if not isinstance(auction_id, str) or not auction_id:
            raise ValidationError(f"invalid auction id {auction_id!r}", field="auction_id")
        round_ = await self.get(auction_id)
        if round_ is None:
            raise ValidationError(f"no auction {auction_id!r}", field="auction_id")
        return round_

    async def _update(
        self,
        auction_id: str,
        step: Step | None = None,
        *,
        prepare: Callable[[ContractRound], Awaitable[Step]] | None = None,
        index: dict[str, str] | None = None,
        notify: bool = True,
    ) -> Any:
        """Read the round, apply ``step`` (pure), write it with a compare-and-set and its
        events in one unit of work; on a conflict (another process) read again and recompute.
        ``prepare`` instead of ``step``: an async function of the round read that returns the
        step (what it reads, e.g. trust, is then read under the lock, again on each retry).
        ``index`` keys are written with the change (not with a no-change step)."""
        key = _key(auction_id)
        lock = self._locks.setdefault(auction_id, asyncio.Lock())
        async with lock:
            conflict: ConflictError | None = None
            for _ in range(_MAX_RETRIES):
                entry = await self.store.get(key)
                if entry is None:
                    raise ValidationError(f"no auction {auction_id!r}", field="auction_id")
                current = _decoder.decode(entry.value)
                apply = step if prepare is None else await prepare(current)
                if apply is None:
                    raise ValidationError("_update needs a step or a prepare", field="step")
                new, events, result = apply(current, self.clock.now())
                try:
                    if new is None:
                        if events:
                            await self.store.append(events)
                        return result
                    async with self.store.transaction() as tx:
                        tx.compare_and_set(key, entry.version, _encoder.encode(new))
                        for k, v in (index or {}).items():
                            tx.put_if_absent(k, v.encode())
                        tx.append(*events)
                except ConflictError as exc:
                    conflict = exc
                    continue
                if new.is_terminal:  # nothing more will change it: forget its lock
                    self._locks.pop(auction_id, None)
                if notify:
                    self._notify(auction_id)
                return result
            assert conflict is not None
            raise conflict

    def _notify(self, auction_id: str) -> None:
        changed = self._changed.pop(auction_id, None)
        if changed is not None:
            changed.set()


def _key(auction_id: str) -> str:
    return f"bidding/{auction_id}"
