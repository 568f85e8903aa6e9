"""The errors a tool call ends in, other than a bad argument.

A bad argument is a ``ValidationError``.

They are defined in ``converge.errors`` with every other error, and importable from here too::

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

from converge.errors import ToolCallRefused, ToolError, ToolMemoryExceeded, ToolTimeout

__all__ = ["ToolCallRefused", "ToolError", "ToolMemoryExceeded", "ToolTimeout"]
