"""The old path of ``ConsensusGate`` (``kind: consensus``).

It lives in ``converge.orchestration.kinds.consensus``.
"""

from __future__ import annotations

from converge.orchestration.kinds.consensus import ConsensusGate

__all__ = ["ConsensusGate"]
