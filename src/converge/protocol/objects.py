"""The coordination objects agents exchange.

Intents, offers, task messages, receipts, attestations.

A contract-net round speaks in these: an ``Intent`` is published, providers answer with ``Offer``s,
the requester assigns the work with a ``TaskStart``, the executor reports ``TaskProgress`` and a
``TaskDone``, and a ``Receipt`` signed by the executor and countersigned by the requester closes
it. One ``trace_id`` links them all. Each is signed by the agent that vouches for it.
"""

from __future__ import annotations

import hashlib
import time
from typing import Annotated, Any, Literal

import msgspec

from converge.core.identity import Identity
from converge.core.ids import new_id
from converge.core.signing import Signed, canonical_encode
from converge.errors import ValidationError

__all__ = [
    "Attestation",
    "Constraints",
    "Intent",
    "Offer",
    "Receipt",
    "TaskDone",
    "TaskProgress",
    "TaskStart",
    "TaskStatus",
    "Usage",
    "output_digest",
]

NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]
TaskStatus = Literal["completed", "failed", "cancelled"]


def _check(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ValidationError(message, field=field)


def _fraction(value: float | None, field: str) -> None:
    if value is not None:
        _check(0.0 <= value <= 1.0, field, f"`{field}` must be between 0 and 1, not {value!r}")


def _non_negative(value: float | None, field: str) -> None:
    if value is not None:
        _check(value >= 0, field, f"`{field}` must be >= 0, not {value!r}")


class Constraints(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """What an acceptable offer must meet."""

    max_cost: NonNegative | None = None
    """The most the issuer will pay."""
    deadline: float | None = None
    """When the work must be done (seconds since the epoch)."""
    min_quality: Fraction | None = None
    """The least quality an offer may state."""
    required_capabilities: tuple[str, ...] = ()
    """Requirements (``"summarize>=1.2"``) the provider must meet."""
    resource_limits: dict[str, NonNegative] = msgspec.field(default_factory=dict)
    """The most of each resource the issuer allows (``max_tokens``, ``max_tool_calls``,
    ``max_seconds``, ``max_cost``…): an offer must state a limit of its own within each one.
    Omitted when empty, so intents signed before this field existed keep their bytes."""

    def __post_init__(self) -> None:
        _non_negative(self.max_cost, "max_cost")
        _fraction(self.min_quality, "min_quality")
        for name, cap in self.resource_limits.items():
            _check(
                not isinstance(cap, bool) and isinstance(cap, (int, float)) and cap >= 0,
                f"resource_limits.{name}",
                f"resource limit {name!r} must be a number >= 0, not {cap!r}",
            )


class Usage(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Resources a piece of work consumed."""

    tokens_in: Annotated[int, msgspec.Meta(ge=0)] = 0
    """LLM input tokens."""
    tokens_out: Annotated[int, msgspec.Meta(ge=0)] = 0
    """LLM output tokens."""
    tool_calls: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Tool invocations."""
    cost: NonNegative = 0.0
    """Money spent, in the agreed currency."""

    def __post_init__(self) -> None:
        for name in ("tokens_in", "tokens_out", "tool_calls", "cost"):
            _non_negative(getattr(self, name), name)


class Intent(Signed, frozen=True, tag="intent"):
    """A goal put out to providers, who answer with offers (signed by its issuer)."""

    __signers__ = (("signature", "issuer"),)

    goal: str
    """What the issuer wants done, in words."""
    capability: str
    """The capability requirement the work needs (``"summarize>=1.0"``)."""
    inputs: dict[str, Any] = msgspec.field(default_factory=dict)
    """The data for the work."""
    constraints: Constraints = Constraints()
    """What an acceptable offer must meet."""
    utility: dict[str, float] = msgspec.field(default_factory=dict)
    """Scoring weights for weighted selection: ``cost``, ``latency``, ``quality``, ``reliability``,
    ``trust``."""
    bid_window_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    """How long offers are accepted after ``created_at``."""
    issuer: str = ""
    """The issuing agent's did; set by ``sign()``."""
    id: str = msgspec.field(default_factory=new_id)
    """Unique id."""
    trace_id: str = msgspec.field(default_factory=new_id)
    """The trace of the whole round."""
    created_at: float = msgspec.field(default_factory=time.time)
    """When it was issued."""
    signature: bytes | None = None
    """The issuer's signature."""

    def __post_init__(self) -> None:
        _check(bool(self.goal), "goal", "an intent needs a non-empty `goal`")
        _check(bool(self.capability), "capability", "an intent needs a `capability`")
        _check(self.bid_window_s > 0, "bid_window_s", "`bid_window_s` must be > 0")

    @property
    def closes_at(self) -> float:
        """When the bid window closes."""
        return self.created_at + self.bid_window_s


class Offer(Signed, frozen=True, tag="offer"):
    """A provider's answer to an intent: what it would charge and deliver (signed by the
    provider)."""

    __signers__ = (("signature", "provider"),)

    intent_id: str
    """The intent answered."""
    capability: str
    """The capability offered (``"summarize@1.3.0"``)."""
    cost: NonNegative
    """The price asked."""
    currency: str = "USD"
    """The currency of ``cost``."""
    latency_s: NonNegative | None = None
    """Promised time to completion."""
    quality: Fraction | None = None
    """Self-declared quality, 0 to 1."""
    reliability: Fraction | None = None
    """Self-declared probability of completing, 0 to 1."""
    resource_limits: dict[str, Any] = msgspec.field(default_factory=dict)
    """Limits the provider will respect: ``max_tokens``, ``max_tool_calls``, ``max_seconds``…"""
    terms: dict[str, Any] = msgspec.field(default_factory=dict)
    """Anything else the provider states."""
    expires_at: float | None = None
    """When the offer lapses."""
    provider: str = ""
    """The provider's did; set by ``sign()``."""
    id: str = msgspec.field(default_factory=new_id)
    """Unique id."""
    trace_id: str = ""
    """The intent's trace."""
    created_at: float = msgspec.field(default_factory=time.time)
    """When it was made."""
    signature: bytes | None = None
    """The provider's signature."""

    def __post_init__(self) -> None:
        _non_negative(self.cost, "cost")
        _non_negative(self.latency_s, "latency_s")
        _fraction(self.quality, "quality")
        _fraction(self.reliability, "reliability")


class TaskStart(Signed, frozen=True, tag="task_start"):
    """The requester assigns work to an executor (signed by the requester)."""

    __signers__ = (("signature", "requester"),)

    task_id: str
    """The task being started."""
    executor: str
    """The did of the agent that will do the work."""
    inputs: dict[str, Any] = msgspec.field(default_factory=dict)
    """The data for the work."""
    intent_id: str | None = None
    """The intent this awards, in a contract-net round."""
    offer_id: str | None = None
    """The winning offer."""
    agreed_cost: NonNegative | None = None
    """The price to be paid (the second price in a second-price auction)."""
    deadline: float | None = None
    """When the work must be done."""
    requester: str = ""
    """The requester's did; set by ``sign()``."""
    id: str = msgspec.field(default_factory=new_id)
    """Unique id."""
    trace_id: str = ""
    """The trace."""
    issued_at: float = msgspec.field(default_factory=time.time)
    """When it was issued."""
    signature: bytes | None = None
    """The requester's signature."""


class TaskProgress(Signed, frozen=True, tag="task_progress"):
    """How far the executor has got (signed by the executor)."""

    __signers__ = (("signature", "executor"),)

    task_id: str
    """The task."""
    seq: Annotated[int, msgspec.Meta(ge=0)]
    """Position among this task's progress reports, from 0."""
    progress: Fraction
    """Fraction done, 0 to 1."""
    message: str = ""
    """What is happening, for people."""
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    """Partial results or metrics."""
    executor: str = ""
    """The executor's did; set by ``sign()``."""
    id: str = msgspec.field(default_factory=new_id)
    """Unique id."""
    trace_id: str = ""
    """The trace."""
    at: float = msgspec.field(default_factory=time.time)
    """When it was reported."""
    signature: bytes | None = None
    """The executor's signature."""

    def __post_init__(self) -> None:
        _fraction(self.progress, "progress")
        _check(self.seq >= 0, "seq", "`seq` must be >= 0")


class TaskDone(Signed, frozen=True, tag="task_done"):
    """The executor's final report: the output or the error, and what it used (signed by the
    executor)."""

    __signers__ = (("signature", "executor"),)

    task_id: str
    """The task."""
    status: TaskStatus
    """``completed``, ``failed`` or ``cancelled``."""
    output: Any = None
    """The result, when completed."""
    error: str | None = None
    """Why it failed or was cancelled."""
    usage: Usage = Usage()
    """Resources used."""
    started_at: float | None = None
    """When work started."""
    finished_at: float = msgspec.field(default_factory=time.time)
    """When work ended."""
    executor: str = ""
    """The executor's did; set by ``sign()``."""
    id: str = msgspec.field(default_factory=new_id)
    """Unique id."""
    trace_id: str = ""
    """The trace."""
    signature: bytes | None = None
    """The executor's signature."""

    def __post_init__(self) -> None:
        if self.status != "completed":
            _check(bool(self.error), "error", f"a {self.status} TaskDone needs an `error`")


class Receipt(Signed, frozen=True, tag="receipt"):
    """Proof that work was done and accepted: signed by the executor, countersigned by the
    requester over the executor's signature too.

    Sign it with ``receipt.sign(executor_identity)`` then ``.sign(requester_identity, 1)``, or
    with ``sign_as_executor`` and ``countersign``.
    """

    __signers__ = (("executor_signature", "executor"), ("requester_signature", "requester"))

    task_id: str
    """The task."""
    executor: str
    """Who did the work."""
    requester: str
    """Who asked for it and accepts it."""
    status: TaskStatus
    """The outcome."""
    output_digest: str
    """sha256 (hex) of the canonical bytes of the output; see ``output_digest()``."""
    intent_id: str | None = None
    """The intent, in a contract-net round."""
    usage: Usage = Usage()
    """Resources used."""
    cost: NonNegative = 0.0
    """What is owed."""
    currency: str = "USD"
    """The currency of ``cost``."""
    id: str = msgspec.field(default_factory=new_id)
    """Unique id."""
    trace_id: str = ""
    """The trace."""
    issued_at: float = msgspec.field(default_factory=time.time)
    """When it was issued."""
    executor_signature: bytes | None = None
    """The executor's signature over the body."""
    requester_signature: bytes | None = None
    """The requester's signature over the body and the executor's signature."""

    def __post_init__(self) -> None:
        _non_negative(self.cost, "cost")
        _check(
            len(self.output_digest) == 64
            and all(c in "0123456789abcdef" for c in self.output_digest),
            "output_digest",
            "`output_digest` must be 64 lower-case hex digits (sha256)",
        )

    @classmethod
    def for_done(
        cls, done: TaskDone, *, requester: str, intent_id: str | None = None, cost: float = 0.0
    ) -> Receipt:
        """An unsigned receipt for a ``TaskDone``, with the digest of its output."""
        return cls(
            task_id=done.task_id,
            executor=done.executor,
            requester=requester,
            status=done.status,
            output_digest=output_digest(done.output),
            intent_id=intent_id,
            usage=done.usage,
            cost=cost,
            trace_id=done.trace_id,
        )

    def sign_as_executor(self, identity: Identity) -> Receipt:
        """The executor's signature (the first)."""
        return self.sign(identity, 0)

    def countersign(self, identity: Identity) -> Receipt:
        """The requester's signature, over the body and the executor's signature."""
        return self.sign(identity, 1)

    def matches_output(self, output: Any) -> bool:
        """Whether ``output`` is what this receipt vouches for."""
        return output_digest(output) == self.output_digest


class Attestation(Signed, frozen=True, tag="attestation"):
    """A signed claim by one agent about an object or event (``verified_output``,
    ``passed_review``, ``observed_failure``…)."""

    __signers__ = (("signature", "attester"),)

    subject: str
    """The id of the object or event the claim is about."""
    claim: str
    """What is claimed."""
    subject_kind: str = ""
    """What the subject is (``receipt``, ``event``, ``agent``…)."""
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    """Evidence or details."""
    expires_at: float | None = None
    """When the claim stops holding."""
    attester: str = ""
    """The attesting agent's did; set by ``sign()``."""
    id: str = msgspec.field(default_factory=new_id)
    """Unique id."""
    trace_id: str | None = None
    """The trace, if any."""
    issued_at: float = msgspec.field(default_factory=time.time)
    """When it was made."""
    signature: bytes | None = None
    """The attester's signature."""


def output_digest(output: Any) -> str:
    """sha256 (hex) of the canonical MessagePack bytes of ``output``."""
    return hashlib.sha256(canonical_encode(output)).hexdigest()
