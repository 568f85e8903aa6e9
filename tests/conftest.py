"""Makes the repository root importable, so test helpers are imported as ``tests.<dir>.<module>``
(``from tests.store.conformance import StoreConformance``) however pytest is started."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.append(_ROOT)
