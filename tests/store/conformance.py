"""The conformance suite every ``Store`` backend passes.

``StoreConformance`` holds the tests; ``test_conformance.py`` runs them through the ``store``
fixture (tests/conftest.py) parametrized over ``BACKENDS``. A new backend joins by adding one
entry to ``BACKENDS`` (an async factory that returns an open, empty store; the fixture closes
it), and the property tests in ``test_kv_model.py`` pick it up too.

Seq numbers are only assumed to start at 1 on an empty log and to be strictly increasing and
unique; no test relies on them being contiguous, so a backend with gaps (a PostgreSQL sequence)
still passes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from converge.errors import ConflictError, ConvergeError, StoreClosed, ValidationError
from converge.protocol.event import Event
from converge.store import Entry, MemoryStore, SQLiteStore, Store

__all__ = ["BACKENDS", "StoreConformance", "make_event", "with_seq"]


async def _open_memory(tmp_path: Path) -> Store:
    return MemoryStore()


async def _open_sqlite(tmp_path: Path) -> Store:
    return await SQLiteStore.open(tmp_path / "store.db")


BACKENDS: dict[str, Callable[[Path], Awaitable[Store]]] = {
    "memory": _open_memory,
    "sqlite": _open_sqlite,
}
"""Backend name -> async factory of an open, empty store kept under the given directory."""

WAIT = 10.0
"""Upper bound for anything that should happen promptly; a hang fails here, not at the timeout."""


def make_event(kind: str = "task.created", trace_id: str = "trace-1", **data: Any) -> Event:
    """An event as a caller builds it (seq 0)."""
    return Event(kind=kind, trace_id=trace_id, data=data)


def with_seq(ev: Event, seq: int) -> Event:
    """``ev`` as a store reads it back at ``seq``."""
    return msgspec.structs.replace(ev, seq=seq)


async def _not_done_within(task: asyncio.Future[Any], seconds: float) -> bool:
    done, _ = await asyncio.wait({task}, timeout=seconds)
    return not done


class _Boom(Exception):
    pass


# Every operation of the protocol, as a call on a store, for the closed-store test.
async def _commit_tx(store: Store) -> None:
    async with store.transaction() as tx:
        tx.put("k", b"v")


async def _first_of_tail(store: Store) -> Event:
    return await anext(aiter(store.tail()))


CLOSED_OPS: dict[str, Callable[[Store], Awaitable[object]]] = {
    "get": lambda s: s.get("k"),
    "put": lambda s: s.put("k", b"v"),
    "delete": lambda s: s.delete("k"),
    "list": lambda s: s.list(),
    "put_if_absent": lambda s: s.put_if_absent("new", b"v"),
    "compare_and_set": lambda s: s.compare_and_set("k", 1, b"v"),
    "append": lambda s: s.append([make_event()]),
    "read": lambda s: s.read(),
    "last_seq": lambda s: s.last_seq(),
    "wait_for_events": lambda s: s.wait_for_events(0, timeout=0.2),
    "transaction": _commit_tx,
    "tail": _first_of_tail,
}

# Calls with bad input, each of which must raise ValidationError and write nothing.
BAD_CALLS: dict[str, Callable[[Store], Awaitable[object]]] = {
    "put-int-key": lambda s: s.put(1, b"v"),  # type: ignore[arg-type]
    "put-empty-key": lambda s: s.put("", b"v"),
    "put-str-value": lambda s: s.put("bad", "text"),  # type: ignore[arg-type]
    "put-none-value": lambda s: s.put("bad", None),  # type: ignore[arg-type]
    "get-none-key": lambda s: s.get(None),  # type: ignore[arg-type]
    "delete-empty-key": lambda s: s.delete(""),
    "put_if_absent-empty-key": lambda s: s.put_if_absent("", b"v"),
    "put_if_absent-int-value": lambda s: s.put_if_absent("bad", 7),  # type: ignore[arg-type]
    "cas-negative-version": lambda s: s.compare_and_set("bad", -1, b"v"),
    "cas-str-value": lambda s: s.compare_and_set("bad", 0, "v"),  # type: ignore[arg-type]
    "append-dict": lambda s: s.append([{"kind": "task.created", "trace_id": "t"}]),  # type: ignore[list-item]
    "append-upper-kind": lambda s: s.append([make_event("Task.Created", bad=True)]),
    "append-one-part-kind": lambda s: s.append([make_event("task", bad=True)]),
    "append-empty-kind": lambda s: s.append([make_event("", bad=True)]),
    "append-good-then-bad": lambda s: s.append(
        [make_event(bad=True), make_event("task created", bad=True)]
    ),
}

# Event data no backend can store faithfully: refused with ValidationError, nothing written.
UNENCODABLE_DATA: dict[str, Any] = {
    "object": object(),
    "int-too-big": 2**70,
    "lone-surrogate": "\ud800",
}

ROUND_TRIP_DATA: dict[str, Any] = {
    "none": None,
    "bools": [True, False],
    "ints": [0, -1, 2**63 - 1, -(2**63), 2**64 - 1],
    "floats": [0.1, -2.5e-300, 1e300, 3.141592653589793],
    "unicode": "日本語 — ünïcödé 😀",
    "bytes": b"\x00\xff\x10binary",
    "empty": {"dict": {}, "list": [], "str": "", "bytes": b""},
    "nested": {"list": [1, "two", 3.0, None, {"deep": [b"\x01", {"deeper": ["é"]}]}]},
}


class StoreConformance:
    """Tests every backend must pass; subclass it in a test module that defines ``store``."""

    async def test_satisfies_the_store_protocol(self, store: Store) -> None:
        assert isinstance(store, Store)

    # -- key-value --------------------------------------------------------------------------------

    async def test_get_absent_key_is_none(self, store: Store) -> None:
        assert await store.get("missing") is None

    async def test_put_versions_start_at_one_and_grow_by_one(self, store: Store) -> None:
        assert await store.put("k", b"one") == 1
        assert await store.put("k", b"two") == 2
        assert await store.put("other", b"x") == 1
        assert await store.put("k", b"three") == 3
        assert await store.get("k") == Entry("k", b"three", 3)
        assert await store.get("other") == Entry("other", b"x", 1)

    async def test_values_are_stored_byte_exact(self, store: Store) -> None:
        values = {"empty": b"", "all-bytes": bytes(range(256)), "big": b"\x00\x01" * 100_000}
        for key, value in values.items():
            await store.put(key, value)
        for key, value in values.items():
            entry = await store.get(key)
            assert entry is not None
            assert entry.value == value
            assert type(entry.value) is bytes

    async def test_delete_reports_existence_and_resets_version(self, store: Store) -> None:
        await store.put("k", b"a")
        await store.put("k", b"b")
        assert await store.delete("k") is True
        assert await store.get("k") is None
        assert await store.delete("k") is False
        assert await store.delete("never") is False
        assert await store.put("k", b"again") == 1

    async def test_list_returns_prefix_matches_in_key_order_up_to_limit(self, store: Store) -> None:
        for key in ["task/3", "task/1", "pool/a", "task/2", "tasks", "task/10"]:
            await store.put(key, key.encode())
        listed = await store.list("task/")
        assert [e.key for e in listed] == ["task/1", "task/10", "task/2", "task/3"]
        assert all(e.value == e.key.encode() and e.version == 1 for e in listed)
        assert [e.key for e in await store.list("task/", limit=2)] == ["task/1", "task/10"]
        assert await store.list("task/", limit=0) == []
        assert [e.key for e in await store.list()] == [
            "pool/a",
            "task/1",
            "task/10",
            "task/2",
            "task/3",
            "tasks",
        ]
        assert await store.list("nothing/") == []

    async def test_list_prefix_is_literal_and_case_sensitive(self, store: Store) -> None:
        # Characters that are wildcards or escapes in SQL LIKE, GLOB or regexes must match only
        # themselves, and ASCII case matters (SQLite's LIKE ignores it).
        keys = [
            "a%_",
            "a%_x",
            "a%b",
            "ab_",
            "aX_y",
            "A%_z",
            "a_",
            "a_b",
            "ab",
            "a*",
            "a*b",
            "a[b]",
            "a\\",
            "a\\b",
            "a.c",
            "abc",
            "a",
        ]
        for key in keys:
            await store.put(key, b"v")
        for prefix in ["a%_", "a_", "a%", "a*", "a[", "a\\", "a.", "A", "a", ""]:
            listed = [e.key for e in await store.list(prefix)]
            assert listed == sorted(k for k in keys if k.startswith(prefix)), prefix

    async def test_list_orders_unicode_keys_by_code_point(self, store: Store) -> None:
        keys = ["b", "B", "a", "é", "z", "😀", "a\x00", "\uffff", "ab", "日本"]
        for key in keys:
            await store.put(key, key.encode())
        assert [e.key for e in await store.list()] == sorted(keys)
        assert [e.key for e in await store.list("a")] == ["a", "a\x00", "ab"]
        assert [e.key for e in await store.list("\uffff")] == ["\uffff"]
        assert [e.key for e in await store.list("😀")] == ["😀"]

    async def test_put_if_absent_writes_only_once(self, store: Store) -> None:
        assert await store.put_if_absent("k", b"first") is True
        assert await store.put_if_absent("k", b"second") is False
        assert await store.get("k") == Entry("k", b"first", 1)
        await store.delete("k")
        assert await store.put_if_absent("k", b"third") is True
        assert await store.get("k") == Entry("k", b"third", 1)

    async def test_compare_and_set_writes_only_at_expected_version(self, store: Store) -> None:
        assert await store.compare_and_set("k", 1, b"x") is False  # absent is version 0
        assert await store.get("k") is None
        assert await store.compare_and_set("k", 0, b"a") is True
        assert await store.compare_and_set("k", 0, b"b") is False
        assert await store.compare_and_set("k", 2, b"b") is False
        assert await store.get("k") == Entry("k", b"a", 1)
        assert await store.compare_and_set("k", 1, b"b") is True
        assert await store.get("k") == Entry("k", b"b", 2)
        await store.delete("k")
        assert await store.compare_and_set("k", 2, b"c") is False
        assert await store.compare_and_set("k", 0, b"c") is True
        assert await store.get("k") == Entry("k", b"c", 1)

    async def test_concurrent_compare_and_set_has_exactly_one_winner(self, store: Store) -> None:
        await store.put("lock", b"free")
        barrier = asyncio.Barrier(20)

        async def contender(i: int) -> bool:
            entry = await store.get("lock")
            assert entry is not None
            await barrier.wait()
            return await store.compare_and_set("lock", entry.version, f"owner-{i}".encode())

        async with asyncio.timeout(WAIT), asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(contender(i)) for i in range(20)]
        winners = [i for i, t in enumerate(tasks) if t.result()]
        assert len(winners) == 1
        assert await store.get("lock") == Entry("lock", f"owner-{winners[0]}".encode(), 2)

    # -- transactions -----------------------------------------------------------------------------

    async def test_transaction_commits_writes_and_events_together(self, store: Store) -> None:
        await store.put("existing", b"old")
        events = [make_event("task.created", n=1), make_event("task.claimed", n=2)]
        async with store.transaction() as tx:
            tx.put("a", b"1")
            tx.compare_and_set("existing", 1, b"new")
            tx.put_if_absent("b", b"2")
            tx.delete("gone")
            tx.append(*events)
            # Buffered only: nothing is visible before the commit.
            assert await store.get("a") is None
            assert await store.get("existing") == Entry("existing", b"old", 1)
            assert await store.read() == []
            assert tx.seqs == []
        assert len(tx.seqs) == 2
        assert tx.seqs[0] == 1
        assert tx.seqs[0] < tx.seqs[1]
        assert await store.get("a") == Entry("a", b"1", 1)
        assert await store.get("existing") == Entry("existing", b"new", 2)
        assert await store.get("b") == Entry("b", b"2", 1)
        read = await store.read()
        assert read == [with_seq(ev, s) for ev, s in zip(events, tx.seqs, strict=True)]

    async def test_explicit_commit_returns_seqs(self, store: Store) -> None:
        tx = store.transaction()
        tx.append(make_event(n=1))
        tx.put("k", b"v")
        seqs = await tx.commit()
        assert seqs == tx.seqs
        assert [e.seq for e in await store.read()] == seqs
        assert await store.get("k") == Entry("k", b"v", 1)

    async def test_empty_transaction_writes_nothing(self, store: Store) -> None:
        async with store.transaction() as tx:
            pass
        assert tx.seqs == []
        assert await store.last_seq() == 0

    @pytest.mark.parametrize(
        ("failing", "key", "expected", "actual"),
        [
            ("cas-wrong-version", "k", 3, 2),
            ("cas-absent-but-exists", "k", 0, 2),
            ("cas-on-absent-key", "missing", 1, 0),
            ("put_if_absent-exists", "k", 0, 2),
        ],
    )
    @pytest.mark.parametrize("position", ["first", "last"])
    async def test_failed_precondition_commits_nothing(
        self, store: Store, failing: str, key: str, expected: int, actual: int, position: str
    ) -> None:
        await store.put("k", b"v1")
        await store.put("k", b"v2")
        await store.put("other", b"o")
        await store.put("doomed", b"d")
        await store.append([make_event(n=0)])
        before_seq = await store.last_seq()

        def precondition(tx: Any) -> None:
            if failing == "put_if_absent-exists":
                tx.put_if_absent(key, b"lost")
            else:
                tx.compare_and_set(key, expected, b"lost")

        tx = store.transaction()
        with pytest.raises(ConflictError) as caught:
            async with tx:
                if position == "first":
                    precondition(tx)
                tx.put("written", b"lost")
                tx.put("other", b"lost")
                tx.delete("doomed")
                tx.append(make_event(n=1), make_event(n=2))
                if position == "last":
                    precondition(tx)
        err = caught.value
        assert (err.key, err.expected_version, err.actual_version) == (key, expected, actual)
        assert tx.seqs == []
        assert await store.get("written") is None
        assert await store.get("other") == Entry("other", b"o", 1)
        assert await store.get("doomed") == Entry("doomed", b"d", 1)
        assert await store.get("k") == Entry("k", b"v2", 2)
        assert await store.get("missing") is None
        assert await store.last_seq() == before_seq
        assert [e.data["n"] for e in await store.read()] == [0]

    async def test_exception_in_block_discards_transaction(self, store: Store) -> None:
        with pytest.raises(_Boom):
            async with store.transaction() as tx:
                tx.put("k", b"v")
                tx.append(make_event())
                raise _Boom
        assert tx.seqs == []
        assert await store.get("k") is None
        assert await store.last_seq() == 0
        with pytest.raises(ConvergeError):
            tx.put("k", b"again")
        with pytest.raises(ConvergeError):
            await tx.commit()
        assert await store.get("k") is None

    async def test_committing_twice_is_an_error_and_writes_once(self, store: Store) -> None:
        async with store.transaction() as tx:
            tx.append(make_event(n=1))
            tx.put("k", b"v")
            seqs = await tx.commit()
        with pytest.raises(ConvergeError):
            await tx.commit()
        with pytest.raises(ConvergeError):
            tx.append(make_event(n=2))
        assert tx.seqs == seqs
        assert [e.data["n"] for e in await store.read()] == [1]
        assert await store.get("k") == Entry("k", b"v", 1)

    async def test_racing_transactions_on_one_key_have_exactly_one_winner(
        self, store: Store
    ) -> None:
        await store.put("lock", b"free")
        contenders = 20
        barrier = asyncio.Barrier(contenders)

        async def contender(i: int) -> ConflictError | None:
            entry = await store.get("lock")
            assert entry is not None
            await barrier.wait()
            try:
                async with store.transaction() as tx:
                    tx.compare_and_set("lock", entry.version, f"owner-{i}".encode())
                    tx.put(f"won-by/{i}", b"1")
                    tx.append(make_event("lock.acquired", n=i))
            except ConflictError as exc:
                return exc
            return None

        async with asyncio.timeout(WAIT), asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(contender(i)) for i in range(contenders)]
        outcomes = [t.result() for t in tasks]
        winners = [i for i, out in enumerate(outcomes) if out is None]
        assert len(winners) == 1
        (winner,) = winners
        for out in outcomes:
            if out is not None:
                assert (out.key, out.expected_version, out.actual_version) == ("lock", 1, 2)
        assert await store.get("lock") == Entry("lock", f"owner-{winner}".encode(), 2)
        assert [e.key for e in await store.list("won-by/")] == [f"won-by/{winner}"]
        assert [e.data["n"] for e in await store.read(kinds=["lock.acquired"])] == [winner]

    async def test_failed_transaction_does_not_affect_concurrent_ones(self, store: Store) -> None:
        # Many units of work at once (a group-committing backend batches them): the ones whose
        # precondition fails are rolled back alone; every other one commits in full.
        await store.put("taken", b"x")
        units = 40

        async def unit(i: int) -> list[int] | None:
            try:
                async with store.transaction() as tx:
                    tx.put(f"unit/{i}", b"written")
                    tx.append(make_event(n=i))
                    if i % 2:
                        tx.put_if_absent("taken", b"stolen")
                    else:
                        tx.put_if_absent(f"fresh/{i}", b"ok")
            except ConflictError:
                return None
            return tx.seqs

        async with asyncio.timeout(WAIT), asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(unit(i)) for i in range(units)]
        results = [t.result() for t in tasks]
        good = [i for i in range(units) if i % 2 == 0]
        assert [i for i, r in enumerate(results) if r is not None] == good
        assert [e.key for e in await store.list("unit/")] == sorted(f"unit/{i}" for i in good)
        assert len(await store.list("fresh/")) == len(good)
        assert await store.get("taken") == Entry("taken", b"x", 1)
        events = await store.read()
        assert sorted(e.data["n"] for e in events) == good
        assert {e.seq: e.data["n"] for e in events} == {
            r[0]: i for i, r in enumerate(results) if r is not None
        }

    # -- event log --------------------------------------------------------------------------------

    async def test_append_assigns_increasing_seqs_starting_at_one(self, store: Store) -> None:
        assert await store.last_seq() == 0
        first = await store.append([make_event(n=1), make_event(n=2), make_event(n=3)])
        assert first[0] == 1
        assert first == sorted(set(first))
        second = await store.append([make_event(n=4)])
        assert second[0] > first[-1]
        assert await store.last_seq() == second[0]
        assert await store.append([]) == []
        assert await store.last_seq() == second[0]

    async def test_read_filters_by_position_trace_kind_and_limit(self, store: Store) -> None:
        plan = [
            ("task.created", "t1"),
            ("task.claimed", "t2"),
            ("task.created", "t2"),
            ("bid.placed", "t1"),
            ("task.claimed", "t1"),
            ("task.created", "t1"),
        ]
        events = [make_event(kind, trace, n=i) for i, (kind, trace) in enumerate(plan)]
        seqs = await store.append(events[:2])
        seqs += await store.append(events[2:])
        stored = [with_seq(ev, s) for ev, s in zip(events, seqs, strict=True)]

        def pick(indexes: list[int]) -> list[Event]:
            return [stored[i] for i in indexes]

        assert await store.read() == stored
        assert await store.read(after_seq=seqs[2]) == pick([3, 4, 5])
        assert await store.read(after_seq=seqs[-1]) == []
        assert await store.read(trace_id="t1") == pick([0, 3, 4, 5])
        assert await store.read(trace_id="nope") == []
        assert await store.read(kinds=["task.claimed"]) == pick([1, 4])
        assert await store.read(kinds=["task.claimed", "bid.placed"]) == pick([1, 3, 4])
        assert await store.read(limit=2) == pick([0, 1])
        assert await store.read(limit=0) == []
        assert await store.read(after_seq=seqs[0], trace_id="t1", kinds=["task.created"]) == pick(
            [5]
        )
        assert await store.read(trace_id="t1", kinds=["task.claimed", "task.created"], limit=2) == (
            pick([0, 4])
        )
        assert await store.read(after_seq=seqs[1], trace_id="t2") == pick([2])

    async def test_events_round_trip_every_field(self, store: Store) -> None:
        ev = Event(
            kind="offer.rejected",
            trace_id="trace-ü-1",
            actor="did:key:z6MkExample",
            subject="offer-42",
            data=ROUND_TRIP_DATA,
            parent_id="01HZZZZZZZZZZZZZZZZZZZZZZZ",
            at=1_700_000_000.123456,
        )
        # All defaults: empty actor, subject and data, no parent.
        plain = make_event("task.created", "trace-2")
        seqs = await store.append([ev, plain])
        assert await store.read() == [with_seq(ev, seqs[0]), with_seq(plain, seqs[1])]
        (back,) = await store.read(limit=1)
        assert back.data == ROUND_TRIP_DATA
        assert type(back.data["bytes"]) is bytes
        assert type(back.data["floats"][0]) is float

    async def test_stored_events_do_not_share_mutable_data(self, store: Store) -> None:
        ev = make_event(items=[1], inner={"a": 1})
        await store.append([ev])
        ev.data["items"].append(2)
        ev.data["inner"]["b"] = 2
        (first,) = await store.read()
        assert first.data == {"items": [1], "inner": {"a": 1}}
        first.data["items"].append(3)
        (again,) = await store.read()
        assert again.data == {"items": [1], "inner": {"a": 1}}

    @pytest.mark.parametrize("value", list(UNENCODABLE_DATA.values()), ids=list(UNENCODABLE_DATA))
    async def test_unencodable_event_data_is_refused(self, store: Store, value: Any) -> None:
        with pytest.raises(ValidationError):
            await store.append([make_event(n=1), make_event(bad=value)])
        with pytest.raises(ValidationError):
            async with store.transaction() as tx:
                tx.put("k", b"v")
                tx.append(make_event(bad=value))
        assert await store.last_seq() == 0
        assert await store.get("k") is None
        assert await store.append([make_event(n=2)]) == [1]

    async def test_concurrent_single_appends_get_distinct_seqs(self, store: Store) -> None:
        appenders = 200
        async with asyncio.timeout(WAIT), asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(store.append([make_event(n=i)])) for i in range(appenders)]
        seqs = [t.result() for t in tasks]
        assert all(len(s) == 1 for s in seqs)
        flat = [s[0] for s in seqs]
        assert len(set(flat)) == appenders
        assert min(flat) == 1
        events = await store.read()
        assert [e.seq for e in events] == sorted(flat)
        assert {e.seq: e.data["n"] for e in events} == {s: i for i, s in enumerate(flat)}
        assert await store.last_seq() == max(flat)

    async def test_wait_for_events_returns_at_once_when_log_is_ahead(self, store: Store) -> None:
        seqs = await store.append([make_event(), make_event()])
        async with asyncio.timeout(WAIT):
            assert await store.wait_for_events(0) == seqs[-1]
            assert await store.wait_for_events(seqs[0], timeout=60) == seqs[-1]

    async def test_wait_for_events_wakes_on_commit_from_another_task(self, store: Store) -> None:
        base = (await store.append([make_event(n=0)]))[-1]
        async with asyncio.timeout(WAIT), asyncio.TaskGroup() as tg:
            waiter = tg.create_task(store.wait_for_events(base, timeout=WAIT * 3))
            # Nothing new yet, so the waiter must still be waiting (this does not order anything:
            # the test is correct whether or not the waiter is parked by now).
            assert await _not_done_within(waiter, 0.05)
            async with store.transaction() as tx:
                tx.append(make_event(n=1))
        assert waiter.result() == tx.seqs[-1]

    async def test_wait_for_events_times_out_with_last_seq_unchanged(self, store: Store) -> None:
        base = (await store.append([make_event()]))[-1]
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await store.wait_for_events(base, timeout=0.2) == base
        assert 0.19 <= loop.time() - start < WAIT
        assert await store.wait_for_events(base, timeout=0) == base

    async def test_wait_for_events_is_not_ended_by_events_at_or_below_after_seq(
        self, store: Store
    ) -> None:
        # Waiting for a position the log has not reached yet (a seq learned from elsewhere): a
        # commit that does not pass it must not end the wait; the first that does, ends it.
        target = await store.last_seq() + 2
        async with asyncio.timeout(WAIT), asyncio.TaskGroup() as tg:
            waiter = tg.create_task(store.wait_for_events(target, timeout=WAIT * 3))
            for _ in range(2):  # below it, then at it
                await store.append([make_event()])
                assert await _not_done_within(waiter, 0.05)
            appended = await store.append([make_event()])
        assert waiter.result() == appended[-1] == target + 1

    async def test_tail_yields_existing_then_new_matching_events(self, store: Store) -> None:
        await store.append(
            [
                make_event(trace_id="t", n=0),
                make_event(trace_id="other", n=1),
                make_event(trace_id="t", n=2),
            ]
        )
        tail = store.tail(trace_id="t")
        try:
            async with asyncio.timeout(WAIT):
                existing = [await anext(tail), await anext(tail)]
                assert [e.data["n"] for e in existing] == [0, 2]
                async with asyncio.TaskGroup() as tg:
                    following = tg.create_task(_take(tail, 2))
                    assert await _not_done_within(following, 0.05)
                    new_seqs = await store.append([make_event(trace_id="other", n=3)])
                    new_seqs += await store.append([make_event(trace_id="t", n=4)])
                    new_seqs += await store.append([make_event(trace_id="t", n=5)])
                got = following.result()
        finally:
            await _close(tail)
        assert [(e.seq, e.data["n"]) for e in got] == [(new_seqs[1], 4), (new_seqs[2], 5)]

    async def test_tail_after_seq_and_kinds(self, store: Store) -> None:
        seqs = await store.append(
            [make_event("a.x", n=0), make_event("a.y", n=1), make_event("a.x", n=2)]
        )
        tail = store.tail(after_seq=seqs[0], kinds=["a.x"])
        try:
            async with asyncio.timeout(WAIT):
                first = await anext(tail)
                await store.append([make_event("a.y", n=3), make_event("a.x", n=4)])
                second = await anext(tail)
        finally:
            await _close(tail)
        assert (first.data["n"], second.data["n"]) == (2, 4)

    # -- bad input --------------------------------------------------------------------------------

    @pytest.mark.parametrize("call", list(BAD_CALLS.values()), ids=list(BAD_CALLS))
    async def test_bad_input_raises_validation_error(
        self, store: Store, call: Callable[[Store], Awaitable[object]]
    ) -> None:
        with pytest.raises(ValidationError):
            await call(store)
        assert await store.list() == []
        assert await store.last_seq() == 0

    async def test_bad_input_in_a_transaction_raises_at_once_and_discards_it(
        self, store: Store
    ) -> None:
        bad_ops: list[Callable[[Any], None]] = [
            lambda tx: tx.put("", b"v"),
            lambda tx: tx.put("k", "text"),
            lambda tx: tx.delete(3),
            lambda tx: tx.put_if_absent("k", None),
            lambda tx: tx.compare_and_set("k", -1, b"v"),
            lambda tx: tx.append(make_event("Not.Valid")),
            lambda tx: tx.append({"kind": "task.created"}),
        ]
        for bad in bad_ops:
            with pytest.raises(ValidationError):
                async with store.transaction() as tx:
                    tx.put("good", b"v")
                    tx.append(make_event())
                    bad(tx)
                    pytest.fail("the bad operation was accepted")
        assert await store.get("good") is None
        assert await store.last_seq() == 0

    async def test_bad_callers_do_not_disturb_concurrent_good_writers(self, store: Store) -> None:
        good_writers = 60
        bad_calls = list(BAD_CALLS.values())

        async def good(i: int) -> list[int]:
            await store.put(f"good/{i}", str(i).encode())
            async with store.transaction() as tx:
                tx.compare_and_set(f"good/{i}", 1, str(i).encode() * 2)
                tx.append(make_event(n=i))
            return tx.seqs

        async def bad(i: int) -> None:
            with pytest.raises(ValidationError):
                await bad_calls[i % len(bad_calls)](store)
            with pytest.raises(ValidationError):
                await store.append([make_event(n=-1), make_event(bad=UNENCODABLE_DATA["object"])])

        async with asyncio.timeout(WAIT), asyncio.TaskGroup() as tg:
            goods = []
            for i in range(good_writers):
                goods.append(tg.create_task(good(i)))
                tg.create_task(bad(i))
        entries = await store.list()
        assert [(e.key, e.value, e.version) for e in entries] == sorted(
            (f"good/{i}", str(i).encode() * 2, 2) for i in range(good_writers)
        )
        events = await store.read()
        assert {e.seq: e.data["n"] for e in events} == {
            t.result()[0]: i for i, t in enumerate(goods)
        }

    async def test_key_the_backend_cannot_store_fails_alone(self, store: Store) -> None:
        # A str key with a lone surrogate has no UTF-8 form. A backend may store it or refuse it
        # with ValidationError, but it must not fail or stall anybody else's writes.
        odd = "bad-\ud800-key"

        async def try_odd() -> bool:
            try:
                await store.put(odd, b"odd")
            except ValidationError:
                return False
            return True

        async with asyncio.timeout(WAIT), asyncio.TaskGroup() as tg:
            goods = [tg.create_task(store.put(f"good/{i}", b"v")) for i in range(10)]
            odd_task = tg.create_task(try_odd())
            goods += [tg.create_task(store.put(f"good/{i}", b"v")) for i in range(10, 20)]
            appended = tg.create_task(store.append([make_event(n=1)]))
        assert all(t.result() == 1 for t in goods)
        assert len(await store.list("good/")) == 20
        assert [e.seq for e in await store.read()] == appended.result()
        async with asyncio.timeout(WAIT):
            if odd_task.result():
                assert await store.get(odd) == Entry(odd, b"odd", 1)
            assert await store.put("afterwards", b"v") == 1

    # -- lifetime ---------------------------------------------------------------------------------

    @pytest.mark.parametrize("op", list(CLOSED_OPS.values()), ids=list(CLOSED_OPS))
    async def test_operations_on_a_closed_store_raise_store_closed(
        self, store: Store, op: Callable[[Store], Awaitable[object]]
    ) -> None:
        await store.put("k", b"v")
        await store.append([make_event()])
        await store.aclose()
        async with asyncio.timeout(WAIT):
            with pytest.raises(StoreClosed):
                await op(store)

    async def test_aclose_is_idempotent_and_async_with_closes(self, store: Store) -> None:
        async with store as same:
            assert same is store
            await store.put("k", b"v")
        with pytest.raises(StoreClosed):
            await store.get("k")
        await store.aclose()
        await store.aclose()
        with pytest.raises(StoreClosed):
            await store.put("k", b"v")

    async def test_pending_writes_finish_before_close(self, store: Store) -> None:
        # Writes already awaited by their callers complete (or fail cleanly) when the store closes
        # under them; none of them hangs.
        async def writer(i: int) -> str:
            try:
                await store.append([make_event(n=i)])
            except StoreClosed:
                return "closed"
            return "written"

        async with asyncio.timeout(WAIT), asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(writer(i)) for i in range(50)]
            tg.create_task(store.aclose())
        assert {t.result() for t in tasks} <= {"closed", "written"}


async def _take(it: AsyncIterator[Event], n: int) -> list[Event]:
    return [await anext(it) for _ in range(n)]


async def _close(it: AsyncIterator[Event]) -> None:
    aclose = getattr(it, "aclose", None)
    if aclose is not None:
        await aclose()
