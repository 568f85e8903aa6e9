"""The requester's side of contract-net: ``BiddingProtocol``.

``BiddingProtocol`` runs a requester's rounds end to end
over a store and a network. It reads a round, applies a pure step of ``_round`` with the time,
and writes what it returns; here is only what needs I/O: whom an intent goes to (discovery, the
pool, trust), signing and sending messages in the round's trace, taking what comes back (offers,
the winner's reports, its receipt) from the inbox, the requester's output check, and trust.

Keys: ``bidding/<auction id>`` holds the ``ContractRound`` (MessagePack), changed only by a
compare-and-set on the version read, in one unit of work with its events (writes of one process
to one round also queue on a lock, so 20 offers at once do not retry each other);
``bidding-task/<task id>`` names the round of an awarded task. The auction id is the intent id.

Who a refusal names: an ``offer_refused`` or ``refused`` event's actor is the authenticated
sender (the message's verified signer, or the ``sender`` the caller vouches for), empty when
there is none; what the offer or message claims goes in its data. It is filed in the round's
trace, about the auction, only when it names a round that exists and is this requester's;
otherwise in the trace named by the requester's own did, with no subject, so an unverified claim
never chooses where its refusal is written.

A settled receipt carries both signatures; a disputed one only the executor's (the requester
never countersigns an output it refused). The winner's trust is recorded (``trust.updated``,
same trace, ``cause`` the round's id) after the round's own unit of work: a crash between the
two loses that one update, never the receipt.

An offer's fault is never an exception: it is refused with a machine-readable reason and an
event, and nothing else changes. A caller's mistake (an unknown auction, a bad argument) is a
typed ``ConvergeError``.

**Who is invited**: the named ``providers``, else ``discovery.find(capability=…)``; then only
members of ``pool_id`` (``PoolManager``, authoritative) and providers with trust >=
``min_trust``; never the requester. The invited set is the auction's ``admitted`` set. Each gets
a signed ``intent`` message whose payload is the sealed ``Intent``; one that is not on the
network is dropped from the round (``bidding.unreachable``) so it is not waited for.

**Offers**: a provider answers from its own runtime with a ``SubmitBid``; the executor's
``bidding_protocols`` turns it into an ``Offer`` signed by the agent (``bid``, with
``_provider.offer_from_bid``). ``receive_offer(sealed, sender=…)`` is the one entry for every
offer (also ``offer`` messages): it unseals the bytes as received (``unseal`` refuses a NaN or an
infinity anywhere: ``malformed``; one would make every weighted score NaN), requires the
authenticated sender to be the offer's provider, then runs ``_round``'s checks with the
provider's discovery capabilities and trust. Offers that do not verify, come from another
sender, name no open round, reach a closed auction, or come from a provider not admitted or
trusted are logged only, and ``rejected`` keeps at most ``MAX_REFUSALS_PER_PROVIDER`` per
provider: nobody outside the invited set can grow the stored round, an invited provider bidding
again after refusals grows it by a bounded amount, and a closed auction is never rewritten.

**Closing**: ``run`` sleeps on the injected clock until the window ends, or returns early once
every invited provider has an accepted offer in — nobody else is admitted and each accepted
offer binds, so waiting longer cannot change the outcome — then closes with ``force=True``;
``close`` is the strict form (``BidWindowOpen`` before the window ends). The weighted
strategy's trust criterion reads the bidders' scores at close, inside the round's locked
compare-and-set update (read again on a retry), so an offer accepted meanwhile is scored on its
trust. The award signs a ``TaskStart`` (inputs, offer id, the award's price, deadline, the
intent's trace), stored with the award and sent to the winner only; ``redeliver`` sends the
stored one again while AWARDED, for a requester that restarted. No valid offer fails the round
(``no_offers``, ``no_valid_offers``, with a count of refusals by reason), as do fewer than
``min_offers`` (``too_few_offers``).

**After the award**: ``serving()`` registers the requester's inbox on the network and pumps it
(a task in a ``TaskGroup`` the context owns); ``handle`` verifies each message and checks it
against the ``ReplayGuard`` before routing it by kind. No message ends the loop: only
cancellation and bugs propagate. A report or offer about a round that is not this requester's
(two requesters sharing a store) is refused (``unknown_round``, ``wrong_intent``) and never
touches that round.

**Verdict**: a completed output within the winner's own stated resource limits and accepted by
``check_output`` is countersigned: SETTLED, trust ``success`` (``timeout`` if the ``TaskDone``
reached the requester after the deadline, by the requester's clock on arrival, kept as
``ContractRound.done_at``, never by the executor's own ``finished_at``). A failed or cancelled
``TaskDone`` is countersigned as the truthful record of a failure: SETTLED, trust ``failure``
(one whose receipt claims a cost is DISPUTED instead). An output over its limits or refused by
the check is DISPUTED with the reason, never countersigned, trust ``failure``. The check is user
code: if it raises, the output is disputed with the error and the protocol goes on. Waiters
(``wait``, ``run``) are woken only after the trust update, so a round seen SETTLED has had its
effect in this process.

**Memory per round**: the round's ``asyncio.Lock`` is dropped once the round is terminal, and the
wake-up event of ``wait`` once its last waiter leaves (returned, timed out or cancelled).

**Measured** (``bench/bench_auction.py``, 20 providers, one core): a full round (intent, 20
signed offers verified and checked, award, ``TaskDone``, countersigned receipt, trust) runs at
about 200 rounds/s on ``MemoryStore`` and 75 rounds/s on ``SQLiteStore``; the offers are about
70% of the time (per offer: the provider's signature, ``unseal``, the checks, and one commit of
the round, which is re-encoded whole each time).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import msgspec

from converge.coordination.bidding._award import Award, Strategy
from converge.coordination.bidding._provider import (
    INTENT_KIND,
    OFFER_KIND,
    RECEIPT_KIND,
    TASK_DONE_KIND,
    TASK_PROGRESS_KIND,
    TASK_START_KIND,
    offer_from_bid,
)
from converge.coordination.bidding._round import (
    ContractRound,
    Rejection,
    RejectReason,
    RoundRefusal,
    RoundStage,
    Step,
    check_receipt,
    close_step,
    done_step,
    drop_step,
    message_refused_event,
    offer_refused_event,
    offer_step,
    open_auction,
    open_round,
    over_limits,
    progress_step,
    round_event,
    settle_step,
    unverified_rejection,
)
from converge.coordination.discovery import DiscoveryService
from converge.coordination.pool_manager import PoolManager
from converge.core.capability import CapabilitySet
from converge.core.clip import clip_text
from converge.core.clock import Clock, system_clock
from converge.core.decisions import SubmitBid
from converge.core.identity import Identity
from converge.core.ids import new_id
from converge.core.message import Message, ReplayGuard
from converge.core.signing import Signed, unseal
from converge.errors import (
    AuctionClosed,
    ConflictError,
    ConvergeError,
    SignatureError,
    ValidationError,
)
from converge.network.inbox import Inbox
from converge.network.transport import Transport
from converge.policy.trust import TrustModel
from converge.protocol.objects import Intent, Offer, Receipt, TaskDone, TaskProgress, TaskStart
from converge.store.base import Store

__all__ = ["BiddingProtocol", "OutputCheck"]

OutputCheck = Callable[[TaskDone], "bool | Awaitable[bool]"]
"""The requester's check of a completed ``TaskDone``: true accepts the output."""

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ContractRound)
_MAX_RETRIES = 32
_BATCH = 100
_log = logging.getLogger(__name__)

