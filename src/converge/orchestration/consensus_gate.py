"""The old path of ``ConsensusGate`` (``kind: consensus``), which lives in
``converge.orchestration.kinds.consensus``.
"""

from __future__ import annotations

from converge.orchestration.kinds.consensus import ConsensusGate

__all__ = ["ConsensusGate"]
