"""A contract-net round after and around its auction, pure: the stored ``ContractRound``, its
stages and their one transition table, and the checks on what the winner sends back
(``TaskProgress``, ``TaskDone``, ``Receipt``). No I/O, no clock, no store.

``_auction`` decides who wins; this module follows the work it awards: the ``TaskStart`` sent,
the progress reported, the ``TaskDone`` and the receipt. ``BiddingProtocol`` (``bidding.py``)
reads a round, calls these functions with the time, and writes what they return in one unit of
work with its events.

Rules a caller can rely on:

* Only the winner speaks after the award, and only about the task it was given: anything else
  is refused with a reason (``RoundRefusal``) and changes nothing.
* Progress is accepted in order of ``seq`` only (a repeated or skipped ``seq`` is refused), and
  only while the work is AWARDED.
* A ``TaskDone`` is accepted once; a receipt only after it, and only if it vouches for exactly
  that ``TaskDone`` (task, status, output digest, usage) in the awarded currency.
* **What a receipt costs**: completed work is paid the awarded price, exactly; failed or
  cancelled work is paid nothing, so its receipt must carry cost 0. A completed receipt at
  another price is refused (``receipt_mismatch``: the executor may send the right one); a
  failed or cancelled receipt that claims a cost is disputed (``_bidding_work``): the requester
  never countersigns a bill for work it did not get.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

import msgspec

from converge.coordination._auction import Auction, Award
from converge.errors import InvalidTransition
from converge.protocol.event import Event
from converge.protocol.objects import Receipt, TaskDone, TaskProgress, TaskStart, output_digest

__all__ = [
    "ROUND_TRANSITIONS",
    "ContractRound",
    "ProgressNote",
    "RoundRefusal",
    "RoundStage",
    "check_done",
    "check_progress",
    "check_receipt",
    "move",
    "over_limits",
    "round_event",
]


class RoundStage(enum.StrEnum):
    """Where a contract-net round is."""

    BIDDING = "bidding"
    """The auction takes offers."""
    FAILED = "failed"
    """Closed without a valid offer (``ContractRound.reason``). Terminal."""
    AWARDED = "awarded"
    """The winner has its ``TaskStart``; progress may follow."""
    DONE = "done"
    """The winner's ``TaskDone`` is in; its receipt is awaited."""
    SETTLED = "settled"
    """The receipt is signed by both sides (``ContractRound.receipt``). Terminal."""
    DISPUTED = "disputed"
    """The requester refused the output (``ContractRound.reason``); no countersignature.
    Terminal."""


_S = RoundStage
ROUND_TRANSITIONS: dict[RoundStage, frozenset[RoundStage]] = {
    _S.BIDDING: frozenset({_S.AWARDED, _S.FAILED}),
    _S.AWARDED: frozenset({_S.AWARDED, _S.DONE}),
    _S.DONE: frozenset({_S.SETTLED, _S.DISPUTED}),
    _S.FAILED: frozenset(),
    _S.SETTLED: frozenset(),
    _S.DISPUTED: frozenset(),
}
"""Every allowed move: ``ROUND_TRANSITIONS[a]`` is the set of stages ``a`` may move to."""

RoundRefusal = Literal[
    "unknown_round",
    "not_awarded",
    "wrong_task",
    "wrong_executor",
    "wrong_sender",
    "bad_signature",
    "malformed",
    "out_of_order",
    "duplicate",
    "receipt_mismatch",
    "unknown_kind",
]
"""Why a message about a round was refused (``bidding.refused`` events, ``data.reason``)."""


