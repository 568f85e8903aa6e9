"""Every error converge raises, under one root.

The tree is shallow on purpose: catch ``ConvergeError`` for everything, or one branch. A builtin
in parentheses is a second base: catch ``ValueError`` and you catch every ``ValidationError``::

    ConvergeError
    ├── ValidationError        (ValueError)   bad input: names the field, and for files the line
    │   ├── AgentModeError     (NotImplementedError) an agent used in a mode it was not built for
    │   ├── CapabilityError                   a capability or requirement that does not parse
    │   ├── ExpressionSyntaxError             a ``when:`` condition that does not parse
    │   ├── PlanRejected                      a plan that does not fit its agents or constraints
    │   ├── PromptTooLong                     a prompt over its agent's token budget; not sent
    │   └── StructuredOutputError             a model's structured answer stayed invalid
    ├── StateError                            an operation the current state does not allow
    │   ├── InvalidTransition                 a move between two states the table forbids
    │   │   └── BallotClosed                  a vote on a ballot already closed
    │   ├── AuctionClosed                     closing an auction already closed
    │   ├── BidWindowOpen                     closing an auction before its bid window ends
    │   ├── LeaseLost                         acting on a task whose lease the caller lost
    │   ├── ProposalSuperseded                answering a proposal a later one replaced
    │   ├── RunOwned                          resuming a run a live process is executing
    │   └── VoteAfterDeadline                 a vote at or after its ballot's deadline
    ├── ProtocolError                         a malformed or untrustworthy protocol object
    │   ├── SignatureError                    missing, bad or mismatched signature
    │   ├── StaleMessage                      timestamp outside the accepted window
    │   └── ReplayedMessage                   a nonce seen before
    ├── IdentityError                         an unusable key or key file
    ├── PolicyViolation        (PermissionError) refused by admission, safety or budget policy
    │   ├── BallotRefused                     a vote or a close the ballot's rules forbid
    │   ├── ContextAccessDenied               a scope or key the agent's context does not grant
    │   ├── DecisionsRefused                  decisions refused by safety policy, and why
    │   │   └── ToolCallRefused               a tool call refused by policy or a limit
    │   ├── DelegationRefused                 a delegation or revocation policy does not allow
    │   │   ├── DelegationCycle               a grant to an agent already in its chain
    │   │   └── ScopeExceeded                 a grant wider than its delegator's own scope
    │   ├── NegotiationRefused                a party acting out of turn, or a non-party acting
    │   └── OutOfScope                        an action no root scope or live grant covers
    ├── StoreError                            the store failed or refused an operation
    │   ├── ConflictError                     an optimistic-concurrency precondition failed
    │   │   └── TaskConflict                  a task was not in the state the caller read
    │   ├── SchemaVersionError                a store written by a newer converge
    │   ├── NotAStore                         a file that is not a converge store
    │   ├── StoreReadOnly                     a write through a store opened read-only
    │   └── StoreClosed                       an operation on a closed store
    ├── TransportError         (ConnectionError) a transport could not deliver
    │   ├── MessageTooLarge                   a message over the transport's size limit; not sent
    │   ├── TransportClosed                   a send or register on a closed transport
    │   └── FrameError                        bytes from a peer that are not a frame
    │       └── FrameTooLarge                 a frame over the size limit, sent or received
    ├── MissingExtra           (ImportError)  an optional extra is not installed
    ├── LLMError                              a model provider's call failed
    │   ├── MissingAPIKey                     no API key, given or in the environment
    │   ├── ResponseSchemaError               an answer that does not follow its schema
    │   └── ToolRoundsExceeded                a model still calling tools after its last round
    ├── ToolError                             a tool ran and failed; names the tool
    │   ├── ToolTimeout        (TimeoutError) past its time limit; a sandboxed one killed
    │   └── ToolMemoryExceeded (MemoryError)  a sandboxed tool past its memory limit
    ├── ContractFailed                        a contract-net request ended with no accepted output
    ├── ReportsRefused                        some reports of a batch were refused; the rest done
    ├── ResolutionFailed                      no answer could be picked among several results
    ├── TooManyFailedDecisions                a runtime stopped after that many failures in a row
    └── OrchestrationError                    a graph run failed
        ├── BoardTaskFailed                   a board node's task ended FAILED or CANCELLED
        ├── ExpressionError                   a condition could not be evaluated
        ├── RunFailed                         a run ended FAILED or CANCELLED; has its result
        ├── TenderFailed                      a tender node ended with no output
        ├── UnknownRoute       (LookupError)  a router (or supervisor) chose no known route
        │   └── NoMatchingRoute               a rule-mode router matched nothing, no default
        └── UsageExceeded                     an agent went past its token or tool-call limit

``tests/test_errors.py`` holds this drawing to the classes: it imports every converge module,
walks ``ConvergeError``'s subclasses and checks each public one is defined here and drawn under
its parent. The packages that raise an error also export it where their users look
(``converge.orchestration.RunFailed`` is this module's ``RunFailed``, pinned in
``tests/test_public_api.py``), so ``except`` and ``isinstance`` on a path an error had before it
moved here still match; only its ``__module__`` changed. Exceptions used as control flow inside
one module (``_expr_eval.Fail`` and ``NotFound``, ``_expr_lex.ExprSyntaxError``,
``_context.Paused``, ``yaml_reader._PastLimit``, delegation's ``_BrokenChain``, negotiation's
``_Moved``) stay in it, are never raised out of it, and are not drawn.

Errors carry their data as read-only attributes (``field``, ``source``, ``line``, ``retryable``…)
so callers never parse messages. Third-party exceptions (``sqlite3``, ``msgspec``, ``cryptography``)
are translated at the boundary and chained with ``from``.

This module is the bottom layer: it imports nothing from converge. An error whose data is an
object of a higher layer (a ``RunResult``, a ``Task``, a ``SafetyViolation``) types it ``Any``
and names its type in the docstring; a state is typed ``str`` (converge's state enums are
``StrEnum`` members, so they compare equal to their values). What messages need lives with them,
at the end of this module: ``shown_url`` and ``mask_urls`` (every ``LLMError`` message masks the
credentials of the URLs it quotes, so one never reaches a person) and ``shown_time`` and
``shown_age`` (the times of ``RunOwned``, which ownership's verdicts use too).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any, Literal
from urllib.parse import unquote

__all__ = [
    "AgentModeError",
    "AuctionClosed",
    "BallotClosed",
    "BallotRefused",
    "BidWindowOpen",
    "BoardTaskFailed",
    "CapabilityError",
    "ConflictError",
    "ContextAccessDenied",
    "ContractFailed",
    "ConvergeError",
    "DecisionsRefused",
    "DelegationCycle",
    "DelegationRefused",
    "ExpressionError",
    "ExpressionSyntaxError",
    "FrameError",
    "FrameTooLarge",
    "IdentityError",
    "InvalidTransition",
    "LLMError",
    "LeaseLost",
    "MessageTooLarge",
    "MissingAPIKey",
    "MissingExtra",
    "NegotiationRefused",
    "NoMatchingRoute",
    "NotAStore",
    "OrchestrationError",
    "OutOfScope",
    "PlanRejected",
    "PolicyViolation",
    "PromptTooLong",
    "ProposalSuperseded",
    "ProtocolError",
    "ReplayedMessage",
    "ReportsRefused",
    "ResolutionFailed",
    "ResponseSchemaError",
    "RunFailed",
    "RunOwned",
    "SchemaVersionError",
    "ScopeExceeded",
    "SignatureError",
    "StaleMessage",
    "StateError",
    "StoreClosed",
    "StoreError",
    "StoreReadOnly",
    "StructuredOutputError",
    "TaskConflict",
    "TenderFailed",
    "TooManyFailedDecisions",
    "ToolCallRefused",
    "ToolError",
    "ToolMemoryExceeded",
    "ToolRoundsExceeded",
    "ToolTimeout",
    "TransportClosed",
    "TransportError",
    "UnknownRoute",
    "UsageExceeded",
    "ValidationError",
    "VoteAfterDeadline",
    "mask_urls",
    "shown_age",
    "shown_time",
    "shown_url",
]


class ConvergeError(Exception):
    """Root of every error converge raises.

    Attributes:
        retryable: whether repeating the same call may succeed (for example a busy store).
    """

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable

    @property
    def message(self) -> str:
        """The human-readable message."""
        return str(self.args[0]) if self.args else ""


class ValidationError(ConvergeError, ValueError):
    """Input that does not meet its schema or constraints.

    Attributes:
        field: dotted path of the offending field (``"constraints.max_cost"``), or None.
        source: the file or object the input came from, or None.
        line: 1-based line in ``source``, or None.
    """

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        source: str | None = None,
        line: int | None = None,
    ) -> None:
        where = ":".join(str(p) for p in (source, line) if p is not None)
        text = f"{where}: {message}" if where else message
        if field and f"`{field}`" not in message and f"'{field}'" not in message:
            text = f"{text} (field `{field}`)"
        super().__init__(text)
        self.field = field
        self.source = source
        self.line = line


class AgentModeError(ValidationError, NotImplementedError):
    """An agent was used through an entry point it does not implement (``decide`` or ``run``)."""

    def __init__(self, agent: str, missing: str, mode: str) -> None:
        super().__init__(
            f"agent {agent!r} does not implement {missing}(), so it cannot be used {mode}; "
            f"implement {missing}() or use the agent where its own entry point is called"
        )
        self.agent = agent
        self.missing = missing


class CapabilityError(ValidationError):
    """A capability or a requirement that does not parse, with the form probably meant.

    A *capability* is what an agent has: a name and one version (``translate``,
    ``translate@1.2``). A *requirement* is what a task or an intent asks for: a name and a
    version range (``translate``, ``translate>=1.0,<2``). One written where the other belongs
    is refused with ``hint``, the other form of the same thing.

    Attributes:
        text: what was given.
        expected: ``"capability"`` or ``"requirement"``: what was asked for.
        hint: the text probably meant (``"translate@1.0"``), or None.
        detail: the message without the place (for an error re-raised at a file's line).
    """

    def __init__(
        self,
        message: str,
        *,
        text: str,
        expected: Literal["capability", "requirement"],
        hint: str | None = None,
        field: str | None = None,
        source: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__(message, field=field, source=source, line=line)
        self.text = text
        self.expected = expected
        self.hint = hint
        self.detail = message


class ExpressionSyntaxError(ValidationError):
    """A condition that does not parse; the message starts ``col N:``.

    Attributes:
        expression: the condition's text.
        column: 1-based column in ``expression`` (a newline counts as one character).
    """

    def __init__(self, expression: str, column: int, message: str, **where: Any) -> None:
        super().__init__(f"col {column}: {message}", **where)
        self.expression = expression
        self.column = column


class PlanRejected(ValidationError):
    """A plan that does not fit its agents or constraints, refused before it runs.

    Attributes:
        reason: ``empty``, ``duplicate_step``, ``bad_step_id``, ``unknown_agent``,
            ``unknown_dependency``, ``cycle``, ``too_many_steps``, ``over_budget``,
            ``no_match`` (no agent fits the goal), ``no_alternative`` (nothing to re-plan a
            failed step with) or ``unknown_step``.
        step: the offending step's id, when one is to blame.
    """

    def __init__(self, message: str, *, reason: str, step: str | None = None) -> None:
        super().__init__(message, field=f"steps.{step}" if step else "steps")
        self.reason = reason
        self.step = step


class PromptTooLong(ValidationError):
    """A prompt (the conversation so far, tool results included) would exceed the agent's
    ``max_prompt_tokens``; nothing was sent. Tokens are estimated (about four characters each).

    Attributes:
        agent: the agent's name.
        tokens: the prompt's estimated tokens.
        budget: the agent's limit.
    """

    def __init__(self, agent: str, tokens: int, budget: int) -> None:
        super().__init__(
            f"{agent}: the prompt is about {tokens} tokens, over its budget of {budget}",
            field="max_prompt_tokens",
        )
        self.agent = agent
        self.tokens = tokens
        self.budget = budget


class StructuredOutputError(ValidationError):
    """A model's structured answer stayed invalid after every attempt.

    Attributes:
        role: the name of the agent that asked.
        attempts: how many calls were made.
        problems: what was wrong with each answer, in order.
        output: the last answer (decoded, or its text when it was not JSON).
    """

    def __init__(self, role: str, attempts: int, problems: Sequence[str], output: Any) -> None:
        super().__init__(
            f"{role}: the model's answer was invalid {attempts} time(s); last: {problems[-1]}",
            field="response",
        )
        self.role = role
        self.attempts = attempts
        self.problems = tuple(problems)
        self.output = output


class StateError(ConvergeError):
    """The operation is not allowed in the object's current state."""


class InvalidTransition(StateError):
    """A state machine was asked to make a move its transition table forbids.

    Attributes:
        from_state: the current state.
        to_state: the requested state.
        subject: id of the object, when known.
    """

    def __init__(
        self,
        from_state: object,
        to_state: object,
        *,
        subject: str | None = None,
        message: str | None = None,
    ) -> None:
        a = getattr(from_state, "value", from_state)
        b = getattr(to_state, "value", to_state)
        who = f" for {subject}" if subject else ""
        # A subclass that knows why the move is forbidden says so in its own words.
        super().__init__(message or f"invalid transition{who}: {a} -> {b}")
        self.from_state = from_state
        self.to_state = to_state
        self.subject = subject


class BallotClosed(InvalidTransition):
    """A vote on a ballot that has closed: by the vote that settled it, at its deadline, or
    by its opener. An ``InvalidTransition`` (CLOSED -> OPEN) that says when and how, so code
    catching ``InvalidTransition`` still catches it. Its ``from_state`` and ``to_state`` are the
    strings ``"closed"`` and ``"open"``, equal to ``BallotState.CLOSED`` and ``OPEN`` (a
    ``StrEnum``) but not those members: this module imports nothing of converge.

    Attributes:
        ballot_id: the ballot.
        agent_id: the voter.
        closed_at: when the ballot closed (seconds since the epoch).
        cause: why it closed: ``"settled"``, ``"deadline"`` or ``"opener"``.
        outcome: the option that carried, or None when nothing was decided.
    """

    reason = "closed"

    def __init__(
        self,
        ballot_id: str,
        agent_id: str,
        closed_at: float,
        cause: str,
        outcome: str | None,
    ) -> None:
        when = dt.datetime.fromtimestamp(closed_at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        why = _BALLOT_CLOSE_CAUSES.get(cause, cause)
        result = repr(outcome) if outcome is not None else "none (nothing was decided)"
        super().__init__(
            "closed",  # BallotState.CLOSED
            "open",  # BallotState.OPEN
            subject=ballot_id,
            message=f"ballot {ballot_id} closed at {when} ({why}) with "
            f"outcome {result}: {agent_id}'s vote is not counted",
        )
        self.ballot_id = ballot_id
        self.agent_id = agent_id
        self.closed_at = closed_at
        self.cause = cause
        self.outcome = outcome


class AuctionClosed(StateError):
    """``close`` was called on an auction that is already closed.

    Attributes:
        auction_id: the auction.
        state: its (terminal) ``AuctionState``.
    """

    def __init__(self, auction_id: str, state: str) -> None:
        super().__init__(f"auction {auction_id} is already {getattr(state, 'value', state)}")
        self.auction_id = auction_id
        self.state = state


class BidWindowOpen(StateError):
    """``close`` was called before the bid window ended, without ``force=True``.

    Attributes:
        auction_id: the auction.
        closes_at: when its window ends.
        now: when close was attempted.
    """

    def __init__(self, auction_id: str, closes_at: float, now: float) -> None:
        super().__init__(
            f"auction {auction_id} takes offers until {closes_at} (now {now}); "
            "pass force=True to close it early"
        )
        self.auction_id = auction_id
        self.closes_at = closes_at
        self.now = now


class LeaseLost(StateError):
    """The caller does not hold the task's current lease (another agent, or an older attempt).

    Attributes:
        task_id: the task.
        agent_id: who asked.
        token: the token they presented.
        holder: who holds the task now (None if nobody).
        attempt: the task's current attempt number.
    """

    def __init__(
        self,
        task_id: str,
        agent_id: str,
        token: int | None,
        holder: str | None,
        attempt: int,
        task: Any = None,
    ) -> None:
        if task is not None and task.is_terminal:
            by = f" by {task.assigned_to}" if task.assigned_to else ""
            what = f"it is {task.state.value} (attempt {attempt}{by})"
        elif holder == agent_id:
            what = f"token {token} is stale: the task is at attempt {attempt}"
        elif holder is None:
            what = "nobody holds it"
        else:
            what = f"it is held by {holder} (attempt {attempt})"
        super().__init__(f"{agent_id} does not hold task {task_id}: {what}")
        self.task_id = task_id
        self.agent_id = agent_id
        self.token = token
        self.holder = holder
        self.attempt = attempt


class ProposalSuperseded(StateError):
    """An act named a proposal that a later one has replaced (or was based on one that has).

    Attributes:
        session_id: the session.
        proposal_id: the proposal the act named.
        latest_id: the session's latest proposal.
    """

    def __init__(self, session_id: str, proposal_id: str, latest_id: str) -> None:
        super().__init__(
            f"proposal {proposal_id} of negotiation {session_id} was superseded by {latest_id}; "
            "only the latest proposal can be answered"
        )
        self.session_id = session_id
        self.proposal_id = proposal_id
        self.latest_id = latest_id


class RunOwned(StateError):
    """A run is being executed by a live owner, so it cannot be resumed here.

    Attributes:
        run_id: the run.
        owner: the owner's record, a ``converge.orchestration.ownership.Owner`` (None when it
            is being taken over at this very moment).
        since: when the owner started or resumed the run (its clock's time), if known.
    """

    def __init__(
        self, run_id: str, owner: Any, since: float | None, reason: str, now: float
    ) -> None:
        if owner is None:
            text = f"run {run_id} is being resumed by another process: {reason}"
        else:
            when = "" if since is None else f"since {shown_time(since)}, "
            text = (
                f"run {run_id} is running in pid {owner.pid} on {owner.host} ({when}lease "
                f"renewed {shown_age(now - owner.renewed_at)}); wait for it to end, or stop it "
                f"with `converge cancel {run_id}`"
            )
        super().__init__(text)
        self.run_id = run_id
        self.owner = owner
        self.since = since


class VoteAfterDeadline(StateError):
    """A vote cast at or after the ballot's deadline (the ballot may not be closed yet): the
    ballot no longer takes votes.

    A ``StateError``, not a ``StaleMessage``: no message is stale or replayed, the ballot's state
    refuses the vote. A ballot already closed refuses it as ``BallotClosed`` instead.

    Attributes:
        ballot_id: the ballot.
        agent_id: the voter.
        deadline: the ballot's deadline.
        at: when the vote was cast.
        field: ``"deadline"``, the ballot's field that refused it.
        reason: ``"after_deadline"``, the refusal's code.
    """

    reason = "after_deadline"

    def __init__(self, ballot_id: str, agent_id: str, deadline: float, at: float) -> None:
        super().__init__(
            f"{agent_id} voted on ballot {ballot_id} at {at}, not before its deadline {deadline}"
        )
        self.field = "deadline"
        self.ballot_id = ballot_id
        self.agent_id = agent_id
        self.deadline = deadline
        self.at = at


class ProtocolError(ConvergeError):
    """A protocol object that is malformed, or that cannot be trusted.

    Attributes:
        field: the offending field, when one is to blame.
        reason: a short machine-readable reason (``"bad_signature"``, ``"stale"``…).
    """

    reason: str = "malformed"

    def __init__(self, message: str, *, field: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.field = field
        if reason is not None:
            self.reason = reason


class SignatureError(ProtocolError):
    """A signature is missing, does not verify, or was not made by the claimed signer."""

    reason = "bad_signature"


class StaleMessage(ProtocolError):
    """A message's timestamp lies outside the receiver's accepted window."""

    reason = "stale"


class ReplayedMessage(ProtocolError):
    """A message whose (sender, nonce) was already accepted."""

    reason = "replayed"


class IdentityError(ConvergeError):
    """A key, key file or did that cannot be used."""


class PolicyViolation(ConvergeError, PermissionError):
    """An action refused by policy (admission, governance, safety limits, allowlists, budgets)."""


class BallotRefused(PolicyViolation):
    """Someone acted on a ballot in a way its rules do not allow.

    Attributes:
        ballot_id: the ballot.
        agent_id: who acted.
        act: ``"vote"`` or ``"close"``.
        reason: ``"not_eligible"`` (not among the ballot's voters), ``"already_voted"`` (a
            second vote under ``revote="refuse"``) or ``"not_opener"`` (closing someone else's
            ballot).
    """

    def __init__(self, message: str, *, ballot_id: str, agent_id: str, act: str, reason: str):
        super().__init__(message)
        self.ballot_id = ballot_id
        self.agent_id = agent_id
        self.act = act
        self.reason = reason


class ContextAccessDenied(PolicyViolation):
    """An agent used a scope or key its context does not grant.

    Attributes:
        scope: the scope (``session``, ``global``…).
        key: the key (``""`` for the scope as a whole).
        access: ``read`` or ``write``.
        agent: the agent the context belongs to (``""`` if not named).
    """

    def __init__(
        self, scope: str, key: str, access: Literal["read", "write"], agent: str = ""
    ) -> None:
        who = f"agent {agent}" if agent else "this context"
        what = f"key {key!r} of the {scope} scope" if key else f"the {scope} scope"
        super().__init__(f"{who} may not {access} {what}: not granted")
        self.scope = scope
        self.key = key
        self.access = access
        self.agent = agent


class DecisionsRefused(PolicyViolation):
    """Decisions refused by safety policy.

    Attributes:
        violations: what was refused and why, in the order of the decisions
            (each a ``converge.policy.SafetyViolation``).
    """

    def __init__(self, violations: Sequence[Any]) -> None:
        n = len(violations)
        more = f"; and {n - 10} more" if n > 10 else ""
        shown = "; ".join(str(v) for v in violations[:10])
        super().__init__(f"{n} safety violation{'s' * (n != 1)}: {shown}{more}")
        self.violations: tuple[Any, ...] = tuple(violations)


class ToolCallRefused(DecisionsRefused):
    """A tool call refused by safety policy before the tool ran.

    Attributes:
        tool: the tool's name.
        agent_id: the agent that asked.
        rule: the broken rule (``"tool_denied"``, ``"max_tool_calls"`` …, see ``SAFETY_RULES``).
        violations: the one violation, as ``validate_safety`` reports it.
    """

    def __init__(self, tool: str, agent_id: str, violations: Sequence[Any]) -> None:
        super().__init__(violations)
        self.args = (f"tool call {tool!r} by {agent_id} refused: {violations[0].detail}",)
        self.tool = tool
        self.agent_id = agent_id
        self.rule = violations[0].rule


class DelegationRefused(PolicyViolation):
    """A delegation or revocation that policy does not allow.

    Attributes:
        agent_id: who tried (the delegator, or the revoker).
        act: ``"delegate"`` or ``"revoke"``.
        grant_id: the grant issued or revoked.
        reason: ``"unknown_parent"``, ``"not_parent_delegate"`` (the delegator does not hold the
            parent grant), ``"parent_not_live"`` (revoked, expired, or with a dead or unverifiable
            chain), ``"too_deep"``, ``"not_in_chain"`` (a revoker who is no delegator up the
            chain), and for the subclasses ``"over_scope"`` and ``"cycle"``.
    """

    def __init__(self, agent_id: str, act: str, grant_id: str, reason: str, detail: str) -> None:
        super().__init__(f"{agent_id} may not {act} grant {grant_id}: {detail}")
        self.agent_id = agent_id
        self.act = act
        self.grant_id = grant_id
        self.reason = reason


class DelegationCycle(DelegationRefused):
    """A grant to an agent already in its chain (or to the delegator itself).

    Attributes:
        chain: the dids from the chain's root delegator down to the new delegate, who appears
            in it twice.
    """

    def __init__(self, agent_id: str, grant_id: str, chain: Sequence[str]) -> None:
        self.chain = tuple(chain)
        super().__init__(
            agent_id,
            "delegate",
            grant_id,
            "cycle",
            f"it would close the cycle {' -> '.join(self.chain)}",
        )


class ScopeExceeded(DelegationRefused):
    """A grant for actions its delegator does not hold (a sub-delegation can only narrow).

    Attributes:
        extra: the requested actions the delegator's own scope does not cover, sorted.
    """

    def __init__(self, agent_id: str, grant_id: str, extra: Sequence[str]) -> None:
        self.extra = tuple(extra)
        super().__init__(
            agent_id,
            "delegate",
            grant_id,
            "over_scope",
            f"it does not hold {', '.join(self.extra)}",
        )


class NegotiationRefused(PolicyViolation):
    """A party acted out of turn, or someone who is not a party acted.

    Attributes:
        session_id: the session.
        agent_id: who acted.
        act: ``"propose"``, ``"counter"``, ``"accept"`` or ``"reject"``.
        reason: ``"not_a_party"``, ``"own_proposal"`` (answering or countering one's own
            proposal) or ``"already_accepted"``.
    """

    def __init__(self, session_id: str, agent_id: str, act: str, reason: str, detail: str) -> None:
        super().__init__(f"{agent_id} may not {act} in negotiation {session_id}: {detail}")
        self.session_id = session_id
        self.agent_id = agent_id
        self.act = act
        self.reason = reason


class OutOfScope(PolicyViolation):
    """An agent tried an action that neither its root scope nor a live grant covers.

    Attributes:
        agent_id: the agent.
        action: the action it tried.
    """

    def __init__(self, agent_id: str, action: str) -> None:
        super().__init__(
            f"{agent_id} may not {action}: it is not in its root scope nor in a live grant to it"
        )
        self.agent_id = agent_id
        self.action = action


class StoreError(ConvergeError):
    """A store operation failed; the underlying driver error is chained as ``__cause__``."""


class ConflictError(StoreError):
    """A compare-and-set or put-if-absent precondition did not hold; nothing was written.

    Attributes:
        key: the key whose precondition failed.
        expected_version: the version the caller expected (0 means absent).
        actual_version: the version found (0 means absent).
    """

    def __init__(self, key: str, expected_version: int, actual_version: int) -> None:
        super().__init__(
            f"conflict on key {key!r}: expected version {expected_version}, "
            f"found {actual_version}; nothing in the transaction was written"
        )
        self.key = key
        self.expected_version = expected_version
        self.actual_version = actual_version


class TaskConflict(ConflictError):
    """A task operation found the task in another state (or attempt) than the caller expected.

    Attributes:
        task_id: the task.
        expected_state: the state the caller read (None: the task had to be new).
        actual_state: the state found (None: no such task).
        expected_attempts: the attempt number the caller read.
        actual_attempts: the attempt number found.
    """

    def __init__(
        self,
        task_id: str,
        expected_state: str | None,
        actual_state: str | None,
        expected_attempts: int = 0,
        actual_attempts: int = 0,
    ) -> None:
        StoreError.__init__(
            self,
            f"task {task_id} is {_describe(actual_state, actual_attempts)}, not "
            f"{_describe(expected_state, expected_attempts, new=True)}; nothing was written",
        )
        self.key = task_id
        self.task_id = task_id
        self.expected_state = expected_state
        self.actual_state = actual_state
        self.expected_attempts = expected_attempts
        self.actual_attempts = actual_attempts
        self.expected_version = expected_attempts
        self.actual_version = actual_attempts


def _describe(state: str | None, attempts: int, *, new: bool = False) -> str:
    if state is None:
        return "new" if new else "missing"
    return f"{state} (attempt {attempts})"


class SchemaVersionError(StoreError):
    """The store was written by a newer converge whose schema this version does not know.

    Attributes:
        found: schema version found in the store.
        supported: the newest schema version this converge knows.
    """

    def __init__(self, location: str, found: int, supported: int) -> None:
        super().__init__(
            f"{location} has schema version {found}, but this converge supports up to {supported}; "
            "upgrade converge to open it (the store was not modified)"
        )
        self.location = location
        self.found = found
        self.supported = supported


class NotAStore(StoreError):
    """A file opened as an existing store is not one: not a SQLite database, or one without
    converge's schema. Nothing was written to it.

    Attributes:
        location: the file.
        reason: what it is instead, in words.
    """

    def __init__(self, location: str, reason: str) -> None:
        super().__init__(f"{location} is not a converge store: {reason} (it was not modified)")
        self.location = location
        self.reason = reason


class StoreReadOnly(StoreError):
    """A write through a store opened read-only; nothing was written."""


class StoreClosed(StoreError):
    """An operation was attempted on a store after ``aclose()``."""


class TransportError(ConvergeError, ConnectionError):
    """A transport could not deliver or receive."""


class MessageTooLarge(TransportError):
    """A message whose encoding is over the transport's size limit (a NATS server's
    ``max_payload``, a frame limit); it was not sent, nor cut.

    Attributes:
        size: the encoded message's size in bytes.
        limit: the largest size the transport carries.
    """

    def __init__(self, size: int, limit: int, where: str) -> None:
        super().__init__(
            f"a message of {size} bytes is over the {limit}-byte limit of {where}; not sent"
        )
        self.size = size
        self.limit = limit


class TransportClosed(TransportError):
    """A send or a registration on a transport after its ``aclose()`` (or a send it cut short)."""


class FrameError(TransportError):
    """Bytes from a peer that are not a frame: truncated, or not a frame's encoding. The
    connection they came on is dropped and nothing of the frame is delivered."""

    def __init__(self, message: str, *, peer: str | None = None) -> None:
        super().__init__(message, retryable=False)
        self.peer = peer


class FrameTooLarge(FrameError):
    """A frame over the size limit: announced by a peer, refused before it is read (the
    connection is then dropped), or one of the transport's own frames refused before it is
    sent. A message of the caller's over the limit is ``MessageTooLarge``, on every transport.

    Attributes:
        size: the frame's size in bytes (for a received one, as its header announced it; None
            when the wire refused it before anything said its size, as WebSocket's limit does).
        limit: the limit it is over.
    """

    def __init__(self, size: int | None, limit: int, *, peer: str | None = None) -> None:
        where = f" from {peer}" if peer else ""
        what = "a frame" if size is None else f"a frame of {size} bytes"
        super().__init__(f"{what}{where} is over the {limit}-byte limit", peer=peer)
        self.size = size
        self.limit = limit


class MissingExtra(ConvergeError, ImportError):
    """An optional feature whose packages are not installed.

    Attributes:
        extra: the converge extra that installs them (``pip install "converge-agents[embed]"``).
        package: the import that failed.
    """

    def __init__(self, package: str, extra: str, feature: str) -> None:
        super().__init__(
            f"{feature} needs the {package!r} package, which is not installed; install the "
            f'converge extra {extra!r}: pip install "converge-agents[{extra}]"'
        )
        self.package = package
        self.extra = extra


class LLMError(ConvergeError):
    """A provider call failed: the endpoint refused, timed out, or answered with something
    unusable. ``retryable`` says whether trying again may help (rate limit, timeout, 5xx).
    A URL in the message is shown with its credentials masked (``http://***@host/v1``).

    Attributes:
        provider: the provider's name (``openai``, ``anthropic``, ``compatible``…).
        status: the HTTP status, if there was one.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(f"{provider}: {mask_urls(message)}", retryable=retryable)
        self.provider = provider
        self.status = status


class MissingAPIKey(LLMError):
    """No API key: neither given nor set in the environment variable the provider reads.

    Attributes:
        variable: the environment variable that should hold the key.
    """

    def __init__(self, provider: str, variable: str) -> None:
        super().__init__(
            f"no API key: set the environment variable {variable} (or pass api_key=...)",
            provider=provider,
        )
        self.variable = variable


class ResponseSchemaError(LLMError):
    """The answer did not follow the ``response_schema``, also after one retry that told the
    model what was wrong.

    Attributes:
        content: the last answer's text.
        reason: why it was refused (not JSON, or the first schema violation).
    """

    def __init__(self, provider: str, content: str, reason: str) -> None:
        super().__init__(
            f"the answer does not follow the response schema: {reason}", provider=provider
        )
        self.content = content
        self.reason = reason


class ToolRoundsExceeded(LLMError):
    """The model still asked for tools after ``max_tool_rounds`` rounds of tool calls.

    Attributes:
        rounds: the rounds allowed.
    """

    def __init__(self, provider: str, rounds: int) -> None:
        super().__init__(
            f"the model still calls tools after {rounds} rounds of tool calls", provider=provider
        )
        self.rounds = rounds


class ToolError(ConvergeError):
    """A tool ran and failed. The exception it raised is chained as ``__cause__`` when it ran in
    this process; from a sandbox only its type name, message and traceback text come back.

    Attributes:
        tool: the tool's name.
        agent_id: the agent that called it, if known.
        error_type: the name of the exception class the tool raised (``"KeyError"``), or a
            short reason (``"crashed"``, ``"bad_result"``) when it raised nothing.
        detail: the exception's message.
        remote_traceback: the traceback text from a sandboxed tool, for debugging (never shown
            in the message).
    """

    def __init__(
        self,
        tool: str,
        detail: str,
        *,
        error_type: str = "",
        agent_id: str | None = None,
        remote_traceback: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        kind = f"{error_type}: " if error_type and detail else error_type or ""
        super().__init__(f"tool {tool!r} failed: {kind}{detail}", retryable=retryable)
        self.tool = tool
        self.agent_id = agent_id
        self.error_type = error_type
        self.detail = detail
        self.remote_traceback = remote_traceback


class ToolTimeout(ToolError, TimeoutError):
    """A tool ran past its time limit; a sandboxed one was killed, an in-process one abandoned.

    Attributes:
        timeout_s: the limit, in seconds.
        killed: whether a child process was killed.
    """

    retryable = True

    def __init__(
        self, tool: str, timeout_s: float, *, killed: bool = False, agent_id: str | None = None
    ) -> None:
        how = "killed" if killed else "abandoned"
        super().__init__(
            tool,
            f"no result within {timeout_s:g} s ({how})",
            error_type="timeout",
            agent_id=agent_id,
        )
        self.timeout_s = timeout_s
        self.killed = killed


class ToolMemoryExceeded(ToolError, MemoryError):
    """A sandboxed tool tried to use more memory than its limit allows.

    Attributes:
        limit_bytes: the limit (the child's address space), in bytes.
    """

    def __init__(self, tool: str, limit_bytes: int, *, agent_id: str | None = None) -> None:
        super().__init__(
            tool,
            f"went past its memory limit of {limit_bytes / 2**20:g} MiB",
            error_type="memory",
            agent_id=agent_id,
        )
        self.limit_bytes = limit_bytes


class ContractFailed(ConvergeError):
    """A contract-net request ended without an accepted output: too few valid offers, the
    winner failed its job, or the requester disputed its output.

    Attributes:
        auction_id: the round.
        stage: where the round ended: ``failed`` (no award), ``settled`` (the winner's receipt
            of a failed job) or ``disputed``.
        reason: why: ``no_offers``, ``no_valid_offers``, ``too_few_offers``, the winner's
            error, or the dispute.
        round: the ``ContractRound`` as it ended.
    """

    def __init__(self, auction_id: str, stage: str, reason: str, round_: Any) -> None:
        super().__init__(f"contract {auction_id} {stage}: {reason}")
        self.auction_id = auction_id
        self.stage = stage
        self.reason = reason
        self.round = round_


class ReportsRefused(ConvergeError):
    """Some reports of one ``TaskManager.report_many`` call were refused; the others were
    committed (they are not lost, and need not be sent again).

    Attributes:
        completed: the tasks the call completed, as stored, in the order of the reports
            (``Task`` each).
        refused: why each refused report was refused, by task id: the error a lone
            ``report`` would have raised (``LeaseLost``, ``InvalidTransition``, ``StateError``,
            or ``ValidationError`` for a task not on the board).
    """

    def __init__(self, completed: Sequence[Any], refused: dict[str, ConvergeError]) -> None:
        shown = "; ".join(f"{task_id}: {error}" for task_id, error in list(refused.items())[:5])
        more = f"; and {len(refused) - 5} more" if len(refused) > 5 else ""
        super().__init__(
            f"{len(refused)} of {len(refused) + len(completed)} reports refused "
            f"({len(completed)} completed): {shown}{more}"
        )
        self.completed = tuple(completed)
        self.refused = dict(refused)


class ResolutionFailed(ConvergeError):
    """No answer could be picked: a tie, no majority, a conflict, or no successful result.

    Attributes:
        strategy: the ``ConflictStrategy`` that failed.
        reason: why, in words.
        answers: the distinct successful answers and the agents behind each (``AnswerTally`` each).
        failed: the dids whose attempts failed.
    """

    def __init__(
        self,
        strategy: str,
        reason: str,
        answers: tuple[Any, ...] = (),
        failed: tuple[str, ...] = (),
    ) -> None:
        named = "".join(f"; {a.label} from {', '.join(a.agents)}" for a in answers)
        super().__init__(f"{strategy}: {reason}{named}")
        self.strategy, self.reason, self.answers, self.failed = strategy, reason, answers, failed


class TooManyFailedDecisions(ConvergeError):
    """A runtime stopped because its agent's decisions failed too many times in a row.

    Raised by ``AgentRuntime.run()`` and ``wait()`` (and so on leaving ``async with``), chained
    from the last failure; every failure is a ``decision.failed`` event before it.

    Attributes:
        agent_id: the agent's did.
        failures: how many decisions failed in a row (the runtime's limit).
        last_error: the last failure, as ``"Type: message"``.
    """

    def __init__(self, agent_id: str, failures: int, last_error: str) -> None:
        super().__init__(
            f"agent {agent_id}: {failures} decisions failed in a row (the last: {last_error}); "
            "its runtime stopped"
        )
        self.agent_id = agent_id
        self.failures = failures
        self.last_error = last_error


class OrchestrationError(ConvergeError):
    """A graph run failed."""


class BoardTaskFailed(OrchestrationError):
    """The task a board node posted ended FAILED or CANCELLED.

    Attributes:
        node_id: the node.
        task_id: the task on the board.
        state: ``"failed"`` or ``"cancelled"``.
        reason: the task's error (why it failed or was withdrawn), or None.
    """

    def __init__(self, node_id: str, task_id: str, state: str, reason: str | None) -> None:
        why = f": {reason}" if reason else ""
        super().__init__(f"board task {task_id} of node {node_id!r} {state}{why}")
        self.node_id = node_id
        self.task_id = task_id
        self.state = state
        self.reason = reason


class ExpressionError(OrchestrationError):
    """A condition could not be evaluated against the values it was given.

    Attributes:
        expression: the condition's text.
        path: the reference that failed, as written (``a.output.items[0]``), or None.
        reason: what went wrong, naming the missing part or the offending types.
    """

    def __init__(self, expression: str, reason: str, *, path: str | None = None) -> None:
        shown = expression if len(expression) <= 120 else expression[:117] + "..."
        super().__init__(f"cannot evaluate {shown!r}: {reason}")
        self.expression = expression
        self.path = path
        self.reason = reason


class RunFailed(OrchestrationError):
    """``execute`` (or ``resume``) ended with a FAILED or CANCELLED run; ``result`` says how.

    Attributes:
        result: the run's ``converge.orchestration.RunResult``.
    """

    def __init__(self, result: Any) -> None:
        super().__init__(f"run {result.run_id} of {result.graph!r} {result.status}: {result.error}")
        self.result = result


class TenderFailed(OrchestrationError):
    """A tender node ended without an output: nobody bid, or every winner failed, and there
    was no fallback.

    Attributes:
        node: the node.
        auction_id: its last round.
        reason: ``no_offers``, ``no_valid_offers``, ``too_few_offers`` or ``winner_failed``.
    """

    def __init__(self, node: str, auction_id: str, reason: str, detail: str) -> None:
        super().__init__(f"tender node {node!r} ({auction_id}): {reason}: {detail}")
        self.node = node
        self.auction_id = auction_id
        self.reason = reason


class UnknownRoute(OrchestrationError, LookupError):
    """A router (or a supervisor) chose a route (or a worker) the graph does not have.

    Attributes:
        chooser: the id of the node that chose.
        choice: what it chose.
        choices: the names it may choose from.
    """

    def __init__(self, chooser: str, choice: Any, choices: Iterable[str]) -> None:
        self.chooser = chooser
        self.choice = choice
        self.choices = tuple(choices)
        super().__init__(
            f"{chooser!r} chose {choice!r}, which is not one of its choices: "
            f"{', '.join(self.choices)}"
        )


class NoMatchingRoute(UnknownRoute):
    """A rule-mode router found no route for its input and has no default.

    Attributes:
        chooser: the router's name.
        choice: the text it was routing.
        choices: the routes it may choose from.
    """

    def __init__(self, chooser: str, text: str, choices: Iterable[str]) -> None:
        self.chooser = chooser
        self.choice = text
        self.choices = tuple(choices)
        shown = text if len(text) <= 80 else text[:77] + "..."
        OrchestrationError.__init__(
            self,
            f"router {chooser!r} found no route for {shown!r} and has no default; "
            f"its choices: {', '.join(self.choices)}",
        )


class UsageExceeded(OrchestrationError):
    """An agent reported more tokens or tool calls over a run than ``execution`` allows one
    agent.

    Attributes:
        node: the node whose report went past the limit.
        what: ``tokens`` or ``tool calls``.
        used: what the agent has used in the run, that report included.
        limit: the limit per agent.
        agent: the agent (its name in the graph), or None if not known.
    """

    def __init__(
        self, node: str, what: str, used: int, limit: int, *, agent: str | None = None
    ) -> None:
        who = f"node {node!r}" if agent is None else f"agent {agent!r} (at node {node!r})"
        super().__init__(f"{who} used {used} {what} in this run; the limit per agent is {limit}")
        self.node = node
        self.what = what
        self.used = used
        self.limit = limit
        self.agent = agent


_BALLOT_CLOSE_CAUSES = {
    "settled": "a vote settled it",
    "deadline": "its deadline passed",
    "opener": "its opener closed it",
}


# -- how messages show values ------------------------------------------------------------------
#
# A URL may carry a credential: ``http://user:key@gateway/v1`` (userinfo) or ``…/v1?api_key=…``
# (a query parameter). Wherever converge shows a URL — a provider's ``repr``, an ``LLMError``
# message (and so a node's error, an ``llm`` call event, a log line) — the credential is
# replaced by ``***``: the whole userinfo, since a token is often the user name alone
# (``https://TOKEN@host``), and the value of every query or fragment parameter whose name says
# it is a secret (``key``, ``token``, ``secret``, ``password``, ``pwd``, ``auth``, ``sig``,
# ``credential``, ``session``, in any case and as part of a longer name: ``api_key``,
# ``X-Amz-Signature``). The URL itself is used as given.

_MASK = "***"
# A URL inside free text: a scheme, "://", its authority (credentials may hold any character
# but a delimiter or a space), then the rest up to a space or a quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#\s]*[^\s\"'<>`]*")
_SECRET_NAME = re.compile(r"key|token|secret|passw|pwd|auth|sig|credential|session", re.IGNORECASE)


def shown_url(url: str) -> str:
    """``url`` with its credentials masked (see above): ``http://u:k@h/v1?api_key=k&v=1``
    is shown as ``http://***@h/v1?api_key=***&v=1``. Never raises, whatever ``url`` holds."""
    start = url.find("://")
    start = 0 if start < 0 else start + 3
    end = _first(url, "/?#", start)
    authority = url[start:end]
    if "@" in authority:
        authority = _MASK + authority[authority.rindex("@") :]
    head, rest = url[:start] + authority, url[end:]
    path, _, fragment = rest.partition("#")
    path, mark, query = path.partition("?")
    shown = head + path + mark + _params(query)
    return shown + "#" + _params(fragment) if "#" in rest else shown


def mask_urls(text: str) -> str:
    """``text`` (an error message, say) with every URL in it shown by ``shown_url``."""
    return _URL_IN_TEXT.sub(lambda m: shown_url(m.group()), text)


def _first(text: str, chars: str, start: int) -> int:
    """The index of the first of ``chars`` in ``text`` from ``start``, else its length."""
    found = [i for i in (text.find(c, start) for c in chars) if i >= 0]
    return min(found, default=len(text))


def _params(query: str) -> str:
    """``name=value`` pairs (split on ``&`` and ``;``) with secret-named values masked."""
    if not query:
        return query
    return re.sub(
        r"([^&;=]*)=([^&;]*)",
        lambda m: f"{m.group(1)}={_MASK}" if _SECRET_NAME.search(unquote(m.group(1))) else m[0],
        query,
    )


def shown_time(at: float) -> str:
    """``at`` (seconds since the epoch) as local time, ``2025-01-31 14:05:09``; its ``repr``
    when it is no time the platform can show."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
    except (OverflowError, OSError, ValueError):
        return repr(at)


def shown_age(seconds: float) -> str:
    """How long ago, ``seconds`` ago: ``just now``, ``12 s ago``, ``4 min ago``, ``2.5 h ago``."""
    if seconds < 0:
        return "just now"
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"
