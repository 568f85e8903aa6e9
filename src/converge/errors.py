"""Every error converge raises, under one root.

The tree is shallow on purpose: catch ``ConvergeError`` for everything, or one branch::

    ConvergeError
    ├── ValidationError        (ValueError)   bad input: names the field, and for files the line
    │   ├── AgentModeError     (NotImplementedError) an agent used in a mode it was not built for
    │   ├── (agents.PlanRejected: a plan that does not fit its agents or constraints)
    │   ├── (agents.StructuredOutputError: a model's structured answer stayed invalid)
    │   └── (orchestration._expr.ExpressionSyntaxError: a `when:` condition that does not parse)
    ├── StateError                            an operation the current state does not allow
    │   ├── InvalidTransition                 a move between two states the table forbids
    │   │   └── (coordination.consensus.BallotClosed: a vote on a ballot already closed)
    │   ├── (orchestration.RunOwned: resume of a run that a live process is executing)
    │   └── (coordination.negotiation.ProposalSuperseded: answered a proposal already replaced)
    ├── ProtocolError                         a malformed or untrustworthy protocol object
    │   ├── SignatureError                    missing, bad or mismatched signature
    │   ├── StaleMessage                      timestamp outside the accepted window
    │   └── ReplayedMessage                   a nonce seen before
    ├── IdentityError                         an unusable key or key file
    ├── PolicyViolation        (PermissionError) refused by admission, safety or budget policy
    │   ├── (converge.policy.safety.DecisionsRefused: carries the safety violations)
    │   ├── (agents.memory.ContextAccessDenied: a scope or key the agent's context does not grant)
    │   │   └── (agents.ToolCallRefused: a tool call refused by policy or a limit)
    │   └── (coordination.negotiation.NegotiationRefused: a party acting out of turn)
    ├── StoreError                            the store failed or refused an operation
    │   ├── ConflictError                     an optimistic-concurrency precondition failed
    │   │   └── TaskConflict                  a task was not in the state the caller read
    │   ├── SchemaVersionError                a store written by a newer converge
    │   ├── NotAStore                         a file that is not a converge store
    │   ├── StoreReadOnly                     a write through a store opened read-only
    │   └── StoreClosed                       an operation on a closed store
    ├── (agents.ToolError: a tool ran and failed; names the tool)
    │   ├── (agents.ToolTimeout (TimeoutError): past its time limit; a sandboxed one killed)
    │   └── (agents.ToolMemoryExceeded (MemoryError): a sandboxed tool past its memory limit)
    ├── (coordination.resolution.ResolutionFailed: no answer could be picked from results)
    ├── (runtime.TooManyFailedDecisions: a runtime stopped after that many failures in a row)
    ├── MissingExtra           (ImportError) an optional extra is not installed
    ├── TransportError         (ConnectionError) a transport could not deliver
    └── OrchestrationError                    a graph run failed
        ├── (orchestration.RunFailed: a run ended FAILED, CANCELLED or INTERRUPTED; has its result)
        ├── (orchestration.ExpressionError: a condition could not be evaluated)
        ├── (orchestration.BoardTaskFailed: a board node's task ended FAILED or CANCELLED)
        ├── (orchestration.UnknownRoute (LookupError): a router chose no known route)
        │   └── (agents.NoMatchingRoute: a rule-mode router matched nothing, no default)
        └── (orchestration.UsageExceeded: an agent went past its token or tool-call limit)

Errors carry their data as read-only attributes (``field``, ``source``, ``line``, ``retryable``…)
so callers never parse messages. Third-party exceptions (``sqlite3``, ``msgspec``, ``cryptography``)
are translated at the boundary and chained with ``from``.
"""

from __future__ import annotations

__all__ = [
    "AgentModeError",
    "ConflictError",
    "ConvergeError",
    "IdentityError",
    "InvalidTransition",
    "MissingExtra",
    "NotAStore",
    "OrchestrationError",
    "PolicyViolation",
    "ProtocolError",
    "ReplayedMessage",
    "SchemaVersionError",
    "SignatureError",
    "StaleMessage",
    "StateError",
    "StoreClosed",
    "StoreError",
    "StoreReadOnly",
    "TaskConflict",
    "TransportError",
    "ValidationError",
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


class OrchestrationError(ConvergeError):
    """A graph run failed."""


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