class ProgressNote(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One accepted progress report."""

    seq: int
    """Its position among the task's reports, from 0."""
    progress: float
    """Fraction done."""
    at: float
    """When the executor reported it."""
    message: str = ""
    """What it said."""


class ContractRound(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One contract-net round as stored: the auction, then the work it awarded."""

    auction: Auction
    """The auction (intent, offers, rejections, award)."""
    requester: str
    """The did of the agent that issued the intent and pays."""
    invited: tuple[str, ...]
    """The providers the intent was sent to (discovery and the pool admitted them)."""
    stage: RoundStage = RoundStage.BIDDING
    """Where the round is."""
    answered: frozenset[str] = frozenset()
    """The invited providers whose offer was accepted (a refused offer does not bind: its
    provider may still bid, so it is not counted as having answered)."""
    task_start: bytes | None = None
    """The sealed ``TaskStart`` sent to the winner."""
    progress: tuple[ProgressNote, ...] = ()
    """The winner's accepted progress reports, in order."""
    done: bytes | None = None
    """The winner's sealed ``TaskDone``."""
    done_at: float | None = None
    """When the ``TaskDone`` reached the requester, on the requester's clock: what the deadline
    is judged by (the executor's own ``finished_at`` is only its claim)."""
    receipt: bytes | None = None
    """The sealed ``Receipt``: the executor's signature, and once SETTLED the requester's."""
    outcome: str | None = None
    """The trust outcome recorded for the winner (``success``, ``failure``, ``timeout``)."""
    reason: str | None = None
    """Why it FAILED or was DISPUTED."""
    updated_at: float = 0.0
    """When it last changed."""

    @property
    def id(self) -> str:
        """The auction's id (the intent's)."""
        return self.auction.id

    @property
    def trace_id(self) -> str:
        """The trace every message and event of the round carries."""
        return self.auction.intent.trace_id

    @property
    def award(self) -> Award | None:
        """The award, once the auction closed with a winner."""
        return self.auction.award

    @property
    def all_answered(self) -> bool:
        """Whether every invited provider has answered (nothing more can be waited for)."""
        return self.answered >= frozenset(self.invited)

    @property
    def is_terminal(self) -> bool:
        """Whether the round can no longer change."""
        return not ROUND_TRANSITIONS[self.stage]


def move(round_: ContractRound, target: RoundStage, now: float, **changes: Any) -> ContractRound:
    """``round_`` moved to ``target``; the one place a stage changes, checked by the table."""
    if target not in ROUND_TRANSITIONS[round_.stage]:
        raise InvalidTransition(round_.stage, target, subject=round_.id)
    return msgspec.structs.replace(round_, stage=target, updated_at=now, **changes)


def round_event(kind: str, round_: ContractRound, *, actor: str, at: float, **data: Any) -> Event:
    """A ``bidding.<kind>`` event in the round's trace, about its auction."""
    return Event(
        kind=f"bidding.{kind}",
        trace_id=round_.trace_id,
        actor=actor,
        subject=round_.id,
        data={k: v for k, v in data.items() if v is not None},
        at=at,
    )


# -- what the winner sends back ------------------------------------------------------------------


def _about_the_task(
    round_: ContractRound, start: TaskStart, task_id: str, executor: str, trace_id: str, sender: str
) -> tuple[RoundRefusal, str] | None:
    if executor != start.executor:
        return "wrong_executor", f"{executor} is not the executor {start.executor}"
    if sender != executor:
        return "wrong_sender", f"sent by {sender}, signed by the executor {executor}"
    if task_id != start.task_id or trace_id != round_.trace_id:
        return "wrong_task", f"task {task_id} trace {trace_id!r}, not {start.task_id}"
    return None


def check_progress(
    round_: ContractRound, start: TaskStart, report: TaskProgress, sender: str
) -> tuple[RoundRefusal, str] | None:
    """Why ``report`` (signature verified) cannot be taken, or None."""
    wrong = _about_the_task(round_, start, report.task_id, report.executor, report.trace_id, sender)
    if wrong is not None:
        return wrong
    if round_.stage is not _S.AWARDED:
        return "not_awarded", f"the round is {round_.stage.value}"
    expected = len(round_.progress)
    if report.seq != expected:
        return "out_of_order", f"seq {report.seq}, expected {expected}"
    return None


def check_done(
    round_: ContractRound, start: TaskStart, done: TaskDone, sender: str
) -> tuple[RoundRefusal, str] | None:
    """Why ``done`` (signature verified) cannot be taken, or None."""
    wrong = _about_the_task(round_, start, done.task_id, done.executor, done.trace_id, sender)
    if wrong is not None:
        return wrong
    if round_.stage is not _S.AWARDED:
        what: RoundRefusal = "duplicate" if round_.done is not None else "not_awarded"
        return what, f"the round is {round_.stage.value}"
    return None


def check_receipt(
    round_: ContractRound, start: TaskStart, done: TaskDone | None, receipt: Receipt, sender: str
) -> tuple[RoundRefusal, str] | None:
    """Why ``receipt`` (executor's signature verified) cannot be countersigned, or None."""
    wrong = _about_the_task(
        round_, start, receipt.task_id, receipt.executor, receipt.trace_id, sender
    )
    if wrong is not None:
        return wrong
    if round_.stage is not _S.DONE or done is None:
        late: RoundRefusal = "duplicate" if round_.receipt is not None else "out_of_order"
        return late, f"the round is {round_.stage.value}; a receipt follows the TaskDone"
    award = round_.award
    if award is None:  # a DONE round has one; a damaged stored round must not pass
        return "not_awarded", "the round has no award"
    expected: dict[str, tuple[object, object]] = {
        "requester": (receipt.requester, round_.requester),
        "intent_id": (receipt.intent_id, round_.auction.intent.id),
        "status": (receipt.status, done.status),
        "output_digest": (receipt.output_digest, output_digest(done.output)),
        "usage": (receipt.usage, done.usage),
        "currency": (receipt.currency, award.currency),
    }
    if done.status == "completed":  # an unpaid failure's cost is judged by the verdict
        expected["cost"] = (receipt.cost, award.price)
    for name, (got, want) in expected.items():
        if got != want:
            return "receipt_mismatch", f"{name} {got!r}, expected {want!r}"
    return None


def over_limits(done: TaskDone, limits: dict[str, Any]) -> str | None:
    """How ``done``'s usage exceeds the winner's own stated limits, or None."""
    usage = done.usage
    used = {
        "max_tokens": usage.tokens_in + usage.tokens_out,
        "max_tool_calls": usage.tool_calls,
        "max_cost": usage.cost,
    }
    if done.started_at is not None:
        used["max_seconds"] = done.finished_at - done.started_at
    for name, value in used.items():
        cap = limits.get(name)
        if isinstance(cap, (int, float)) and not isinstance(cap, bool) and value > cap:
            return f"used {name.removeprefix('max_')} {value} over its stated limit {cap}"
    return None
