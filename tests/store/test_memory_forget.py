"""``MemoryStore.forget``: an owner that bounds what it keeps drops a whole trace from memory."""

from __future__ import annotations

import pytest

from converge.errors import StoreClosed, ValidationError
from converge.protocol.event import Event
from converge.store import MemoryStore


def event(trace_id: str, n: int) -> Event:
    return Event(kind="test.step", trace_id=trace_id, data={"n": n})


async def test_a_forgotten_trace_leaves_the_others_and_their_seqs_as_they_were() -> None:
    store = MemoryStore()
    for n in range(3):
        await store.append([event("a", n), event("b", n), event("c", n)])
    before = {e.seq: e for e in await store.read() if e.trace_id != "b"}
    assert store.forget("b") == 3
    assert store.forget("b") == 0  # nothing left of it
    assert store.forget("unknown") == 0
    after = await store.read()
    assert {e.seq: e for e in after} == before
    assert await store.read(trace_id="b") == []
    assert await store.last_seq() == 9  # seqs are never reused
    # Readers past a forgotten stretch, from the start, in the middle, near the end, limited.
    assert [e.seq for e in await store.read(after_seq=4)] == [s for s in before if s > 4]
    assert [e.seq for e in await store.read(after_seq=8)] == [9]
    assert [e.seq for e in await store.read(limit=2)] == [1, 3]
    (new,) = await store.append([event("b", 9)])
    assert new == 10
    assert [e.data["n"] for e in await store.read(trace_id="b")] == [9]


async def test_reading_on_past_many_forgotten_traces() -> None:
    store = MemoryStore()
    for n in range(200):
        await store.append([event(f"t{n}", n)])
    for n in range(199):
        store.forget(f"t{n}")
    assert [e.seq for e in await store.read()] == [200]
    assert [e.seq for e in await store.read(after_seq=10)] == [200]
    assert [e.seq for e in await store.read(after_seq=199)] == [200]
    assert await store.read(after_seq=200) == []
    assert await store.wait_for_events(199, timeout=0) == 200


async def test_forget_is_checked() -> None:
    store = MemoryStore()
    with pytest.raises(ValidationError, match="trace_id"):
        store.forget(7)  # type: ignore[arg-type]
    await store.aclose()
    with pytest.raises(StoreClosed):
        store.forget("a")
