"""Networks agents talk over: ``Transport``, ``Inbox``, ``LocalNetwork``.

The ``Transport`` protocol, the ``Inbox`` every transport delivers into, ``LocalNetwork``, the
in-process transport, and what socket transports route with: ``Endpoint``, ``Resolver`` and
``StaticResolver``. The TCP and WebSocket transports live in ``converge.network.tcp`` and
``converge.network.websocket`` (the latter needs the ``ws`` extra).
"""

from __future__ import annotations

from converge.core.endpoint import Endpoint
from converge.network.inbox import Inbox
from converge.network.local import LocalNetwork
from converge.network.resolver import Resolver, StaticResolver
from converge.network.transport import Transport

__all__ = ["Endpoint", "Inbox", "LocalNetwork", "Resolver", "StaticResolver", "Transport"]
