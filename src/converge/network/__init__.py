"""Networks agents talk over. ``LocalNetwork`` delivers in process; other transports follow."""

from __future__ import annotations

from converge.network.local import Inbox, LocalNetwork

__all__ = ["Inbox", "LocalNetwork"]
