"""The old path of ``kind: llm``.

It is declared in ``converge.orchestration.kinds.llm``.
"""

from __future__ import annotations

__all__: list[str] = []
