"""The old path of ``BoardTask`` (``kind: board``).

It lives in ``converge.orchestration.kinds.board``.
"""

from __future__ import annotations

from converge.orchestration.kinds.board import BoardTask, BoardTaskFailed

__all__ = ["BoardTask", "BoardTaskFailed"]
