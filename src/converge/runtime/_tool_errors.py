"""The errors a tool call ends in, other than a bad argument (``ValidationError``).

::

    ConvergeError
    ├── PolicyViolation
    │   └── DecisionsRefused
    │       └── ToolCallRefused      not allowed (allow/deny lists) or over a limit
    └── ToolError                    the tool ran and failed: raised, crashed, or bad result
        ├── ToolTimeout (TimeoutError)   ran past its time limit (a sandboxed one is killed)
        └── ToolMemoryExceeded (MemoryError)   a sandboxed tool went past its memory limit

Each names the tool (``tool``) and, where known, the agent that called it (``agent_id``).
"""

from __future__ import annotations

from collections.abc import Sequence

from converge.errors import ConvergeError
from converge.policy.safety import DecisionsRefused, SafetyViolation

__all__ = ["ToolCallRefused", "ToolError", "ToolMemoryExceeded", "ToolTimeout"]


class ToolCallRefused(DecisionsRefused):
    """A tool call refused by safety policy before the tool ran.

    Attributes:
        tool: the tool's name.
        agent_id: the agent that asked.
        rule: the broken rule (``"tool_denied"``, ``"max_tool_calls"`` …, see ``SAFETY_RULES``).
        violations: the one violation, as ``validate_safety`` reports it.
    """

    def __init__(self, tool: str, agent_id: str, violations: Sequence[SafetyViolation]) -> None:
        super().__init__(violations)
        self.args = (f"tool call {tool!r} by {agent_id} refused: {violations[0].detail}",)
        self.tool = tool
        self.agent_id = agent_id
        self.rule = violations[0].rule


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
