"""Safety: quotas and allowlists, checked before a decision runs.

Resource quotas and action allowlists, checked before the executor runs a decision.

Data, one pure check, and a usage record the runtime updates::

    violations = validate_safety(decisions, limits=limits, policy=policy, usage=usage, now=now)
    for decision in accepted(decisions, violations):
        ...  # execute it, then
        usage.apply(decision, now)

``validate_safety`` walks the decisions in order as if the accepted ones before each had been
applied, so quotas hold within one ``decide()`` result as well as across results. It never mutates
``usage`` and never raises. A refused decision gets one ``SafetyViolation``, for the first rule it
breaks, checked in this order: not a decision, malformed (a field of the wrong type: building a
struct in process checks none, so each is checked as decoding it from bytes would), decision
deny/allow lists, tool deny/allow lists, exhausted budgets (wall time, tokens, cost), quotas
(messages per second, tool calls, claimed tasks). A result longer than
``max_decisions_per_call`` is refused whole, with one violation at index -1. Nothing here does
I/O: the runtime records the violations as events and enforces them (and waits to keep within
``max_decide_calls_per_second``, which refuses nothing).

Claimed tasks are tracked by id, so reporting a task one does not hold frees no quota. The
message rate is a one-second sliding window in bounded memory: it may over-count, never
under-count. The malformed check encodes and decodes each decision with its class (~0.3 µs)
before any other rule looks at it (once, an unhashable field raised ``TypeError`` inside
``validate_safety`` and ended the runtime). Budgets (wall time, tokens, cost) count as exhausted
only when strictly over their limit; the runtime stops on a decision past one (``budget
exhausted: <rule>``), and the wall-time budget also stops an idle runtime when it is up.
"""

from __future__ import annotations

import math
import typing
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal

import msgspec

from converge.core.decisions import (
    DECISION_TYPES,
    ClaimTask,
    Decision,
    FailTask,
    InvokeTool,
    ReportTask,
    SendMessage,
)
from converge.errors import DecisionsRefused, ValidationError

__all__ = [
    "SAFETY_RULES",
    "ActionPolicy",
    "AgentUsage",
    "DecisionsRefused",
    "ResourceLimits",
    "SafetyRule",
    "SafetyViolation",
    "accepted",
    "raise_for",
    "validate_safety",
]

SafetyRule = Literal[
    "decision_not_allowed",
    "decision_malformed",
    "decision_denied",
    "tool_not_allowed",
    "tool_denied",
    "max_claimed_tasks",
    "max_messages_per_second",
    "max_tool_calls",
    "max_tokens",
    "max_cost",
    "max_wall_time_s",
    "max_decisions_per_call",
]
"""The machine-readable name of a broken rule (a limit's field name, or an allow/deny rule)."""

SAFETY_RULES: tuple[str, ...] = typing.get_args(SafetyRule)
"""Every rule name."""

_WINDOW_S = 1.0  # the rate window: messages sent in (now - 1 s, now]
_MAX_WINDOW_ENTRIES = 1024  # distinct send times kept; beyond it the oldest two merge
_TAGS: dict[type, str] = {cls: tag for tag, cls in DECISION_TYPES.items()}
_KNOWN = ", ".join(sorted(DECISION_TYPES))

_Count = Annotated[int, msgspec.Meta(ge=0)]
_Amount = Annotated[float, msgspec.Meta(ge=0)]


class ResourceLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Quotas for one agent; every limit is optional (None: unlimited).

    The two rates have defaults, so that an agent that keeps waking itself (a message to
    itself per ``decide()``, a task it submits and sees) cannot spin a core and flood the
    network: 10,000 messages and 1,000 ``decide()`` calls a second. Both are far above what a
    working agent needs — one decision may message 10,000 agents — and cost nothing while an
    agent is idle. Set either to None for no limit, or to another number. Without them an agent
    messaging itself on every call looped at ~4,500 ``decide()`` calls a second on one core; the
    board benchmark's agent makes ~520 calls in all. The runtime *waits* rather than refusing a
    call, because a refused self-message or claim would leave an agent asleep with work still
    visible.
    """

    max_claimed_tasks: _Count | None = None
    """Tasks the agent may hold (claimed, not yet reported or failed) at once."""
    max_messages_per_second: _Count | None = 10_000
    """Messages the agent may send in any sliding one-second window; more are refused."""
    max_decide_calls_per_second: _Count | None = 1_000
    """Calls to the agent's ``decide()`` in any sliding one-second window. The runtime waits
    before a call that would exceed it, refusing nothing: messages and tasks that arrive
    meanwhile are handed to that call in one batch."""
    max_tool_calls: _Count | None = None
    """Tool calls over the agent's lifetime."""
    max_tokens: _Count | None = None
    """LLM tokens over the agent's lifetime; once more are used, every decision is refused."""
    max_cost: _Amount | None = None
    """Cost over the agent's lifetime; once more is spent, every decision is refused."""
    max_wall_time_s: _Amount | None = None
    """Seconds since the agent started; once past, every decision is refused."""
    max_decisions_per_call: _Count | None = None
    """Decisions one ``decide()`` may return; a longer result is refused whole (a runaway guard)."""

    def __post_init__(self) -> None:
        for name in ResourceLimits.__struct_fields__:
            value = getattr(self, name)
            if value is not None:
                _check_amount(name, value, count=name not in ("max_cost", "max_wall_time_s"))


def _check_amount(name: str, value: object, *, count: bool) -> None:
    """Refuse anything but an int (``count``) or a finite number, >= 0; bool is not a number."""
    kinds = int if count else (int, float)
    if (
        isinstance(value, bool)
        or not isinstance(value, kinds)
        or (isinstance(value, float) and not math.isfinite(value))
        or value < 0
    ):
        kind = "an int" if count else "a finite number"
        raise ValidationError(f"`{name}` must be {kind} >= 0, not {value!r}", field=name)


class ActionPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """What an agent may do: allow and deny lists of decision types and tools.

    An allowlist of None allows everything; an empty allowlist allows nothing. A name on both
    lists is denied. Tool lists apply to ``invoke_tool`` decisions only. Any iterable of names
    is accepted and kept as a frozenset.
    """

    allow_decisions: frozenset[str] | None = None
    """Decision tags allowed (``"claim_task"`` …); None: every type."""
    deny_decisions: frozenset[str] = frozenset()
    """Decision tags refused, whatever the allowlist says."""
    allow_tools: frozenset[str] | None = None
    """Tool names ``invoke_tool`` may call; None: every tool."""
    deny_tools: frozenset[str] = frozenset()
    """Tool names refused, whatever the allowlist says."""

    def __post_init__(self) -> None:
        for name in ("allow_decisions", "deny_decisions", "allow_tools", "deny_tools"):
            value = getattr(self, name)
            if value is None and name.startswith("allow"):
                continue
            names = _name_set(value, name)
            if names is not value:
                msgspec.structs.force_setattr(self, name, names)
            if name.endswith("decisions") and not names <= DECISION_TYPES.keys():
                unknown = ", ".join(sorted(names - DECISION_TYPES.keys()))
                msg = f"`{name}` names unknown decision types: {unknown}; known: {_KNOWN}"
                raise ValidationError(msg, field=name)

    @classmethod
    def allow_all(cls) -> ActionPolicy:
        """A policy that allows every decision type and every tool."""
        return cls()

    @classmethod
    def deny_all(cls) -> ActionPolicy:
        """A policy that allows nothing at all."""
        return cls(allow_decisions=frozenset(), allow_tools=frozenset())


def _name_set(value: object, field: str) -> frozenset[str]:
    # A bare string is iterable too: "claim_task" would become a set of letters.
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValidationError(f"`{field}` must be a set of names, not {value!r}", field=field)
    names = value if isinstance(value, frozenset) else frozenset(value)
    for item in names:
        if not isinstance(item, str) or not item:
            raise ValidationError(f"`{field}` holds {item!r}, not a non-empty name", field=field)
    return names


