"""Event appends to ``SQLiteStore`` (``synchronous="NORMAL"``, in a temp dir) and ``MemoryStore``.

Cases, each on a fresh store after a short warm-up on that store:

- ``batch_1000``: one caller appends batches of 1,000 events per ``append`` call, awaiting each.
  Target (issue 2, SQLite): >= 150,000 events/s.
- ``concurrent_100``: 100 coroutines each append single events in a loop; the store's group commit
  gathers them. Target (issue 2, SQLite): >= 50,000 events/s.
- ``lone_caller``: one caller appends single events one after another (events/s and latency).
- ``sqlite3_floor_*``: raw ``sqlite3`` inserting the same, already encoded rows into the same
  schema with the same pragmas, 1,000 and 100 rows per transaction (100 is what group commit
  forms from 100 callers): what SQLite alone does on this machine, for reference.

Events are realistic (dotted kind, a trace id from ``new_id()`` out of a sliding window of 20
concurrently active traces, an agent did as actor, a subject id, a small ``data`` dict) and are
all built before the clock starts: no case's figure includes building events (each line says so
with ``includes_event_construction``). Encoding them is the store's work and is included.

Run: ``.venv/bin/python bench/bench_store.py [--dir DIR]``
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from _common import emit, percentile, rate
from converge.core import Identity, new_id
from converge.protocol import Event, to_msgpack
from converge.store import MemoryStore, SQLiteStore, Store
from converge.store import sqlite as _sqlite_store

BENCH = "store"
TARGETS = {"batch_1000": 150_000, "concurrent_100": 50_000}
BATCH = 1_000
CALLERS = 100
ACTIVE_TRACES = 20
TRACE_LIFETIME = 5_000  # events appended by all traces while one lives (it gets 1/20 of them)
# The store's own checkpoint interval, so the raw-SQLite floor runs under the same conditions.
WAL_AUTOCHECKPOINT_PAGES = getattr(_sqlite_store, "_WAL_AUTOCHECKPOINT_PAGES", 1000)
KINDS = (
    "intent.published",
    "offer.received",
    "task.claimed",
    "task.started",
    "task.progress",
    "task.progress",
    "task.progress",
    "task.completed",
    "message.sent",
    "message.received",
)


class EventSource:
    """Makes realistic events: a window of active traces, each replaced when it has run its
    course, so the trace index sees both new and long-lived keys, as in a running system."""

    def __init__(self) -> None:
        self.actors = [Identity.generate().did for _ in range(8)]
        self.traces = [new_id() for _ in range(ACTIVE_TRACES)]
        self.subjects = [new_id() for _ in range(ACTIVE_TRACES)]
        self.made = 0

    def make(self, count: int) -> list[Event]:
        events = []
        for _ in range(count):
            slot = self.made % ACTIVE_TRACES
            self.made += 1
            if self.made % (TRACE_LIFETIME // ACTIVE_TRACES) == 0:
                # Retire one trace and start a new one in its place.
                retired = (self.made // (TRACE_LIFETIME // ACTIVE_TRACES)) % ACTIVE_TRACES
                self.traces[retired] = new_id()
                self.subjects[retired] = new_id()
            step = self.made // ACTIVE_TRACES
            events.append(
                Event(
                    kind=KINDS[(step + slot) % len(KINDS)],
                    trace_id=self.traces[slot],
                    actor=self.actors[self.made % len(self.actors)],
                    subject=self.subjects[slot],
                    data={"attempt": 1, "step": step, "progress": 0.25, "note": "tool call ok"},
                )
            )
        return events


# -- the three cases -------------------------------------------------------------------------------


async def batch_appends(store: Store, source: EventSource, total: int) -> dict[str, float]:
    warm = [source.make(BATCH) for _ in range(5)]
    for batch in warm:
        await store.append(batch)
    batches = [source.make(BATCH) for _ in range(total // BATCH)]
    latencies = []
    start = time.perf_counter()
    for batch in batches:
        t0 = time.perf_counter()
        await store.append(batch)
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    await _check_count(store, (len(warm) + len(batches)) * BATCH)
    latencies.sort()
    return {
        "value": rate(len(batches) * BATCH, elapsed),
        "events": len(batches) * BATCH,
        "seconds": round(elapsed, 3),
        "p50_batch_ms": round(percentile(latencies, 50) * 1e3, 2),
        "p99_batch_ms": round(percentile(latencies, 99) * 1e3, 2),
    }


async def concurrent_appends(store: Store, source: EventSource, total: int) -> dict[str, float]:
    async def run(per_caller: list[list[Event]]) -> tuple[float, list[float]]:
        latencies: list[float] = []

        async def caller(events: list[Event]) -> None:
            for ev in events:
                t0 = time.perf_counter()
                await store.append([ev])
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for events in per_caller:
                tg.create_task(caller(events))
        return time.perf_counter() - start, latencies

    each = total // CALLERS
    warm = [source.make(20) for _ in range(CALLERS)]
    await run(warm)
    work = [source.make(each) for _ in range(CALLERS)]
    elapsed, latencies = await run(work)
    await _check_count(store, CALLERS * (20 + each))
    latencies.sort()
    return {
        "value": rate(CALLERS * each, elapsed),
        "events": CALLERS * each,
        "seconds": round(elapsed, 3),
        "callers": CALLERS,
        "p50_latency_us": round(percentile(latencies, 50) * 1e6, 1),
        "p99_latency_us": round(percentile(latencies, 99) * 1e6, 1),
    }


async def lone_appends(store: Store, source: EventSource, total: int) -> dict[str, float]:
    warm = source.make(200)
    for ev in warm:
        await store.append([ev])
    events = source.make(total)
    latencies = []
    start = time.perf_counter()
    for ev in events:
        t0 = time.perf_counter()
        await store.append([ev])
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    await _check_count(store, len(warm) + len(events))
    latencies.sort()
    return {
        "value": rate(len(events), elapsed),
        "events": len(events),
        "seconds": round(elapsed, 3),
        "p50_latency_us": round(percentile(latencies, 50) * 1e6, 1),
        "p99_latency_us": round(percentile(latencies, 99) * 1e6, 1),
    }


async def _check_count(store: Store, expected: int) -> None:
    last = await store.last_seq()
    if last != expected:
        raise RuntimeError(f"the log holds {last} events, expected {expected}")


# -- what SQLite itself does on this machine -----------------------------------------------------


def sqlite_floor(path: Path, source: EventSource, total: int, batch: int) -> dict[str, float]:
    """Raw ``sqlite3`` inserting the same rows (already encoded) into converge's schema, with the
    store's pragmas, ``batch`` rows per transaction: the ceiling no SQLite store can pass here."""
    rows = [(ev.trace_id, ev.kind, to_msgpack(ev)) for ev in source.make(total + 5 * batch)]
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        insert = "INSERT INTO events (trace_id, kind, body) VALUES (?, ?, ?)"
        chunks = [rows[i : i + batch] for i in range(0, len(rows), batch)]
        for chunk in chunks[:5]:  # warm-up
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(insert, chunk)
            conn.execute("COMMIT")
        start = time.perf_counter()
        for chunk in chunks[5:]:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(insert, chunk)
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
    return {
        "value": rate(total, elapsed),
        "events": total,
        "seconds": round(elapsed, 3),
        "rows_per_transaction": batch,
    }