S = TypeVar("S", bound=Signed)


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
        network: Transport | None = None,
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
        intent = self._signed_intent(intent, now)
        invited = await self._invite(intent, providers, pool_id, min_trust, limit)
        auction = open_auction(
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
        unreachable = await self._send_intent(round_, invited)
        if unreachable:
            await self._update(round_.id, drop_step(self.did, unreachable))
            round_ = await self._require(round_.id)
        return round_

    def _signed_intent(self, intent: Intent, now: float) -> Intent:
        """``intent`` stamped with ``now`` and signed by the requester; or, already signed,
        verified and checked to be the requester's."""
        if not isinstance(intent, Intent):
            raise ValidationError(
                f"expected an Intent, not {type(intent).__name__}", field="intent"
            )
        if intent.signature is None:
            return msgspec.structs.replace(intent, created_at=now).sign(self.identity)
        intent.verify()
        if intent.issuer != self.did:
            raise ValidationError(
                f"intent {intent.id} is issued by {intent.issuer}, not this requester",
                field="issuer",
            )
        return intent

    async def _invite(
        self,
        intent: Intent,
        providers: Sequence[str] | None,
        pool_id: str | None,
        min_trust: float | None,
        limit: int,
    ) -> list[str]:
        """The providers to send ``intent`` to: those named, or those discovery finds for its
        capability; then only members of ``pool_id`` and those with at least ``min_trust``;
        never the requester itself."""
        if providers is not None:
            invited = list(dict.fromkeys(providers))
            if not all(isinstance(d, str) and d for d in invited):
                raise ValidationError("providers must be non-empty dids", field="providers")
        elif self.discovery is not None:
            found = await self.discovery.find(capability=intent.capability, limit=limit)
            invited = [d.did for d in found]
        else:
            raise ValidationError(
                "name the providers, or give the protocol a discovery service", field="providers"
            )
        invited = [d for d in invited if d != self.did]
        if pool_id is not None:
            if self.pools is None:
                raise ValidationError("pool_id needs the protocol's pools", field="pool_id")
            members = set(await self.pools.members(pool_id))
            invited = [d for d in invited if d in members]
        if min_trust is not None:
            if self.trust is None:
                raise ValidationError("min_trust needs the protocol's trust", field="min_trust")
            scores = await self.trust.scores(invited) if invited else {}
            invited = [d for d in invited if scores[d] >= min_trust]
        return invited

    async def _send_intent(self, round_: ContractRound, to: list[str]) -> list[str]:
        """Send the round's intent to each of ``to``; returns those it could not reach."""
        if self.network is None:
            return []
        payload = round_.auction.intent.seal()
        sent = [await self._send(round_, INTENT_KIND, payload, d) for d in to]
        return [d for d, ok in zip(to, sent, strict=True) if not ok]

    async def _send(self, round_: ContractRound, kind: str, payload: bytes, to: str) -> bool:
        """Send a message signed by the requester in the round's trace; False if ``to`` is
        not reachable (or there is no network)."""
        if self.network is None:
            return False
        message = Message(
            kind=kind,
            payload=payload,
            recipient=to,
            trace_id=round_.trace_id,
            created_at=self.clock.now(),
        ).sign(self.identity)
        try:
            await self.network.send(message)
        except ConvergeError:
            return False
        return True

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
        try:
            offer = unseal(sealed, Offer)  # refuses a NaN or an infinity, which cannot be ranked
        except ConvergeError as exc:
            rejection, intent_id = unverified_rejection(sealed, exc, sender)
            await self._log_offer_refusal(rejection, intent_id, sender)
            return rejection
        if sender is not None and sender != offer.provider:
            detail = f"sent by {sender}, not by its provider"
            return await self._refuse_offer(offer, "wrong_sender", detail, sender)
        round_ = await self._own_round(offer.intent_id)
        if round_ is None:  # another requester's round is none of ours
            detail = f"no auction of this requester for intent {offer.intent_id}"
            return await self._refuse_offer(offer, "wrong_intent", detail, sender)
        trust = None
        if round_.auction.min_trust is not None and self.trust is not None:
            trust = {offer.provider: await self.trust.score(offer.provider)}
        caps = None
        if self.discovery is not None:
            caps = await self.discovery.capabilities_of(offer.provider)
        result: Offer | Rejection = await self._update(
            round_.id, offer_step(offer, trust, caps, sender)
        )
        return result

    async def _own_round(self, intent_id: str) -> ContractRound | None:
        if not intent_id:
            return None
        round_ = await self.get(intent_id)
        return round_ if round_ is not None and round_.requester == self.did else None

    async def _refuse_offer(
        self, offer: Offer, reason: RejectReason, detail: str, sender: str | None
    ) -> Rejection:
        rejection = Rejection(offer.id, offer.provider, reason, detail)
        await self._log_offer_refusal(rejection, offer.intent_id, sender)
        return rejection

    async def _log_offer_refusal(
        self, rejection: Rejection, intent_id: str, sender: str | None
    ) -> None:
        """Record a refusal that changes no round (see the module docstring for its trace)."""
        round_ = await self._own_round(intent_id)
        trace, subject = (round_.trace_id, round_.id) if round_ is not None else (self.did, "")
        event = offer_refused_event(
            rejection, trace, subject, self.clock.now(), recorded=False, actor=sender or ""
        )
        await self.store.append([event])

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

        await self._update(auction_id, prepare=step_for, index={_task_key(task_id): auction_id})
        round_ = await self._require(auction_id)
        if round_.stage is RoundStage.AWARDED:
            await self._send_task_start(round_)
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
            await self._send_task_start(round_)

    async def _send_task_start(self, round_: ContractRound) -> None:
        """Send the winner its ``TaskStart``; record ``bidding.unreachable`` if it cannot be."""
        award = round_.award
        if self.network is None or award is None or round_.task_start is None:
            return
        if not await self._send(round_, TASK_START_KIND, round_.task_start, award.provider):
            gone = [award.provider]
            event = round_event(
                "unreachable", round_, actor=self.did, at=self.clock.now(), providers=gone
            )
            await self.store.append([event])

    # -- the winner's reports ----------------------------------------------------------------------

    async def handle(self, message: Message) -> None:
        """Take one message addressed to the requester: an offer, or the winner's progress,
        ``TaskDone`` or receipt. A message that does not verify, is stale or replayed, or is
        of another kind is refused with a ``bidding.refused`` event.

        Whatever one message carries, it ends here: a ``ConvergeError`` raised while taking it
        (a field of the wrong type, bytes that verify but do not decode, a value that cannot be
        encoded canonically, a store refusing a write) is recorded as a ``bidding.refused``
        event. Only cancellation and bugs (non-converge exceptions) propagate.
        """
        try:
            if not isinstance(message, Message):
                raise ValidationError(f"not a Message but {type(message).__name__}")
            message.verify()  # its fields' types (as if decoded from bytes), then its signature
            self.guard.check(message)
        except ConvergeError as exc:
            why: RoundRefusal = "malformed" if isinstance(exc, ValidationError) else "bad_signature"
            await self._refuse(message, why, clip_text(str(exc)), authenticated=False)
            return
        try:
            await self._route(message)
        except ConvergeError as exc:
            reason: RoundRefusal = (
                "bad_signature" if isinstance(exc, SignatureError) else "malformed"
            )
            await self._refuse(message, reason, f"{type(exc).__name__}: {exc}")

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
                group.create_task(self._pump(inbox, wake, stop))
                try:
                    yield self
                finally:
                    stop.set()
                    wake.set()
        finally:
            inbox.close()
            self.network.unregister(self.did)

    async def _pump(self, inbox: Inbox, wake: asyncio.Event, stop: asyncio.Event) -> None:
        """Handle the requester's inbox in arrival order until ``stop``, then what is left.

        One message never ends the loop: ``handle`` records a refusal for any
        ``ConvergeError``, and should even that record fail (the store is down), the message
        is dropped with a log line.
        """
        while True:
            await wake.wait()
            wake.clear()
            while batch := inbox.drain(_BATCH):
                for message in batch:
                    try:
                        await self.handle(message)
                    except ConvergeError:
                        _log.exception(
                            "bidding: message %s from %s dropped", message.id, message.sender
                        )
            if stop.is_set():
                return

    async def _route(self, message: Message) -> None:
        if not isinstance(message.payload, bytes):
            await self._refuse(message, "malformed", "the payload is not a sealed object")
        elif message.kind == OFFER_KIND:
            await self.receive_offer(message.payload, sender=message.sender)
        elif message.kind == TASK_PROGRESS_KIND:
            await self._on_progress(message)
        elif message.kind == TASK_DONE_KIND:
            await self._on_done(message)
        elif message.kind == RECEIPT_KIND:
            await self._on_receipt(message)
        else:
            await self._refuse(message, "unknown_kind", f"kind {message.kind!r}")

    async def _refuse(
        self,
        message: Message,
        reason: RoundRefusal,
        detail: str,
        round_: ContractRound | None = None,
        *,
        authenticated: bool = True,
    ) -> None:
        """Record a ``bidding.refused`` event for ``message``; nothing else changes.

        ``authenticated`` false: the message's signature did not verify, so its ``sender`` is
        only a claim (``data.claimed_sender``) and the event names no actor.
        """
        event = message_refused_event(
            message, reason, detail, round_, self.did, self.clock.now(), authenticated=authenticated
        )
        await self.store.append([event])

    async def _open(
        self, message: Message, cls: type[S], *, require_all: bool = True
    ) -> tuple[S, ContractRound, TaskStart] | None:
        """The verified object ``message`` carries, its round (one of this requester's) and
        the round's ``TaskStart``; or None after recording why not.

        A body holding a NaN or an infinity is refused as ``malformed`` (``unseal`` refuses
        it): it cannot be encoded canonically, so nothing derived from it (a digest, a
        receipt) could be checked.
        """
        payload = message.payload
        if not isinstance(payload, bytes):
            await self._refuse(message, "malformed", "the payload is not a sealed object")
            return None
        try:
            obj = unseal(payload, cls, require_all=require_all)
        except SignatureError as exc:
            await self._refuse(message, "bad_signature", str(exc))
            return None
        except ConvergeError as exc:
            await self._refuse(message, "malformed", str(exc))
            return None
        task_id: str = getattr(obj, "task_id")  # noqa: B009 - every report names its task
        entry = await self.store.get(_task_key(task_id))
        round_ = None if entry is None else await self.get(entry.value.decode())
        if round_ is None or round_.requester != self.did or round_.task_start is None:
            detail = f"no awarded task {task_id} of this requester"
            await self._refuse(message, "unknown_round", detail)
            return None
        return obj, round_, unseal(round_.task_start, TaskStart)

    async def _on_progress(self, message: Message) -> None:
        """Record the winner's progress report, in ``seq`` order."""
        opened = await self._open(message, TaskProgress)
        if opened is None:
            return
        report, round_, start = opened
        await self._update(round_.id, progress_step(message, start, report))

    async def _on_done(self, message: Message) -> None:
        """Record the winner's ``TaskDone`` (once); its receipt is awaited next."""
        opened = await self._open(message, TaskDone)
        if opened is None:
            return
        done, round_, start = opened
        sealed = message.payload
        if not isinstance(sealed, bytes):  # _open checked it; this narrows the type
            return
        await self._update(round_.id, done_step(message, start, done, sealed))

    async def _on_receipt(self, message: Message) -> None:
        """Check the executor-signed receipt against the ``TaskDone`` and the award, check the
        output, countersign (or dispute), and update the winner's trust."""
        opened = await self._open(message, Receipt, require_all=False)
        if opened is None:
            return
        receipt, round_, start = opened
        if receipt.executor_signature is None or receipt.requester_signature is not None:
            detail = "a receipt arrives signed by its executor, and only by it"
            await self._refuse(message, "bad_signature", detail, round_)
            return
        done = None if round_.done is None else unseal(round_.done, TaskDone)
        problem = check_receipt(round_, start, done, receipt, message.sender)
        if problem is not None:
            await self._refuse(message, *problem, round_)
            return
        award = round_.award
        if done is None or award is None or not isinstance(message.payload, bytes):
            # check_receipt passes only a DONE round, which has both; never trust that blindly.
            detail = "the round has no TaskDone or award"
            await self._refuse(message, "out_of_order", detail, round_)
            return
        outcome, dispute = await self._verdict(round_, done, award, receipt.cost)
        sealed = message.payload if dispute else receipt.countersign(self.identity).seal()
        step = settle_step(
            message, start, done, receipt, sealed=sealed, outcome=outcome, dispute=dispute
        )
        # Waiters wake once trust is updated too: a round seen settled has had its effect.
        settled = await self._update(round_.id, step, notify=False)
        try:
            if settled is not None and self.trust is not None:
                await self.trust.record(
                    award.provider,
                    outcome,
                    trace_id=round_.trace_id,
                    actor=self.did,
                    reason=f"receipt {receipt.id}: {dispute or receipt.status}",
                    cause=round_.id,
                )
        finally:
            self._notify(round_.id)

    async def _verdict(
        self, round_: ContractRound, done: TaskDone, award: Award, cost: float
    ) -> tuple[str, str | None]:
        """The trust outcome, and the reason to dispute the output (None: countersign)."""
        if done.status != "completed":
            if cost != 0:  # failed or cancelled work is not paid for (see _round)
                return "failure", f"a {done.status} task is not paid for; the receipt claims {cost}"
            return "failure", None  # a truthful receipt of a failure is settled, and counts
        problem = over_limits(done, award.offer.resource_limits)
        if problem is None:
            try:
                accepted = await self._check_output(done)
            except Exception as exc:  # the requester's check is user code: its bug is a refusal
                problem = f"the output check raised {type(exc).__name__}: {exc}"
            else:
                if not accepted:
                    problem = "the requester's output check refused the output"
        if problem is not None:
            return "failure", problem
        deadline = round_.auction.intent.constraints.deadline
        # The requester's clock when the TaskDone arrived, not the executor's say-so: a late
        # winner could write any finished_at. (A round stored before done_at existed falls back
        # to it.)
        arrived = round_.done_at if round_.done_at is not None else done.finished_at
        if deadline is not None and arrived > deadline:
            return "timeout", None
        return "success", None

    async def _check_output(self, done: TaskDone) -> bool:
        if self.check_output is None:
            return True
        verdict = self.check_output(done)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        return bool(verdict)

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
    """The key holding a round."""
    return f"bidding/{auction_id}"


def _task_key(task_id: str) -> str:
    """The key naming the round of an awarded task."""
    return f"bidding-task/{task_id}"
