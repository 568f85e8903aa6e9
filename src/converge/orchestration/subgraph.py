"""The old path of ``Subgraph`` (``kind: subgraph``).

It lives in ``converge.orchestration.kinds.subgraph``.
"""

from __future__ import annotations

from converge.orchestration.kinds.subgraph import Subgraph

__all__ = ["Subgraph"]
