"""The old path of ``Tender`` (``kind: tender``).

It lives in ``converge.orchestration.kinds.tender``.
"""

from __future__ import annotations

from converge.orchestration.kinds.tender import NoBids, Tender, TenderFailed

__all__ = ["NoBids", "Tender", "TenderFailed"]