class SafetyViolation(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One refused decision (or a refused call), and why."""

    index: int
    """Position of the decision in the list; -1 when the rule refuses the whole call."""
    decision_type: str
    """The decision's tag (``"claim_task"`` …); empty when ``index`` is -1."""
    rule: SafetyRule
    """The rule broken, a stable machine-readable name (see ``SAFETY_RULES``)."""
    detail: str
    """What happened, in words, with the numbers."""

    def __str__(self) -> str:
        where = "call" if self.index < 0 else f"[{self.index}] {self.decision_type}"
        return f"{where}: {self.rule}: {self.detail}"


class AgentUsage:
    """What one agent has consumed so far; the runtime keeps one per agent.

    ``apply`` records what an executed decision consumes; ``add_usage`` what its tools and LLM
    calls report afterwards; ``release_task`` a task the agent stopped holding some other way (an
    expired lease, a claim the board refused); ``record_decide`` a call to its ``decide()``.
    Claimed tasks are tracked by id, so reporting a task the agent does not hold frees nothing.
    Message send times and ``decide()`` call times are kept for the last second only, as at most
    1,024 distinct times each; beyond that the oldest two merge into the later one, which can
    only over-count, never let one slip through.

    Args:
        started_at: when the agent started, on the clock ``now`` comes from.
        claimed: ids of tasks the agent already holds.
    """

    __slots__ = ("_claimed", "_decides", "_sent", "cost", "started_at", "tokens", "tool_calls")

    def __init__(self, started_at: float, *, claimed: Iterable[str] = ()) -> None:
        self.started_at = float(started_at)
        self._claimed: set[str] = set(claimed)
        self._sent = _Window()
        self._decides = _Window()
        self.tool_calls = 0
        """Tools called so far."""
        self.tokens = 0
        """Tokens reported so far."""
        self.cost = 0.0
        """Cost reported so far."""

    @property
    def claimed_tasks(self) -> int:
        """How many tasks the agent holds."""
        return len(self._claimed)

    @property
    def claimed_task_ids(self) -> frozenset[str]:
        """The ids of the tasks the agent holds."""
        return frozenset(self._claimed)

    def messages_in_window(self, now: float) -> int:
        """Messages sent in the second up to ``now``: (now - 1 s, now]."""
        return self._sent.count(now)

    def decide_calls_in_window(self, now: float) -> int:
        """``decide()`` calls made in the second up to ``now``: (now - 1 s, now]."""
        return self._decides.count(now)

    def record_decide(self, now: float) -> None:
        """Record a call to the agent's ``decide()`` at ``now``."""
        self._decides.add(now)

    def decide_delay(self, limit: int | None, now: float) -> float:
        """Seconds to wait from ``now`` before the next ``decide()`` call keeps within
        ``limit`` calls a second: 0 when it may be made at once (or ``limit`` is None);
        infinite when ``limit`` is 0."""
        return 0.0 if limit is None else self._decides.wait(limit, now)

    def apply(self, decision: Decision, now: float) -> None:
        """Record what an accepted (executed) decision consumes at time ``now``."""
        if isinstance(decision, SendMessage):
            self._record_message(now)
        elif isinstance(decision, ClaimTask):
            self._claimed.add(decision.task_id)
        elif isinstance(decision, (ReportTask, FailTask)):
            self._claimed.discard(decision.task_id)
        elif isinstance(decision, InvokeTool):
            self.tool_calls += 1

    def add_usage(self, *, tokens: int = 0, cost: float = 0.0) -> None:
        """Add what a tool or LLM call reports having consumed.

        Raises:
            ValidationError: a negative, non-finite or mistyped amount (named).
        """
        _check_amount("tokens", tokens, count=True)
        _check_amount("cost", cost, count=False)
        self.tokens += tokens
        self.cost += cost

    def release_task(self, task_id: str) -> None:
        """Forget a held task (lease expired, claim refused, task cancelled)."""
        self._claimed.discard(task_id)

    def _record_message(self, now: float) -> None:
        self._sent.add(now)

    def __repr__(self) -> str:
        return (
            f"AgentUsage(started_at={self.started_at!r}, claimed_tasks={len(self._claimed)}, "
            f"tool_calls={self.tool_calls}, tokens={self.tokens}, cost={self.cost!r})"
        )


class _Window:
    """Events in a sliding second, in bounded memory: at most 1,024 distinct times; beyond that
    the oldest two merge into the later one, which can only over-count, never let one slip
    through."""

    __slots__ = ("_times", "_total")

    def __init__(self) -> None:
        self._times: deque[tuple[float, int]] = deque()  # (time, events), oldest first
        self._total = 0

    def count(self, now: float) -> int:
        """Events in (now - 1 s, now]."""
        total = self._total
        cutoff = now - _WINDOW_S
        for at, count in self._times:
            if at > cutoff:
                break
            total -= count
        return total

    def add(self, now: float) -> None:
        """Record one event at ``now``."""
        times = self._times
        cutoff = now - _WINDOW_S
        while times and times[0][0] <= cutoff:
            self._total -= times.popleft()[1]
        if times and times[-1][0] >= now:
            # Same instant (one call's messages share `now`), or time went backwards: count it at
            # the latest time, so the deque stays sorted and the count errs on the safe side.
            at, count = times.pop()
            times.append((at, count + 1))
        else:
            times.append((now, 1))
        self._total += 1
        if len(times) > _MAX_WINDOW_ENTRIES:
            _, first = times.popleft()
            at, second = times.popleft()
            times.appendleft((at, first + second))

    def wait(self, limit: int, now: float) -> float:
        """Seconds from ``now`` until fewer than ``limit`` events are in the window."""
        if limit <= 0:
            return math.inf
        left = self.count(now)
        cutoff = now - _WINDOW_S
        for at, count in self._times:
            if left < limit:
                break
            if at > cutoff:
                left -= count
                if left < limit:
                    return at + _WINDOW_S - now
        return 0.0


def _over_budget(
    limits: ResourceLimits, usage: AgentUsage, now: float
) -> tuple[SafetyRule, str] | None:
    """The first lifetime budget already exceeded (wall time, tokens, cost), or None."""
    elapsed, wall = now - usage.started_at, limits.max_wall_time_s
    if wall is not None and elapsed > wall:
        return "max_wall_time_s", f"running {elapsed:g} s > max_wall_time_s {wall:g}"
    if limits.max_tokens is not None and usage.tokens > limits.max_tokens:
        return "max_tokens", f"{usage.tokens} tokens used > max_tokens {limits.max_tokens}"
    if limits.max_cost is not None and usage.cost > limits.max_cost:
        return "max_cost", f"cost {usage.cost:g} spent > max_cost {limits.max_cost:g}"
    return None


def validate_safety(
    decisions: Sequence[Decision],
    *,
    limits: ResourceLimits,
    policy: ActionPolicy,
    usage: AgentUsage,
    now: float,
) -> list[SafetyViolation]:
    """Check one ``decide()`` result against limits and policy, without changing ``usage``.

    Decisions are checked in order, as if every accepted one before had been applied: with
    ``max_claimed_tasks=3`` and one task held, the third of five claims is the first refused.
    Each refused decision gets one violation; a result longer than ``max_decisions_per_call``
    gets a single violation at index -1 and is refused whole. Something that is not a decision
    is refused as ``decision_not_allowed``, a decision with a field of the wrong type as
    ``decision_malformed``, rather than raised on.

    Args:
        decisions: what the agent decided, in order.
        limits: the agent's quotas.
        policy: the agent's allow and deny lists.
        usage: what the agent has consumed before this call.
        now: the current time, on the clock ``usage.started_at`` comes from.

    Returns:
        The violations in decision order; empty when everything may run.
    """
    if not decisions:
        return []
    cap = limits.max_decisions_per_call
    if cap is not None and len(decisions) > cap:
        detail = f"{len(decisions)} decisions in one call > max_decisions_per_call {cap}"
        return [_v(-1, "", "max_decisions_per_call", detail)]
    allow_d, deny_d = policy.allow_decisions, policy.deny_decisions
    allow_t, deny_t = policy.allow_tools, policy.deny_tools
    over = _over_budget(limits, usage, now)
    max_rate, max_tools, max_claimed = (
        limits.max_messages_per_second,
        limits.max_tool_calls,
        limits.max_claimed_tasks,
    )
    if (
        over is None
        and max_tools is None
        and max_claimed is None
        and policy == _ALLOW_ALL
        and all(map(_TAGS.__contains__, map(type, decisions)))
        and not any(map(_malformed, decisions))
    ):
        # Only the message rate can refuse anything: skip the walk if it refuses nothing.
        if max_rate is None:
            return []
        sends = sum(type(d) is SendMessage for d in decisions)
        if not sends or usage.messages_in_window(now) + sends <= max_rate:
            return []

    out: list[SafetyViolation] = []
    held = set(usage._claimed) if max_claimed is not None else set()
    sent = usage.messages_in_window(now) if max_rate is not None else 0
    tools = usage.tool_calls
    bad: tuple[SafetyRule, str] | None
    for i, d in enumerate(decisions):
        bad = None
        tag = _TAGS.get(type(d))
        if tag is None:  # not a decision (a subclass of one is not one either): fail closed
            tag = type(d).__name__
            bad = "decision_not_allowed", f"{tag} is not a decision"
        elif (malformed := _malformed(d)) is not None:
            bad = "decision_malformed", malformed
        elif tag in deny_d:
            bad = "decision_denied", f"{tag!r} is in deny_decisions"
        elif allow_d is not None and tag not in allow_d:
            bad = "decision_not_allowed", f"{tag!r} is not in allow_decisions"
        elif type(d) is InvokeTool and d.tool in deny_t:
            bad = "tool_denied", f"tool {d.tool!r} is in deny_tools"
        elif type(d) is InvokeTool and allow_t is not None and d.tool not in allow_t:
            bad = "tool_not_allowed", f"tool {d.tool!r} is not in allow_tools"
        elif over is not None:
            bad = over
        elif type(d) is SendMessage and max_rate is not None:
            if sent >= max_rate:
                detail = f"message {sent + 1} in one second > max_messages_per_second {max_rate}"
                bad = "max_messages_per_second", detail
            else:
                sent += 1
        elif type(d) is InvokeTool and max_tools is not None:
            if tools >= max_tools:
                bad = "max_tool_calls", f"tool call {tools + 1} > max_tool_calls {max_tools}"
            else:
                tools += 1
        elif max_claimed is None:
            pass
        elif type(d) is ClaimTask and d.task_id not in held:
            if len(held) >= max_claimed:
                detail = f"claim of {d.task_id!r} would hold {len(held) + 1} tasks"
                bad = "max_claimed_tasks", f"{detail} > max_claimed_tasks {max_claimed}"
            else:
                held.add(d.task_id)
        elif type(d) is ReportTask or type(d) is FailTask:
            held.discard(d.task_id)
        if bad is not None:
            out.append(_v(i, tag, *bad))
    return out


_ALLOW_ALL = ActionPolicy()
_encoder = msgspec.msgpack.Encoder()
_NOT_ENCODABLE = (msgspec.EncodeError, TypeError, OverflowError, UnicodeEncodeError, RecursionError)
_decoders: dict[type, msgspec.msgpack.Decoder[Any]] = {
    cls: msgspec.msgpack.Decoder(cls) for cls in _TAGS
}


def _malformed(decision: Decision) -> str | None:
    """Why ``decision`` would not survive encoding and decoding (a field of the wrong type, a
    value that is not data), or None. Building a struct in process checks no type; this
    checks what decoding it from bytes would, for a fraction of a microsecond."""
    try:
        _decoders[type(decision)].decode(_encoder.encode(decision))
    except msgspec.ValidationError as exc:  # "Expected `str`, got `array` - at `$.task_id`"
        return f"a field of the wrong type: {exc}"
    except _NOT_ENCODABLE as exc:
        return f"a value that cannot be encoded: {type(exc).__name__}: {exc}"
    return None


def _v(index: int, tag: str, rule: SafetyRule, detail: str) -> SafetyViolation:
    return SafetyViolation(index=index, decision_type=tag, rule=rule, detail=detail)


def accepted(
    decisions: Sequence[Decision], violations: Iterable[SafetyViolation]
) -> list[Decision]:
    """The decisions that have no violation, in order; none if a violation refuses the call."""
    refused = {v.index for v in violations}
    if -1 in refused:
        return []
    return [d for i, d in enumerate(decisions) if i not in refused]


def raise_for(violations: Sequence[SafetyViolation]) -> None:
    """Raise ``DecisionsRefused`` (a ``PolicyViolation``) listing ``violations``, if there are any.

    Raises:
        DecisionsRefused: carrying ``.violations``.
    """
    if violations:
        raise DecisionsRefused(violations)
