"""The task-board part of the store conformance suite (see ``converge.store._board``)."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from converge.core.task import Task, TaskState
from converge.errors import TaskConflict, ValidationError
from converge.protocol.event import Event
from converge.store import Store, TaskWrite

__all__ = ["BoardConformance"]


def task(objective: str = "work", **fields: object) -> Task:
    return Task(objective=objective, **fields)  # type: ignore[arg-type]


async def put(store: Store, *tasks: Task) -> None:
    async with store.transaction() as tx:
        for t in tasks:
            tx.put_task(t)


def claimed(t: Task, agent: str = "agent-1", lease: float = 100.0) -> Task:
    return t.transition(
        TaskState.CLAIMED,
        at=1.0,
        attempts=t.attempts + 1,
        assigned_to=agent,
        lease_expires_at=lease,
    )


class BoardConformance:
    """Tests every backend's task board must pass (uses the ``store`` fixture)."""

    async def test_put_and_get_round_trip_every_field(self, store: Store) -> None:
        t = task(
            inputs={"n": 1, "nested": {"a": [1.5, None, b"x"]}},
            pool_id="pool-a",
            required_capabilities=("summarize>=1.0", "translate"),
            priority=7,
            max_attempts=5,
            trace_id="trace-9",
        )
        await put(store, t)
        assert await store.get_task(t.id) == t
        assert await store.get_task("missing") is None

    async def test_put_with_a_taken_id_conflicts_and_writes_nothing(self, store: Store) -> None:
        t = task()
        await put(store, t)
        with pytest.raises(TaskConflict) as info:
            async with store.transaction() as tx:
                tx.put("kv-key", b"v")
                tx.put_task(msgspec.structs.replace(t, objective="other"))
                tx.append(Event(kind="task.submitted", trace_id="t"))
        assert info.value.task_id == t.id
        assert info.value.expected_state is None
        assert info.value.actual_state == "pending"
        assert (await store.get_task(t.id)) == t
        assert await store.get("kv-key") is None
        assert await store.last_seq() == 0

    async def test_update_is_a_compare_and_set_on_state_and_attempts(self, store: Store) -> None:
        t = task()
        await put(store, t)
        first = claimed(t, "a")
        async with store.transaction() as tx:
            tx.update_task(first, TaskState.PENDING, 0)
            tx.append(Event(kind="task.claimed", trace_id="t", actor="a", subject=t.id))
        assert await store.get_task(t.id) == first
        # a second claimer read the same PENDING task: it loses, and nothing it wrote lands
        with pytest.raises(TaskConflict) as info:
            async with store.transaction() as tx:
                tx.update_task(claimed(t, "b"), TaskState.PENDING, 0)
                tx.append(Event(kind="task.claimed", trace_id="t", actor="b", subject=t.id))
        err = info.value
        assert (err.expected_state, err.actual_state) == ("pending", "claimed")
        assert (err.expected_attempts, err.actual_attempts) == (0, 1)
        assert await store.get_task(t.id) == first
        assert [e.actor for e in await store.read(kinds=["task.claimed"])] == ["a"]

    async def test_update_of_a_missing_task_conflicts(self, store: Store) -> None:
        t = task()
        with pytest.raises(TaskConflict) as info:
            async with store.transaction() as tx:
                tx.update_task(claimed(t), TaskState.PENDING, 0)
        assert info.value.actual_state is None

    async def test_racing_claimers_exactly_one_wins(self, store: Store) -> None:
        t = task()
        await put(store, t)

        async def claim(agent: str) -> bool:
            try:
                async with store.transaction() as tx:
                    tx.update_task(claimed(t, agent), TaskState.PENDING, 0)
            except TaskConflict:
                return False
            return True

        wins = await asyncio.gather(*(claim(f"agent-{i}") for i in range(20)))
        assert sum(wins) == 1
        winner = await store.get_task(t.id)
        assert winner is not None
        assert winner.assigned_to == f"agent-{wins.index(True)}"

    async def test_pending_is_in_priority_order_then_by_id(self, store: Store) -> None:
        tasks = [task(f"t{i}", priority=p) for i, p in enumerate([1, 5, 3, 5, 0])]
        await put(store, *tasks)
        got = await store.pending_tasks(limit=10)
        want = sorted(tasks, key=lambda t: (-t.priority, t.id))
        assert [t.id for t in got] == [t.id for t in want]
        assert [t.id for t in await store.pending_tasks(limit=2)] == [t.id for t in want[:2]]
        assert await store.pending_tasks(limit=0) == []

    async def test_pending_pages_with_after(self, store: Store) -> None:
        tasks = [task(f"t{i}", priority=i % 3) for i in range(25)]
        await put(store, *tasks)
        seen: list[str] = []
        after = None
        while True:
            page = await store.pending_tasks(limit=7, after=after)
            if not page:
                break
            seen.extend(t.id for t in page)
            after = (page[-1].priority, page[-1].id)
        assert seen == [t.id for t in sorted(tasks, key=lambda t: (-t.priority, t.id))]

    async def test_pending_by_pool_and_capability_keys(self, store: Store) -> None:
        free = task("free")
        pooled = task("pooled", pool_id="p1")
        other_pool = task("other", pool_id="p2")
        needs_sum = task("sum", required_capabilities=("summarize>=1",))
        needs_two = task("two", pool_id="p1", required_capabilities=("translate", "summarize"))
        await put(store, free, pooled, other_pool, needs_sum, needs_two)

        async def ids(**kw: object) -> set[str]:
            return {t.objective for t in await store.pending_tasks(limit=100, **kw)}  # type: ignore[arg-type]

        # an agent in p1 with `summarize`: index keys (p1|none) x (summarize|none)
        assert await ids(pools=[None, "p1"], capabilities=[None, "summarize"]) == {
            "free",
            "pooled",
            "sum",
            "two",  # indexed under its smallest capability name; the caller checks the rest
        }
        assert await ids(pools=[None], capabilities=[None]) == {"free"}
        assert await ids(pools=["p2"], capabilities=[None]) == {"other"}
        assert await ids(pools=[None, "p1"], capabilities=[None, "translate"]) == {"free", "pooled"}
        assert await ids(pools=["p1"]) == {"pooled", "two"}
        assert await ids(capabilities=["summarize"]) == {"sum", "two"}
        assert await ids() == {"free", "pooled", "other", "sum", "two"}

    async def test_a_task_leaves_and_rejoins_pending_as_its_state_changes(
        self, store: Store
    ) -> None:
        t = task()
        await put(store, t)
        c = claimed(t, lease=50.0)
        async with store.transaction() as tx:
            tx.update_task(c, TaskState.PENDING, 0)
        assert await store.pending_tasks() == []
        assert [x.id for x in await store.expiring_tasks(50.0)] == [t.id]
        back = c.transition(TaskState.PENDING, at=2.0, assigned_to=None, lease_expires_at=None)
        async with store.transaction() as tx:
            tx.update_task(back, TaskState.CLAIMED, 1)
        assert [x.id for x in await store.pending_tasks()] == [t.id]
        assert await store.expiring_tasks(1e12) == []

    async def test_expiring_tasks_by_lease_time(self, store: Store) -> None:
        tasks = [task(f"t{i}") for i in range(5)]
        await put(store, *tasks)
        leases = [30.0, 10.0, 20.0, 40.0, 10.0]
        async with store.transaction() as tx:
            for t, lease in zip(tasks, leases, strict=True):
                tx.update_task(claimed(t, lease=lease), TaskState.PENDING, 0)
        running = claimed(tasks[3], lease=40.0).transition(TaskState.RUNNING, at=2.0)
        async with store.transaction() as tx:
            tx.update_task(running, TaskState.CLAIMED, 1)
        got = await store.expiring_tasks(20.0)
        want = sorted(
            (t for t, lease in zip(tasks, leases, strict=True) if lease <= 20.0),
            key=lambda t: (leases[tasks.index(t)], t.id),
        )
        assert [t.id for t in got] == [t.id for t in want]
        assert [t.id for t in await store.expiring_tasks(40.0, limit=1)] == [want[0].id]
        assert tasks[3].id in {t.id for t in await store.expiring_tasks(40.0)}  # RUNNING counts
        done = running.transition(TaskState.COMPLETED, at=3.0, result="ok", lease_expires_at=None)
        async with store.transaction() as tx:
            tx.update_task(done, TaskState.RUNNING, 1)
        assert tasks[3].id not in {t.id for t in await store.expiring_tasks(1e12)}

    async def test_stored_tasks_are_copies(self, store: Store) -> None:
        inputs = {"items": [1, 2]}
        t = task(inputs=inputs)
        await put(store, t)
        inputs["items"].append(3)
        stored = await store.get_task(t.id)
        assert stored is not None
        assert stored.inputs == {"items": [1, 2]}

    async def test_unstorable_task_is_refused_before_anything_is_written(
        self, store: Store
    ) -> None:
        tx = store.transaction()
        with pytest.raises(ValidationError) as info:
            tx.put_task(task(inputs={"x": object()}))
        assert info.value.field == "inputs"
        with pytest.raises(ValidationError):
            tx.put_task("not a task")  # type: ignore[arg-type]
        assert await store.pending_tasks() == []

    async def test_a_nan_or_an_infinity_in_inputs_or_result_is_refused(self, store: Store) -> None:
        tx = store.transaction()
        with pytest.raises(ValidationError) as info:
            tx.put_task(task(inputs={"x": [1.0, float("nan")]}))
        assert info.value.field == "inputs.x[1]"
        finished = msgspec.structs.replace(task(), result={"score": float("-inf")})
        with pytest.raises(ValidationError) as info:
            tx.put_task(finished)
        assert info.value.field == "result.score"
        tx.put_task(task(inputs={"text": "NaN and inf are fine as words", "x": 1.5}))
        await tx.commit()
        assert len(await store.pending_tasks()) == 1

    # -- write_task: one task and its event --------------------------------------------------------

    async def test_write_task_puts_and_updates_with_its_event(self, store: Store) -> None:
        t = task(inputs={"n": [1]})
        stored = await store.write_task(
            t, Event(kind="task.submitted", trace_id="tr", subject=t.id)
        )
        assert stored == t
        assert await store.get_task(t.id) == t
        first = claimed(t, "a")
        await store.write_task(
            first,
            Event(kind="task.claimed", trace_id="tr", actor="a", subject=t.id),
            expected_state=TaskState.PENDING,
            expected_attempts=0,
        )
        assert await store.get_task(t.id) == first
        assert [t.id for t in await store.pending_tasks()] == []
        events = await store.read(trace_id="tr")
        assert [(e.kind, e.seq) for e in events] == [("task.submitted", 1), ("task.claimed", 2)]

    async def test_write_task_conflict_writes_neither_task_nor_event(self, store: Store) -> None:
        t = task()
        await store.write_task(t, Event(kind="task.submitted", trace_id="tr"))
        with pytest.raises(TaskConflict) as info:
            await store.write_task(t, Event(kind="task.submitted", trace_id="tr"))
        assert info.value.expected_state is None
        with pytest.raises(TaskConflict) as info:
            await store.write_task(
                claimed(t),
                Event(kind="task.claimed", trace_id="tr"),
                expected_state=TaskState.CLAIMED,
                expected_attempts=1,
            )
        assert (info.value.actual_state, info.value.actual_attempts) == ("pending", 0)
        with pytest.raises(TaskConflict):
            missing = task()
            await store.write_task(
                claimed(missing),
                Event(kind="task.claimed", trace_id="tr"),
                expected_state="pending",  # type: ignore[arg-type]
            )
        assert await store.get_task(t.id) == t
        assert await store.last_seq() == 1

    async def test_write_task_refuses_bad_input_before_writing(self, store: Store) -> None:
        ok = Event(kind="task.submitted", trace_id="tr")
        with pytest.raises(ValidationError) as info:
            await store.write_task(task(inputs={"x": object()}), ok)
        assert info.value.field == "inputs"
        with pytest.raises(ValidationError):
            await store.write_task("not a task", ok)  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            await store.write_task(task(), "not an event")  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            await store.write_task(
                task(), Event(kind="task.submitted", trace_id="tr", data={"x": object()})
            )
        with pytest.raises(ValidationError) as info:
            await store.write_task(task(), ok, expected_state="nonsense")  # type: ignore[arg-type]
        assert info.value.field == "expected_state"
        assert await store.pending_tasks() == []
        assert await store.last_seq() == 0

    async def test_write_task_keeps_its_own_copy(self, store: Store) -> None:
        inputs = {"items": [1]}
        t = task(inputs=inputs)
        await store.write_task(t, Event(kind="task.submitted", trace_id="tr"))
        inputs["items"].append(2)
        stored = await store.get_task(t.id)
        assert stored is not None and stored.inputs == {"items": [1]}
        # an update derived from what the store returned, with a result of the caller's
        result = {"out": [1]}
        held = stored.transition(TaskState.CLAIMED, at=1.0, attempts=1, assigned_to="a")
        held = await store.write_task(
            held, Event(kind="task.claimed", trace_id="tr"), expected_state=TaskState.PENDING
        )
        final = held.transition(TaskState.COMPLETED, at=2.0, result=result)
        await store.write_task(
            final,
            Event(kind="task.completed", trace_id="tr"),
            expected_state=TaskState.CLAIMED,
            expected_attempts=1,
        )
        result["out"].append(2)
        stored = await store.get_task(t.id)
        assert stored is not None
        assert stored.inputs == {"items": [1]}
        assert stored.result == {"out": [1]}

    async def test_concurrent_writes_each_succeed_or_fail_alone(self, store: Store) -> None:
        # Many single-task units at once (one batch in a store that groups commits): racing
        # claimers of one task, claims of distinct tasks, and a put of a taken id.
        contested = task("contested")
        others = [task(f"t{i}") for i in range(30)]
        for t in [contested, *others]:
            await store.write_task(t, Event(kind="task.submitted", trace_id="tr", subject=t.id))

        async def claim(t: Task, agent: str) -> str | None:
            try:
                await store.write_task(
                    claimed(t, agent),
                    Event(kind="task.claimed", trace_id="tr", actor=agent, subject=t.id),
                    expected_state=TaskState.PENDING,
                )
            except TaskConflict:
                return None
            return agent

        async def put_taken() -> str | None:
            try:
                await store.write_task(others[0], Event(kind="task.submitted", trace_id="tr"))
            except TaskConflict:
                return None
            return "put"

        results = await asyncio.gather(
            *(claim(t, f"owner-{i}") for i, t in enumerate(others)),
            *(claim(contested, f"racer-{i}") for i in range(10)),
            put_taken(),
        )
        assert results[: len(others)] == [f"owner-{i}" for i in range(len(others))]
        racers = [r for r in results[len(others) : -1] if r is not None]
        assert len(racers) == 1
        assert results[-1] is None
        winner = await store.get_task(contested.id)
        assert winner is not None and winner.assigned_to == racers[0]
        claims = await store.read(kinds=["task.claimed"])
        assert len(claims) == len(others) + 1
        assert [e.seq for e in claims] == sorted(e.seq for e in claims)

    # -- write_tasks: a batch of task writes, each with its event ----------------------------------

    async def test_write_tasks_commits_each_write_with_its_event_in_order(
        self, store: Store
    ) -> None:
        first, second = task("one"), task("two")
        stored = await store.write_tasks(
            [
                TaskWrite(first, Event(kind="task.submitted", trace_id="a", subject=first.id)),
                TaskWrite(second, Event(kind="task.submitted", trace_id="b", subject=second.id)),
            ]
        )
        assert stored == [first, second]
        held = claimed(first, "agent-a")
        done = held.transition(TaskState.COMPLETED, at=2.0, result={"n": 1}, lease_expires_at=None)
        # Two writes of one task in one batch apply in order: the second sees the first.
        stored = await store.write_tasks(
            [
                TaskWrite(held, Event(kind="task.claimed", trace_id="a"), TaskState.PENDING, 0),
                TaskWrite(done, Event(kind="task.completed", trace_id="a"), TaskState.CLAIMED, 1),
            ]
        )
        assert stored == [held, done]
        assert await store.get_task(first.id) == done
        assert await store.get_task(second.id) == second
        assert [t.id for t in await store.pending_tasks()] == [second.id]
        assert await store.expiring_tasks(1e12) == []
        events = await store.read()
        assert [(e.kind, e.trace_id, e.seq) for e in events] == [
            ("task.submitted", "a", 1),
            ("task.submitted", "b", 2),
            ("task.claimed", "a", 3),
            ("task.completed", "a", 4),
        ]
        assert await store.write_tasks([]) == []
        assert await store.last_seq() == 4

    async def test_write_tasks_a_failed_write_fails_alone_and_writes_nothing(
        self, store: Store
    ) -> None:
        taken, free, other = task("taken"), task("free"), task("other")
        await put(store, taken, other)
        results = await store.write_tasks(
            [
                TaskWrite(claimed(other), Event(kind="task.claimed", trace_id="t1")),  # new?
                TaskWrite(free, Event(kind="task.submitted", trace_id="t2")),
                TaskWrite(
                    claimed(taken, "late"),
                    Event(kind="task.claimed", trace_id="t3"),
                    TaskState.CLAIMED,  # it is PENDING
                    1,
                ),
                TaskWrite(
                    claimed(other, "ok"),
                    Event(kind="task.claimed", trace_id="t4"),
                    TaskState.PENDING,
                    0,
                ),
            ]
        )
        first, second, third, fourth = results
        assert isinstance(first, TaskConflict) and first.expected_state is None
        assert (first.task_id, first.actual_state) == (other.id, "pending")
        assert second == free
        assert isinstance(third, TaskConflict)
        assert (third.task_id, third.actual_state, third.actual_attempts) == (
            taken.id,
            "pending",
            0,
        )
        assert fourth == claimed(other, "ok")
        assert await store.get_task(taken.id) == taken
        assert await store.get_task(other.id) == claimed(other, "ok")
        # Only the writes that held left an event, in the order of the batch.
        assert [e.trace_id for e in await store.read()] == ["t2", "t4"]

    async def test_write_tasks_refuses_bad_input_before_writing_anything(
        self, store: Store
    ) -> None:
        ok = Event(kind="task.submitted", trace_id="tr")
        good = TaskWrite(task(), ok)
        bad_batches: list[tuple[object, str]] = [
            ([good, "not a write"], "writes[1]"),
            ([good, TaskWrite("not a task", ok)], "writes[1].task"),  # type: ignore[arg-type]
            ([good, TaskWrite(task(), "not an event")], "writes[1]"),  # type: ignore[arg-type]
            ([good, TaskWrite(task(inputs={"x": object()}), ok)], "writes[1].task"),
            (
                [good, TaskWrite(task(), Event(kind="task.x", trace_id="t", data={"x": object()}))],
                "writes[1].event.data",
            ),
            (
                [good, TaskWrite(task(), Event(kind="Not A Kind", trace_id="t"))],
                "writes[1]",
            ),
            (
                [good, TaskWrite(task(), ok, "nonsense")],  # type: ignore[arg-type]
                "writes[1]",
            ),
            ([good, TaskWrite(task(), ok, TaskState.PENDING, -1)], "writes[1]"),
            ("not a list", "writes"),
        ]
        for batch, field in bad_batches:
            with pytest.raises(ValidationError) as info:
                await store.write_tasks(batch)  # type: ignore[arg-type]
            assert (info.value.field or "").startswith(field), (batch, info.value.field)
        assert await store.pending_tasks() == []
        assert await store.last_seq() == 0

    async def test_write_tasks_keeps_its_own_copy(self, store: Store) -> None:
        inputs = {"items": [1]}
        t = task(inputs=inputs)
        await store.write_tasks([TaskWrite(t, Event(kind="task.x", trace_id="t"))])
        inputs["items"].append(2)
        stored = await store.get_task(t.id)
        assert stored is not None and stored.inputs == {"items": [1]}
        result = {"out": [1]}
        done = claimed(stored).transition(TaskState.COMPLETED, at=2.0, result=result)
        await store.write_tasks(
            [
                TaskWrite(claimed(stored), Event(kind="task.y", trace_id="t"), TaskState.PENDING),
            ]
        )
        await store.write_tasks(
            [TaskWrite(done, Event(kind="task.z", trace_id="t"), TaskState.CLAIMED, 1)]
        )
        result["out"].append(2)
        kept = await store.get_task(t.id)
        assert kept is not None
        assert (kept.inputs, kept.result) == ({"items": [1]}, {"out": [1]})

    async def test_concurrent_write_tasks_claim_each_task_once(self, store: Store) -> None:
        tasks = [task(f"t{i}") for i in range(40)]
        await put(store, *tasks)

        async def claim_all(agent: str) -> list[str]:
            results = await store.write_tasks(
                [
                    TaskWrite(
                        claimed(t, agent),
                        Event(kind="task.claimed", trace_id="tr", actor=agent, subject=t.id),
                        TaskState.PENDING,
                        0,
                    )
                    for t in tasks
                ]
            )
            return [r.id for r in results if isinstance(r, Task)]

        won = await asyncio.gather(*(claim_all(f"agent-{i}") for i in range(5)))
        assert sorted(task_id for ids in won for task_id in ids) == sorted(t.id for t in tasks)
        for agent, ids in enumerate(won):
            for task_id in ids:
                stored = await store.get_task(task_id)
                assert stored is not None and stored.assigned_to == f"agent-{agent}"
        events = await store.read(kinds=["task.claimed"])
        assert sorted(e.subject for e in events) == sorted(t.id for t in tasks)

    async def test_atomic_write_tasks_writes_all_or_nothing(self, store: Store) -> None:
        taken = task("taken")
        await put(store, taken)
        fresh = [task(f"new-{i}") for i in range(3)]
        batch = [TaskWrite(t, Event(kind="task.submitted", trace_id=t.id)) for t in fresh]
        with pytest.raises(TaskConflict) as info:
            await store.write_tasks(
                [*batch, TaskWrite(taken, Event(kind="task.submitted", trace_id="x"))],
                atomic=True,
            )
        assert (info.value.task_id, info.value.actual_state) == (taken.id, "pending")
        assert [await store.get_task(t.id) for t in fresh] == [None, None, None]
        assert await store.last_seq() == 0
        held = claimed(fresh[0])
        stored = await store.write_tasks(
            [
                *batch,
                TaskWrite(held, Event(kind="task.claimed", trace_id="y"), TaskState.PENDING, 0),
            ],
            atomic=True,
        )
        assert stored == [*fresh, held]
        assert await store.get_task(fresh[0].id) == held
        assert [e.kind for e in await store.read()] == ["task.submitted"] * 3 + ["task.claimed"]
