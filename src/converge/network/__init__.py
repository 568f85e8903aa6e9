"""Networks agents talk over: ``Transport``, ``Inbox``, ``LocalNetwork``.

The ``Transport`` protocol, the ``Inbox`` every transport delivers
into, and ``LocalNetwork``, the in-process transport.
"""

from __future__ import annotations

from converge.network.inbox import Inbox
from converge.network.local import LocalNetwork
from converge.network.transport import Transport

__all__ = ["Inbox", "LocalNetwork", "Transport"]
