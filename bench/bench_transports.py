"""Signed, verified messages/s one way over TCP and WebSocket: converge against raw loops.

Each contender moves ``--messages`` messages from 127.0.0.2 to 127.0.0.3: the sender signs each
one, the receiver verifies each one. Converge's side is ``tcp_network`` / ``websocket_network``
(a send returns once the receiver acknowledged it; ``--window`` sends in flight, the receiver
drains its inbox and verifies). The raw side is asyncio streams (``websockets`` for WebSocket)
writing the same frames (``converge.network.framing``) with no acknowledgement, the receiver
decoding and verifying them. Contenders alternate, round after round, and each one's best round
counts, so machine noise hits both alike. Target (issue 18): converge reaches >= 80% of raw.

Run: ``.venv/bin/python bench/bench_transports.py``
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

from _common import emit, rate
from converge.core import Identity, Message, new_id
from converge.network import Inbox, StaticResolver
from converge.network.framing import Deliver, encode_frame, read_frame, unpack_frame
from converge.network.socket_network import SocketNetwork
from converge.network.tcp import tcp_network
from converge.network.websocket import websocket_network

BENCH = "transports"
TARGET_RATIO = 0.80
SENDER, RECEIVER = "127.0.0.2", "127.0.0.3"
ALICE, BOB = Identity.generate(), Identity.generate()


def message(i: int) -> Message:
    """An offer-sized message from ALICE to BOB, signed."""
    return Message(
        kind="offer",
        payload={"intent_id": new_id(), "cost": 0.42, "currency": "USD", "n": i},
        recipient=BOB.did,
        trace_id=new_id(),
    ).sign(ALICE)


async def converge_round(
    opener: Callable[..., Awaitable[SocketNetwork]], n: int, window: int
) -> float:
    resolver = StaticResolver()
    receiver = await opener(resolver, host=RECEIVER)
    sender = await opener(resolver, host=SENDER)
    inbox = Inbox(maxsize=1000)
    receiver.register(BOB.did, inbox)
    resolver.add(BOB.did, receiver.endpoint)
    await sender.send(message(-1))  # connect first, as the raw side does
    inbox.drain(1)

    async def read() -> None:
        seen = 0
        while seen < n:
            await inbox.wait()
            for m in inbox.drain(256):
                m.verify()
                seen += 1

    async def send(lane: int) -> None:
        for i in range(lane, n, window):
            await sender.send(message(i))

    start = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        group.create_task(read())
        for lane in range(window):
            group.create_task(send(lane))
    elapsed = time.perf_counter() - start
    await sender.aclose()
    await receiver.aclose()
    return elapsed


async def raw_tcp_round(n: int) -> float:
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen = 0
        while seen < n:
            frame = await read_frame(reader)
            assert isinstance(frame, Deliver)
            frame.message.verify()
            seen += 1
        done.set()
        writer.close()

    server = await asyncio.start_server(handle, RECEIVER, 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection(RECEIVER, port, local_addr=(SENDER, 0))
    start = time.perf_counter()
    for i in range(n):
        writer.write(encode_frame(Deliver(i, message(i))))
        await writer.drain()
    await done.wait()
    elapsed = time.perf_counter() - start
    writer.close()
    server.close()
    await server.wait_closed()
    return elapsed


async def raw_ws_round(n: int) -> float:
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import ServerConnection, serve

    done = asyncio.Event()

    async def handle(connection: ServerConnection) -> None:
        seen = 0
        while seen < n:
            data = await connection.recv()
            assert isinstance(data, bytes)
            frame = unpack_frame(data)
            assert isinstance(frame, Deliver)
            frame.message.verify()
            seen += 1
        done.set()

    server = await serve(handle, RECEIVER, 0, compression=None)
    port = next(iter(server.sockets)).getsockname()[1]
    client = await connect(
        f"ws://{RECEIVER}:{port}/", compression=None, proxy=None, local_addr=(SENDER, 0)
    )
    start = time.perf_counter()
    for i in range(n):
        await client.send(encode_frame(Deliver(i, message(i))))
    await done.wait()
    elapsed = time.perf_counter() - start
    await client.close()
    server.close()
    await server.wait_closed()
    return elapsed


async def run(n: int, rounds: int, window: int) -> None:
    contenders: dict[str, dict[str, Callable[[], Awaitable[float]]]] = {
        "tcp": {
            "converge": lambda: converge_round(tcp_network, n, window),
            "converge_sequential": lambda: converge_round(tcp_network, n, 1),
            "raw": lambda: raw_tcp_round(n),
        },
        "ws": {
            "converge": lambda: converge_round(websocket_network, n, window),
            "converge_sequential": lambda: converge_round(websocket_network, n, 1),
            "raw": lambda: raw_ws_round(n),
        },
    }
    for wire, fns in contenders.items():
        best = dict.fromkeys(fns, float("inf"))
        for _ in range(rounds):
            for name, fn in fns.items():
                best[name] = min(best[name], await fn())
        raw = rate(n, best["raw"])
        for name in ("converge", "converge_sequential"):
            value = rate(n, best[name])
            ratio = round(value / raw, 3)
            emit(
                bench=BENCH,
                case=f"{wire}_one_way_{name.removeprefix('converge').strip('_') or 'windowed'}",
                value=value,
                unit="msg/s",
                raw=raw,
                ratio=ratio,
                window=window if name == "converge" else 1,
                messages=n,
                target=TARGET_RATIO if name == "converge" else None,
                ok=ratio >= TARGET_RATIO if name == "converge" else None,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2_000, help="messages per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each contender")
    parser.add_argument("--window", type=int, default=32, help="converge sends in flight")
    args = parser.parse_args()
    asyncio.run(run(args.messages, args.rounds, args.window))


if __name__ == "__main__":
    main()