async def _create_store(path: Path) -> None:
    store = await SQLiteStore.open(path, synchronous="NORMAL")
    await store.aclose()


# -- driver ----------------------------------------------------------------------------------------

Case = Callable[[Store, EventSource, int], Awaitable[dict[str, float]]]


async def run_cases(args: argparse.Namespace, tmp: Path) -> None:
    cases: list[tuple[str, Case, int]] = [
        ("batch_1000", batch_appends, args.batch_events),
        ("concurrent_100", concurrent_appends, args.concurrent_events),
        ("lone_caller", lone_appends, args.lone_events),
    ]
    for backend in ("sqlite", "memory"):
        for name, case, total in cases:
            if not _selected(args, f"{backend}_{name}"):
                continue
            store: Store
            extra: dict[str, object]
            if backend == "sqlite":
                store = await SQLiteStore.open(tmp / f"{name}.db", synchronous="NORMAL")
                extra = {"synchronous": "NORMAL", "sqlite": sqlite3.sqlite_version}
            else:
                store = MemoryStore()
                extra = {}
            async with store:
                fields = await case(store, EventSource(), total)
            target = TARGETS.get(name) if backend == "sqlite" else None
            emit(
                bench=BENCH,
                case=f"{backend}_{name}",
                unit="events/s",
                **({"target": target} if target else {"informational": True}),
                includes_event_construction=False,
                **fields,
                **extra,
            )
    for batch in (BATCH, CALLERS):
        if _selected(args, f"sqlite3_floor_{batch}_per_tx"):
            await _create_store(tmp / f"floor_{batch}.db")


def run_floors(args: argparse.Namespace, tmp: Path) -> None:
    # Group commit with 100 callers forms transactions of about 100 events: the second floor.
    for batch, total in ((BATCH, args.batch_events), (CALLERS, args.concurrent_events)):
        name = f"sqlite3_floor_{batch}_per_tx"
        if not _selected(args, name):
            continue
        fields = sqlite_floor(tmp / f"floor_{batch}.db", EventSource(), total, batch)
        emit(
            bench=BENCH,
            case=name,
            unit="events/s",
            informational=True,
            includes_event_construction=False,
            note="raw sqlite3, pre-encoded rows, converge's schema and pragmas; no converge code",
            **fields,
            synchronous="NORMAL",
            sqlite=sqlite3.sqlite_version,
        )


def _selected(args: argparse.Namespace, case: str) -> bool:
    return not args.only or case in args.only


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="where to make the temp dir (default: the system's)")
    parser.add_argument("--batch-events", type=int, default=200_000)
    parser.add_argument("--concurrent-events", type=int, default=50_000)
    parser.add_argument("--lone-events", type=int, default=5_000)
    parser.add_argument("--only", nargs="*", help="run only these cases (e.g. sqlite_batch_1000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="converge-bench-", dir=args.dir) as tmp:
        asyncio.run(run_cases(args, Path(tmp)))
        run_floors(args, Path(tmp))


if __name__ == "__main__":
    main()
