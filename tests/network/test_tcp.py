"""What only the TCP wire does: keepalive on both ends of a connection."""

from __future__ import annotations

import asyncio
import socket

from converge.network import Endpoint
from converge.network.socket_network import Link
from converge.network.tcp import TcpWire


async def test_both_ends_of_a_connection_probe_a_silent_peer() -> None:
    wire = TcpWire()
    accepted: asyncio.Queue[Link] = asyncio.Queue()
    done, finished = asyncio.Event(), asyncio.Event()

    async def serve(link: Link) -> None:
        await accepted.put(link)
        await done.wait()
        await link.aclose()  # a wire leaves closing accepted links to its network
        finished.set()

    listening = await wire.listen("127.0.0.3", 0, serve)
    dialed = await wire.dial(Endpoint("tcp", "127.0.0.3", listening.port), "127.0.0.2")
    try:
        server_side = await asyncio.wait_for(accepted.get(), 10)
        assert server_side.host == "127.0.0.2"  # dialed from the address it was told to
        for link in (dialed, server_side):
            sock = link._writer.get_extra_info("socket")  # type: ignore[attr-defined]
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            if hasattr(socket, "TCP_KEEPIDLE"):
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
    finally:
        done.set()
        await asyncio.wait_for(finished.wait(), 10)
        await dialed.aclose()
        await listening.aclose()
