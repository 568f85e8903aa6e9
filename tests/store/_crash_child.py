"""A child process for the SIGKILL test: appends to a SQLiteStore until it is killed.

Usage: ``python _crash_child.py DB_PATH FIRST_N``. It appends event number ``FIRST_N``, then
``FIRST_N + 1`` and so on, in rounds that alternate a batch ``append``, concurrent single appends,
and a transaction that also writes the key ``crash/<n>``. After each append is acknowledged (its
``await`` returned) it prints ``<seq> <n> <mode>`` on its own line and flushes, so every line the
parent reads is a promise the store made. It stops by itself only after ``MAX_EVENTS`` events or
``MAX_SECONDS``, which the parent treats as a failure (it should have been killed long before).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from converge.protocol.event import Event
from converge.store import SQLiteStore

__all__ = ["KIND", "payload", "payload_bytes"]

KIND = "crash.appended"
MAX_EVENTS = 200_000
MAX_SECONDS = 60.0
CONCURRENT_SINGLES = 8


def payload(n: int) -> dict[str, Any]:
    """The data of event number ``n``: varied types and sizes, all derived from ``n``."""
    return {
        "n": n,
        "text": f"event {n} ✓",
        "blob": bytes([n % 251]) * (n % 97),
        "nested": {"list": [n, n / 7, None, {"even": n % 2 == 0}]},
    }


def payload_bytes(n: int) -> bytes:
    """The value the transaction round writes under ``crash/<n>``."""
    return f"value-{n}-".encode() * (1 + n % 5)


def _event(n: int) -> Event:
    return Event(kind=KIND, trace_id=f"trace-{n % 3}", subject=str(n), data=payload(n))


def _ack(lines: list[tuple[int, int, str]]) -> None:
    sys.stdout.write("".join(f"{seq} {n} {mode}\n" for seq, n, mode in lines))
    sys.stdout.flush()


async def _single(store: SQLiteStore, n: int) -> None:
    (seq,) = await store.append([_event(n)])
    _ack([(seq, n, "single")])


async def main(path: str, first_n: int) -> None:
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + MAX_SECONDS
    n = first_n
    round_no = 0
    async with await SQLiteStore.open(path) as store:
        while n < first_n + MAX_EVENTS and loop.time() < stop_at:
            mode = round_no % 3
            if mode == 0:
                numbers = range(n, n + 1 + round_no % 7)
                seqs = await store.append([_event(i) for i in numbers])
                _ack([(seq, i, "batch") for seq, i in zip(seqs, numbers, strict=True)])
                n = numbers.stop
            elif mode == 1:
                async with asyncio.TaskGroup() as tg:
                    for i in range(n, n + CONCURRENT_SINGLES):
                        tg.create_task(_single(store, i))
                n += CONCURRENT_SINGLES
            else:
                async with store.transaction() as tx:
                    tx.put(f"crash/{n}", payload_bytes(n))
                    tx.append(_event(n))
                _ack([(tx.seqs[0], n, "tx")])
                n += 1
            round_no += 1


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
