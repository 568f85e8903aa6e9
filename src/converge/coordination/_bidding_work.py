"""After the award: the winner's ``TaskProgress``, ``TaskDone`` and ``Receipt`` as they reach the
requester, checked (``_bidding_core``), recorded, countersigned, and turned into trust.

Each handler takes a message the ``BiddingProtocol`` has authenticated, verifies the sealed
object it carries, finds its round through ``bidding-task/<task id>``, and applies one pure step
to the round in one unit of work with its event.

Events (trace: the round's; subject: the auction id), ``data``:

- ``bidding.progress``: ``task_id``, ``seq``, ``progress``, ``message``;
- ``bidding.done``: ``task_id``, ``status``, ``output_digest``, ``error``;
- ``bidding.settled``: ``receipt_id``, ``status``, ``cost``, ``currency``, ``outcome`` (the
  trust outcome: ``success``; ``timeout`` when the TaskDone reached the requester after the
  deadline, by the requester's clock (``ContractRound.done_at``); ``failure`` when
  the work failed or was cancelled);
- ``bidding.disputed``: ``receipt_id``, ``reason`` (over the winner's own resource limits,
  refused by the requester's output check, or a failed or cancelled task's receipt claiming a
  cost), ``outcome`` (``failure``);
- ``bidding.refused``: ``kind`` (the message's), ``reason`` (a ``RoundRefusal``), ``detail``,
  ``message_id``; ``claimed_sender`` when the message did not verify (its actor is then empty:
  the actor is always the authenticated sender). A refusal about a round of this requester is
  filed in the round's trace; any other (no round found, another requester's round, a message
  that did not verify) in the trace named by the requester's own did, never in a trace the
  message chose.

A settled receipt carries both signatures; a disputed one only the executor's (the requester
never countersigns an output it refused). The winner's trust is recorded (``trust.updated``, same
trace, ``cause`` the round's id) after the round's own unit of work: a crash between the two
loses that one update, never the receipt.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, TypeVar

from converge.coordination._bidding_core import (
    ContractRound,
    ProgressNote,
    RoundRefusal,
    RoundStage,
    check_done,
    check_progress,
    check_receipt,
    move,
    over_limits,
    round_event,
)
from converge.core.clip import clip, clip_text, shown
from converge.core.message import Message
from converge.core.signing import Signed, unseal
from converge.errors import ConvergeError, SignatureError
from converge.protocol.event import Event
from converge.protocol.objects import Receipt, TaskDone, TaskProgress, TaskStart, output_digest

if TYPE_CHECKING:  # bidding imports this module at run time
    from converge.coordination._auction import Award
    from converge.coordination.bidding import BiddingProtocol

__all__ = ["on_done", "on_progress", "on_receipt", "refuse", "task_key"]

S = TypeVar("S", bound=Signed)


def task_key(task_id: str) -> str:
    """The key naming the round of an awarded task."""
    return f"bidding-task/{task_id}"


async def refuse(
    p: BiddingProtocol,
    message: Message,
    reason: RoundRefusal,
    detail: str,
    round_: ContractRound | None = None,
    *,
    authenticated: bool = True,
) -> None:
    """Record a ``bidding.refused`` event for ``message``; nothing else changes.

    ``authenticated`` false: the message's signature did not verify, so its ``sender`` is only
    a claim (``data.claimed_sender``) and the event names no actor.
    """
    await p.store.append([_refusal(p, message, reason, detail, round_, authenticated)])


def _refusal(
    p: BiddingProtocol,
    message: Message,
    reason: RoundRefusal,
    detail: str,
    round_: ContractRound | None,
    authenticated: bool = True,
) -> Event:
    # The trace is the round's only once the round is known to be this requester's; what a
    # message merely claims never picks the trace its refusal is filed in.
    # What a refused message holds may be of any type and size: the event shows it clipped.
    data = {
        "kind": shown(getattr(message, "kind", None)),
        "reason": reason,
        "detail": clip_text(detail),
        "message_id": shown(getattr(message, "id", None)),
    }
    if not authenticated:
        data["claimed_sender"] = shown(getattr(message, "sender", None))
    return Event(
        kind="bidding.refused",
        trace_id=round_.trace_id if round_ else p.did,
        actor=clip(message.sender) if authenticated else "",
        subject=round_.id if round_ else "",
        data=data,
        at=p.clock.now(),
    )


async def _open(
    p: BiddingProtocol, message: Message, cls: type[S], *, require_all: bool = True
) -> tuple[S, ContractRound, TaskStart] | None:
    """The verified object ``message`` carries, its round (one of this requester's) and the
    round's ``TaskStart``; or None after recording why not.

    A body holding a NaN or an infinity is refused as ``malformed`` (``unseal`` refuses it): it
    cannot be encoded canonically, so nothing derived from it (a digest, a receipt) could be
    checked.
    """
    payload = message.payload
    if not isinstance(payload, bytes):
        await refuse(p, message, "malformed", "the payload is not a sealed object")
        return None
    try:
        obj = unseal(payload, cls, require_all=require_all)
    except SignatureError as exc:
        await refuse(p, message, "bad_signature", str(exc))
        return None
    except ConvergeError as exc:
        await refuse(p, message, "malformed", str(exc))
        return None
    task_id: str = getattr(obj, "task_id")  # noqa: B009 - every report names its task
    entry = await p.store.get(task_key(task_id))
    round_ = None if entry is None else await p.get(entry.value.decode())
    if round_ is None or round_.requester != p.did or round_.task_start is None:
        await refuse(p, message, "unknown_round", f"no awarded task {task_id} of this requester")
        return None
    return obj, round_, unseal(round_.task_start, TaskStart)


async def on_progress(p: BiddingProtocol, message: Message) -> None:
    """Record the winner's progress report, in ``seq`` order."""
    opened = await _open(p, message, TaskProgress)
    if opened is None:
        return
    report, round_, start = opened

    def step(r: ContractRound, now: float) -> tuple[ContractRound | None, list[Event], None]:
        problem = check_progress(r, start, report, message.sender)
        if problem is not None:
            return None, [_refusal(p, message, *problem, r)], None
        note = ProgressNote(report.seq, report.progress, report.at, report.message)
        new = move(r, RoundStage.AWARDED, now, progress=(*r.progress, note))
        event = round_event(
            "progress",
            new,
            actor=message.sender,
            at=now,
            task_id=report.task_id,
            seq=report.seq,
            progress=report.progress,
            message=report.message or None,
        )
        return new, [event], None

    await p._update(round_.id, step)


async def on_done(p: BiddingProtocol, message: Message) -> None:
    """Record the winner's ``TaskDone`` (once); its receipt is awaited next."""
    opened = await _open(p, message, TaskDone)
    if opened is None:
        return
    done, round_, start = opened
    sealed = message.payload
    if not isinstance(sealed, bytes):  # _open checked it; this narrows the type
        return

    def step(r: ContractRound, now: float) -> tuple[ContractRound | None, list[Event], None]:
        problem = check_done(r, start, done, message.sender)
        if problem is not None:
            return None, [_refusal(p, message, *problem, r)], None
        new = move(r, RoundStage.DONE, now, done=sealed, done_at=now)
        event = round_event(
            "done",
            new,
            actor=message.sender,
            at=now,
            task_id=done.task_id,
            status=done.status,
            output_digest=output_digest(done.output),
            error=done.error,
        )
        return new, [event], None

    await p._update(round_.id, step)


async def on_receipt(p: BiddingProtocol, message: Message) -> None:
    """Check the executor-signed receipt against the ``TaskDone`` and the award, check the
    output, countersign (or dispute), and update the winner's trust."""
    opened = await _open(p, message, Receipt, require_all=False)
    if opened is None:
        return
    receipt, round_, start = opened
    if receipt.executor_signature is None or receipt.requester_signature is not None:
        detail = "a receipt arrives signed by its executor, and only by it"
        await refuse(p, message, "bad_signature", detail, round_)
        return
    done = None if round_.done is None else unseal(round_.done, TaskDone)
    problem = check_receipt(round_, start, done, receipt, message.sender)
    if problem is not None:
        await refuse(p, message, *problem, round_)
        return
    award = round_.award
    if done is None or award is None or not isinstance(message.payload, bytes):
        # check_receipt passes only a DONE round, which has both; never trust that blindly.
        await refuse(p, message, "out_of_order", "the round has no TaskDone or award", round_)
        return
    outcome, dispute = await _verdict(p, round_, done, award, receipt.cost)
    sealed = message.payload if dispute else receipt.countersign(p.identity).seal()

    def step(r: ContractRound, now: float) -> tuple[ContractRound | None, list[Event], Any]:
        again = check_receipt(r, start, done, receipt, message.sender)  # a concurrent receipt?
        if again is not None:
            return None, [_refusal(p, message, *again, r)], None
        if dispute is not None:
            new = move(r, RoundStage.DISPUTED, now, receipt=sealed, outcome=outcome, reason=dispute)
            data: dict[str, Any] = {"reason": dispute}
        else:
            new = move(r, RoundStage.SETTLED, now, receipt=sealed, outcome=outcome)
            data = {"status": receipt.status, "cost": receipt.cost, "currency": receipt.currency}
        event = round_event(
            new.stage.value,
            new,
            actor=p.did,
            at=now,
            receipt_id=receipt.id,
            outcome=outcome,
            **data,
        )
        return new, [event], new

    # Waiters wake once trust is updated too: a round seen settled has had its effect.
    settled = await p._update(round_.id, step, notify=False)
    try:
        if settled is not None and p.trust is not None:
            await p.trust.record(
                award.provider,
                outcome,
                trace_id=round_.trace_id,
                actor=p.did,
                reason=f"receipt {receipt.id}: {dispute or receipt.status}",
                cause=round_.id,
            )
    finally:
        p._notify(round_.id)


async def _check_output(p: BiddingProtocol, done: TaskDone) -> bool:
    if p.check_output is None:
        return True
    verdict = p.check_output(done)
    if inspect.isawaitable(verdict):
        verdict = await verdict
    return bool(verdict)


async def _verdict(
    p: BiddingProtocol, round_: ContractRound, done: TaskDone, award: Award, cost: float
) -> tuple[str, str | None]:
    """The trust outcome, and the reason to dispute the output (None: countersign)."""
    if done.status != "completed":
        if cost != 0:  # failed or cancelled work is not paid for (see _bidding_core)
            return "failure", f"a {done.status} task is not paid for; the receipt claims {cost}"
        return "failure", None  # a truthful receipt of a failure is settled, and counts against
    problem = over_limits(done, award.offer.resource_limits)
    if problem is None:
        try:
            accepted = await _check_output(p, done)
        except Exception as exc:  # the requester's check is user code: its bug is a refusal
            problem = f"the output check raised {type(exc).__name__}: {exc}"
        else:
            if not accepted:
                problem = "the requester's output check refused the output"
    if problem is not None:
        return "failure", problem
    deadline = round_.auction.intent.constraints.deadline
    # The requester's clock when the TaskDone arrived, not the executor's say-so: a late winner
    # could write any finished_at. (A round stored before done_at existed falls back to it.)
    arrived = round_.done_at if round_.done_at is not None else done.finished_at
    if deadline is not None and arrived > deadline:
        return "timeout", None
    return "success", None
