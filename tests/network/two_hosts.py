"""Two socket networks on two simulated hosts, seen as one transport by the conformance suite.

``TwoHosts`` sends from a network bound to 127.0.0.2 and registers agents on one bound to
127.0.0.3, so every message of the suite crosses a real connection, and a network advertising
an address it does not listen on (127.0.0.1, say) fails the suite. Registering an agent also
adds it to the shared ``StaticResolver``, as discovery would; unregistering leaves the entry,
as a stale discovery entry would, so the receiving side's refusal is what the sender sees.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from converge.core.message import Message
from converge.core.topic import Topic
from converge.network import Inbox, StaticResolver
from converge.network.socket_network import SocketNetwork

__all__ = ["RECEIVER_HOST", "SENDER_HOST", "TwoHosts"]

SENDER_HOST = "127.0.0.2"
RECEIVER_HOST = "127.0.0.3"

Opener = Callable[..., Awaitable[SocketNetwork]]
"""``tcp_network`` or ``websocket_network``."""


class TwoHosts:
    """Sends through ``sender``; agents register on ``receiver`` (see the module)."""

    def __init__(self, sender: SocketNetwork, receiver: SocketNetwork, directory: StaticResolver):
        self.sender = sender
        self.receiver = receiver
        self.directory = directory

    @classmethod
    async def open(cls, opener: Opener, **options: object) -> TwoHosts:
        directory = StaticResolver()
        sender = await opener(directory, host=SENDER_HOST, **options)
        receiver = await opener(directory, host=RECEIVER_HOST, **options)
        return cls(sender, receiver, directory)

    def register(self, agent_id: str, inbox: Inbox) -> None:
        self.receiver.register(agent_id, inbox)
        self.directory.add(agent_id, self.receiver.endpoint)

    def unregister(self, agent_id: str) -> None:
        self.receiver.unregister(agent_id)

    def is_registered(self, agent_id: str) -> bool:
        return self.receiver.is_registered(agent_id)

    def subscribe(self, agent_id: str, topic: Topic | str) -> None:
        self.receiver.subscribe(agent_id, topic)
        self.directory.add_peer(self.receiver.endpoint)

    def unsubscribe(self, agent_id: str, topic: Topic | str) -> None:
        self.receiver.unsubscribe(agent_id, topic)

    async def send(self, message: Message) -> int:
        return await self.sender.send(message)

    async def aclose(self) -> None:
        # The sending side first: a send waiting for room is released by its own network's
        # close (TransportClosed), not by the receiver's connection dropping.
        await self.sender.aclose()
        await self.receiver.aclose()
