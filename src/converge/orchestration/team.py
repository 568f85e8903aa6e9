"""The old path of ``Team`` (``kind: team``).

It lives in ``converge.orchestration.kinds.team``.
"""

from __future__ import annotations

from converge.orchestration.kinds.team import Team

__all__ = ["Team"]
