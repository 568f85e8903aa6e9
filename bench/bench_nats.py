"""``NatsNetwork`` against a raw ``nats-py`` loop doing the same signing and verifying.

Two cases, converge and raw run in alternating rounds on the same server:

- ``one_way``: signed messages/s from one agent to another in a second connection, the
  receiver decoding and verifying each. converge: ``WINDOW`` senders, each awaiting its
  ``send`` before the next (each is acknowledged once in the inbox). Raw: ``publish`` of the
  same signed bytes, the subscriber decoding and verifying, then one ``flush``. Target
  (issue 18): >= 80% of raw.
- ``request_reply``: one signed request, a signed reply, verified at both ends; p50 and p99
  of the round trip. converge: a direct ``send``, the responder's reply ``send``, read from the
  inbox. Raw: ``request`` and a responder callback. Target: p50 <= 1.25x raw.

The server is ``CONVERGE_TEST_NATS_URL`` (default ``nats://127.0.0.1:4222``); without one the
script prints one ``skipped`` line and exits 0.

Run: ``.venv/bin/python bench/bench_nats.py``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid

from _common import emit, percentile, rate
from converge.core import Identity, Message
from converge.network import Inbox
from converge.protocol import from_msgpack, to_msgpack

BENCH = "nats"
WINDOW = 64
ALICE, BOB = Identity.generate(), Identity.generate()


def _message(i: int) -> Message:
    return Message(kind="note", payload={"i": i, "text": "x" * 64}, recipient=BOB.did)


async def converge_one_way(url: str, count: int) -> float:
    from converge.network.nats import NatsNetwork

    prefix = f"bench.{uuid.uuid4().hex}"
    async with (
        await NatsNetwork.connect(url, prefix=prefix) as a,
        await NatsNetwork.connect(url, prefix=prefix) as b,
    ):
        inbox = Inbox(maxsize=WINDOW * 2)
        b.register(BOB.did, inbox)
        await _until_reachable(a, BOB)
        inbox.drain(10)

        async def read() -> None:
            seen = 0
            while seen < count:
                await inbox.wait()
                for message in inbox.drain(256):
                    message.verify()
                    seen += 1

        async def sender(first: int) -> None:
            for i in range(first, count, WINDOW):
                await a.send(_message(i).sign(ALICE))

        start = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            group.create_task(read())
            for first in range(WINDOW):
                group.create_task(sender(first))
        return time.perf_counter() - start


async def raw_one_way(url: str, count: int) -> float:
    import nats

    sender, receiver = await nats.connect(url), await nats.connect(url)
    try:
        subject = f"bench.{uuid.uuid4().hex}"
        done = asyncio.Event()
        seen = 0

        async def on_message(msg: object) -> None:
            nonlocal seen
            from_msgpack(msg.data, Message).verify()  # type: ignore[attr-defined]
            seen += 1
            if seen == count:
                done.set()

        await receiver.subscribe(subject, cb=on_message)
        await receiver.flush()
        start = time.perf_counter()
        for i in range(count):
            await sender.publish(subject, to_msgpack(_message(i).sign(ALICE)))
        await sender.flush()
        await done.wait()
        return time.perf_counter() - start
    finally:
        await sender.close()
        await receiver.close()


async def converge_round_trips(url: str, count: int) -> list[float]:
    from converge.network.nats import NatsNetwork

    prefix = f"bench.{uuid.uuid4().hex}"
    async with (
        await NatsNetwork.connect(url, prefix=prefix) as a,
        await NatsNetwork.connect(url, prefix=prefix) as b,
    ):
        mine, theirs = Inbox(), Inbox()
        a.register(ALICE.did, mine)
        b.register(BOB.did, theirs)
        await _until_reachable(a, BOB)
        theirs.drain(10)

        async def respond() -> None:
            while True:
                await theirs.wait()
                for request in theirs.drain(64):
                    request.verify()
                    await b.send(request.reply("pong", request.payload).sign(BOB))

        times: list[float] = []
        async with asyncio.TaskGroup() as group:
            responder = group.create_task(respond())
            for i in range(count):
                start = time.perf_counter()
                await a.send(_message(i).sign(ALICE))
                await mine.wait()
                for reply in mine.drain(1):
                    reply.verify()
                times.append(time.perf_counter() - start)
            responder.cancel()
        return times


async def raw_round_trips(url: str, count: int) -> list[float]:
    import nats

    client, server = await nats.connect(url), await nats.connect(url)
    try:
        subject = f"bench.{uuid.uuid4().hex}"

        async def respond(msg: object) -> None:
            request = from_msgpack(msg.data, Message)  # type: ignore[attr-defined]
            request.verify()
            reply = to_msgpack(request.reply("pong", request.payload).sign(BOB))
            await msg.respond(reply)  # type: ignore[attr-defined]

        await server.subscribe(subject, cb=respond)
        await server.flush()
        times: list[float] = []
        for i in range(count):
            start = time.perf_counter()
            answer = await client.request(subject, to_msgpack(_message(i).sign(ALICE)), 10)
            from_msgpack(answer.data, Message).verify()
            times.append(time.perf_counter() - start)
        return times
    finally:
        await client.close()
        await server.close()


async def _until_reachable(network: object, who: Identity) -> None:
    from converge.errors import TransportError

    for _ in range(500):
        try:
            await network.send(Message(kind="probe", recipient=who.did).sign(ALICE))  # type: ignore[attr-defined]
            return
        except TransportError:
            await asyncio.sleep(0.01)
    raise RuntimeError("the receiver never became reachable")


async def main(count: int, rounds: int) -> None:
    url = os.environ.get("CONVERGE_TEST_NATS_URL", "nats://127.0.0.1:4222")
    try:
        import nats

        probe = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
        await probe.close()
    except Exception as exc:  # no server: say so, do not fail `make bench`
        emit(bench=BENCH, case="skipped", value=0, unit="", reason=f"no NATS at {url}: {exc!r}")
        return
    best = {"converge": float("inf"), "raw": float("inf")}
    for _ in range(rounds):
        best["converge"] = min(best["converge"], await converge_one_way(url, count))
        best["raw"] = min(best["raw"], await raw_one_way(url, count))
    ours, raw = rate(count, best["converge"]), rate(count, best["raw"])
    emit(bench=BENCH, case="one_way_converge", value=ours, unit="msg/s", window=WINDOW)
    emit(bench=BENCH, case="one_way_raw", value=raw, unit="msg/s")
    emit(bench=BENCH, case="one_way_ratio", value=round(ours / raw, 3), unit="x", target=0.8)
    samples: dict[str, list[float]] = {"converge": [], "raw": []}
    for _ in range(rounds):
        samples["converge"] += await converge_round_trips(url, count // 4)
        samples["raw"] += await raw_round_trips(url, count // 4)
    p = {name: sorted(values) for name, values in samples.items()}
    for name, values in p.items():
        for q in (50, 99):
            ms = round(percentile(values, q) * 1000, 3)
            emit(bench=BENCH, case=f"request_reply_p{q}_{name}", value=ms, unit="ms")
    ratio = percentile(p["converge"], 50) / percentile(p["raw"], 50)
    emit(
        bench=BENCH,
        case="request_reply_p50_ratio",
        value=round(ratio, 3),
        unit="x",
        target=1.25,
        ok=ratio <= 1.25,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.count, arguments.rounds))
