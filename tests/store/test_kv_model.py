"""Property tests: random programs of store operations give the same results on every backend as
on a plain model (a dict for the key-value map, a list for the event log)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from converge.errors import ConflictError
from converge.protocol.event import Event
from converge.store import Store
from tests.store.conformance import BACKENDS, with_seq

# Characters special to SQL LIKE/GLOB or that sort unusually, so prefixes and ordering are tested
# where backends are most likely to get them wrong.
KEY_CHARS = "ab%_\\*[é😀\x00"
keys = st.one_of(
    st.sampled_from(["a", "ab", "a%", "%_", "a_b", "é", "😀", "a\x00", "A", "Ab", "\\a", "[a"]),
    st.text(alphabet=KEY_CHARS, min_size=1, max_size=3),
)
values = st.binary(max_size=6)
versions_off = st.sampled_from([-1, 0, 0, 1])  # expected version = current + this (at least 0)

write_ops = st.one_of(
    st.tuples(st.just("put"), keys, values),
    st.tuples(st.just("delete"), keys),
    st.tuples(st.just("put_if_absent"), keys, values),
    st.tuples(st.just("cas"), keys, versions_off, values),
)
prefixes = st.one_of(
    st.sampled_from(["", "a", "A", "%", "_", "a%", "a_", "\\", "*", "[", "é"]),
    st.text(alphabet=KEY_CHARS, max_size=2),
)
kv_ops = st.one_of(
    write_ops,
    st.tuples(st.just("get"), keys),
    st.tuples(st.just("list"), prefixes, st.none() | st.integers(0, 4)),
    st.tuples(st.just("tx"), st.lists(write_ops, min_size=1, max_size=4)),
)

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class KVModel:
    """The key-value map as a dict of key -> (value, version)."""

    def __init__(self) -> None:
        self.kv: dict[str, tuple[bytes, int]] = {}

    def version(self, key: str) -> int:
        return self.kv[key][1] if key in self.kv else 0

    def resolve(self, op: tuple[Any, ...]) -> tuple[Any, ...]:
        """Turn a relative ``cas`` (version offset) into one with an absolute expected version."""
        if op[0] == "cas":
            return ("cas", op[1], max(0, self.version(op[1]) + op[2]), op[3])
        if op[0] == "tx":
            return ("tx", [self.resolve(sub) for sub in op[1]])
        return op

    def apply(self, op: tuple[Any, ...]) -> Any:
        kind = op[0]
        if kind == "get":
            return self.kv.get(op[1])
        if kind == "list":
            found = sorted((k, v) for k, v in self.kv.items() if k.startswith(op[1]))
            return found if op[2] is None else found[: op[2]]
        if kind == "tx":
            staged = dict(self.kv)
            for sub in op[1]:
                conflict = _write(staged, sub)
                if conflict is not None:
                    return conflict
            self.kv = staged
            return "committed"
        before = dict(self.kv)
        conflict = _write(self.kv, op)
        if kind == "put":
            return self.kv[op[1]][1]
        if kind == "delete":
            return op[1] in before
        return conflict is None


def _write(kv: dict[str, tuple[bytes, int]], op: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """Apply one write to ``kv``; a failed precondition returns its conflict and writes nothing."""
    kind, key = op[0], op[1]
    version = kv[key][1] if key in kv else 0
    if kind == "delete":
        kv.pop(key, None)
        return None
    if kind == "put_if_absent" and version != 0:
        return ("conflict", key, 0, version)
    if kind == "cas" and version != op[2]:
        return ("conflict", key, op[2], version)
    kv[key] = (op[-1], version + 1)
    return None


async def _apply(store: Store, op: tuple[Any, ...]) -> Any:
    kind = op[0]
    if kind == "put":
        return await store.put(op[1], op[2])
    if kind == "delete":
        return await store.delete(op[1])
    if kind == "put_if_absent":
        return await store.put_if_absent(op[1], op[2])
    if kind == "cas":
        return await store.compare_and_set(op[1], op[2], op[3])
    if kind == "get":
        entry = await store.get(op[1])
        return None if entry is None else (entry.value, entry.version)
    if kind == "list":
        return [(e.key, (e.value, e.version)) for e in await store.list(op[1], limit=op[2])]
    try:
        async with store.transaction() as tx:
            for sub in op[1]:
                if sub[0] == "put":
                    tx.put(sub[1], sub[2])
                elif sub[0] == "delete":
                    tx.delete(sub[1])
                elif sub[0] == "put_if_absent":
                    tx.put_if_absent(sub[1], sub[2])
                else:
                    tx.compare_and_set(sub[1], sub[2], sub[3])
    except ConflictError as exc:
        return ("conflict", exc.key, exc.expected_version, exc.actual_version)
    return "committed"


async def _open(backend: str, tmp: str) -> Store:
    return await BACKENDS[backend](Path(tmp))


async def _check_kv(backend: str, tmp: str, program: list[tuple[Any, ...]]) -> None:
    model = KVModel()
    async with await _open(backend, tmp) as store:
        for step, raw in enumerate(program):
            op = model.resolve(raw)
            expected = model.apply(op)
            assert await _apply(store, op) == expected, f"step {step}: {op!r}"
        final = [(e.key, (e.value, e.version)) for e in await store.list()]
        assert final == sorted(model.kv.items())


@pytest.mark.parametrize("backend", list(BACKENDS))
@SETTINGS
@given(program=st.lists(kv_ops, max_size=30))
def test_kv_operations_match_a_dict(backend: str, program: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_check_kv(backend, tmp, program))


traces = st.sampled_from(["t1", "t2", "t3"])
kinds = st.sampled_from(["a.x", "a.y", "b.x"])
event_ops = st.one_of(
    st.tuples(st.just("append"), st.lists(st.tuples(kinds, traces), max_size=4)),
    st.tuples(
        st.just("read"),
        st.integers(0, 40),
        st.none() | traces,
        st.none() | st.lists(kinds, min_size=1, max_size=2, unique=True),
        st.none() | st.integers(0, 5),
    ),
)


async def _check_log(backend: str, tmp: str, program: list[tuple[Any, ...]]) -> None:
    log: list[Event] = []  # as read back: with the seq the store returned
    counter = 0
    async with await _open(backend, tmp) as store:
        for step, op in enumerate(program):
            if op[0] == "append":
                events = []
                for kind, trace in op[1]:
                    events.append(Event(kind=kind, trace_id=trace, data={"n": counter}))
                    counter += 1
                seqs = await store.append(events)
                assert len(seqs) == len(events)
                assert seqs == sorted(set(seqs))
                if log and seqs:
                    assert seqs[0] > log[-1].seq
                log += [with_seq(ev, s) for ev, s in zip(events, seqs, strict=True)]
                continue
            _, after, trace, kind_list, limit = op
            expected = [
                ev
                for ev in log
                if ev.seq > after
                and (trace is None or ev.trace_id == trace)
                and (kind_list is None or ev.kind in kind_list)
            ]
            if limit is not None:
                expected = expected[:limit]
            got = await store.read(after_seq=after, trace_id=trace, kinds=kind_list, limit=limit)
            assert got == expected, f"step {step}: {op!r}"
        assert await store.last_seq() == (log[-1].seq if log else 0)


@pytest.mark.parametrize("backend", list(BACKENDS))
@SETTINGS
@given(program=st.lists(event_ops, max_size=20))
def test_event_reads_match_a_list(backend: str, program: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_check_log(backend, tmp, program))
