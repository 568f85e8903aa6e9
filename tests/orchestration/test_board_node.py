"""Board nodes: a node's work posted as a task and done by decentralized workers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from converge.coordination import PoolManager, TaskManager
from converge.core import (
    Agent,
    ClaimTask,
    Decision,
    FailTask,
    Message,
    ReportTask,
    Task,
    TaskState,
)
from converge.core.clock import Clock, ManualClock, system_clock
from converge.core.pool import Pool
from converge.errors import InvalidTransition, ValidationError
from converge.network import LocalNetwork
from converge.orchestration import (
    BoardTask,
    Engine,
    Graph,
    RetryPolicy,
    RunFailed,
    Services,
    Subgraph,
    loads_graph,
)
from converge.runtime import AgentRuntime, StandardExecutor
from converge.store import Store
from tests.orchestration._crash_harness import append, crash_and_resume, hang

WAIT = 10.0
Work = Callable[[Task], Awaitable[Any]]


class Worker(Agent):
    """Claims the first task it is shown and reports ``await work(task)``; an exception from
    ``work`` fails the task with its message instead."""

    def __init__(self, work: Work, **kw: Any) -> None:
        super().__init__(**kw)
        self.work = work

    async def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        if not tasks:
            return []
        task = tasks[0]
        try:
            result = await self.work(task)
        except Exception as exc:
            return [ClaimTask(task_id=task.id), FailTask(task_id=task.id, reason=str(exc))]
        return [ClaimTask(task_id=task.id), ReportTask(task_id=task.id, result=result)]


async def label(task: Task) -> Any:
    return {"label": str(task.inputs["prepare.output"]).upper(), "objective": task.objective}


@contextlib.asynccontextmanager
async def worker(
    board: TaskManager,
    work: Work = label,
    *,
    clock: Clock,
    pools: PoolManager | None = None,
    capabilities: Sequence[str] = ("label",),
) -> AsyncIterator[AgentRuntime]:
    net = LocalNetwork()
    agent = Worker(work, capabilities=capabilities)
    executor = StandardExecutor(network=net, tasks=board, pools=pools, clock=clock)
    async with AgentRuntime(
        agent, network=net, tasks=board, pools=pools, executor=executor, clock=clock
    ) as runtime:
        yield runtime


def graph(node: BoardTask, *, retries: int = 0, timeout: float | None = None) -> Graph:
    async def prepare(inputs: dict[str, Any]) -> str:
        return f"item {inputs['item']}"

    async def publish(inputs: dict[str, Any]) -> Any:
        return {"published": inputs["label.output"]}

    return (
        Graph("labelling")
        .add_node("prepare", prepare, inputs=["item"])
        .add_node(
            "label",
            node,
            inputs=["prepare.output"],
            timeout=timeout,
            retry=RetryPolicy(max_retries=retries, backoff="none"),
        )
        .add_node("publish", publish, inputs=["label.output"])
        .connect("prepare", "label")
        .connect("label", "publish")
    )


async def eventually(check: Callable[[], Any], timeout: float = WAIT) -> None:
    """Wait until ``check()`` holds (STYLE rule 19's assert_eventually)."""
    async with asyncio.timeout(timeout):
        while not await _call(check):  # noqa: ASYNC110 - a test's bounded wait for a condition
            await asyncio.sleep(0.005)


async def _call(check: Callable[[], Any]) -> Any:
    result = check()
    return await result if asyncio.iscoroutine(result) else result


async def _in_state(board: TaskManager, task_id: str, state: TaskState) -> bool:
    task = await board.get(task_id)
    return task is not None and task.state is state


async def submitted(store: Store) -> list[str]:
    return [e.subject or "" for e in await store.read(kinds=["task.submitted"])]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(time.time())


# -- the happy path --------------------------------------------------------------------------------


async def test_a_board_node_is_done_by_a_worker_in_its_pool(
    store: Store, clock: ManualClock
) -> None:
    pools = PoolManager(store, clock=clock)
    await pools.create_pool(Pool(name="labelers", id="labelers"))
    board = TaskManager(store, clock=clock)
    node = BoardTask(pool="labelers", capabilities=["label"], priority=4, objective="label it")
    async with worker(board, clock=clock, pools=pools) as runtime:
        await pools.join_pool(runtime.did, "labelers")
        engine = Engine(store, services=Services(tasks=board), id_factory=lambda: "r1")
        result = await engine.execute(graph(node), {"item": "a"})
    assert result.output == {"published": {"label": "ITEM A", "objective": "label it"}}
    task = await board.get("r1/label/1")  # the node's idempotency key
    assert task is not None
    assert (task.state, task.assigned_to, task.pool_id) == (
        TaskState.COMPLETED,
        runtime.did,
        "labelers",
    )
    assert (task.inputs, task.required_capabilities, task.priority) == (
        {"prepare.output": "item a"},
        ("label",),
        4,
    )
    assert await submitted(store) == ["r1/label/1"]


async def test_a_board_task_of_a_subgraph_is_in_the_root_run_s_trace(
    store: Store, clock: ManualClock
) -> None:
    board = TaskManager(store, clock=clock)
    outer = (
        Graph("outer")
        .add_node("start", lambda inputs: inputs["item"], inputs=["item"])
        .add_node("sub", Subgraph(graph(BoardTask()), inputs={"item": "start.output"}))
        .connect("start", "sub")
    )
    async with worker(board, clock=clock, capabilities=()):
        engine = Engine(store, services=Services(tasks=board), id_factory=lambda: "r1")
        result = await engine.execute(outer, {"item": "b"})
        trace = await engine.trace(result.run_id)
    assert result.output == {"published": {"label": "ITEM B", "objective": "label"}}
    task_id = "r1/sub/1/label/1"  # the child run's node's idempotency key
    logged = [e for e in await store.read(trace_id="r1") if e.kind.startswith("task.")]
    assert {e.subject for e in logged} == {task_id}
    assert [e.kind for e in logged][:1] == ["task.submitted"]
    tasks = [o for o in trace["coordination"] if o["type"] == "task"]
    assert [(o["id"], o["node"], o["status"]) for o in tasks] == [
        (task_id, "sub/label", "completed")
    ]
    # The child run's own trace lists the task too, under its own node name.
    child = await engine.trace("r1/sub/1")
    assert [(o["id"], o["node"]) for o in child["coordination"]] == [(task_id, "label")]


async def test_a_task_already_completed_is_read_not_posted_again(store: Store) -> None:
    board = TaskManager(store)
    await board.submit(Task(id="r1/label/1", objective="label", inputs={}))
    token = await board.claim("did:key:early", "r1/label/1")
    await board.report("did:key:early", "r1/label/1", {"label": "EARLY"}, token)
    engine = Engine(store, services=Services(tasks=board), id_factory=lambda: "r1")
    result = await engine.execute(graph(BoardTask()), {"item": "a"})
    assert result.output == {"published": {"label": "EARLY"}}
    assert await submitted(store) == ["r1/label/1"]


async def test_a_task_posted_by_another_process_meanwhile_is_waited_for(
    store: Store, clock: ManualClock
) -> None:
    elsewhere = TaskManager(store, clock=clock)

    class Racing(TaskManager):
        """Another process posts the node's task between its look and its submit."""

        async def get(self, task_id: str) -> Task | None:
            found = await super().get(task_id)
            if found is None and not await submitted(store):
                await elsewhere.submit(Task(id=task_id, objective="posted elsewhere"))
            return found

    board = Racing(store, clock=clock)
    async with worker(board, lambda task: _objective(task), clock=clock, capabilities=()):
        engine = Engine(store, services=Services(tasks=board), id_factory=lambda: "r1")
        result = await engine.execute(graph(BoardTask()), {"item": "a"})
    assert result.output == {"published": "posted elsewhere"}
    assert await submitted(store) == ["r1/label/1"]


async def _objective(task: Task) -> str:
    return task.objective


# -- failures, retries, deadlines ------------------------------------------------------------------


async def test_a_failed_task_fails_the_node_with_its_error(
    store: Store, clock: ManualClock
) -> None:
    async def refuse(task: Task) -> Any:
        raise RuntimeError("cannot read the item")

    board = TaskManager(store, clock=clock)
    async with worker(board, refuse, clock=clock):
        engine = Engine(store, services=Services(tasks=board), id_factory=lambda: "r1")
        with pytest.raises(RunFailed) as info:
            await engine.execute(graph(BoardTask()), {"item": "a"})
    result = info.value.result
    assert result.failed_node == "label"
    assert "board task r1/label/1 of node 'label' failed: cannot read the item" in (
        result.error or ""
    )


async def test_a_retry_after_a_failed_task_posts_a_fresh_one(
    store: Store, clock: ManualClock
) -> None:
    tries: list[str] = []

    async def flaky(task: Task) -> Any:
        tries.append(task.id)
        if len(tries) == 1:
            raise RuntimeError("first try breaks")
        return await label(task)

    board = TaskManager(store, clock=clock)
    async with worker(board, flaky, clock=clock):
        engine = Engine(store, services=Services(tasks=board), id_factory=lambda: "r1")
        result = await engine.execute(graph(BoardTask(), retries=2), {"item": "b"})
    assert result.output == {"published": {"label": "ITEM B", "objective": "label"}}
    assert tries == ["r1/label/1", "r1/label/1#2"]
    first, second = await board.get("r1/label/1"), await board.get("r1/label/1#2")
    assert first is not None and first.state is TaskState.FAILED
    assert second is not None and second.state is TaskState.COMPLETED
    assert await board.get("r1/label/1#3") is None  # each try posts at most one task


async def test_the_node_timeout_is_the_deadline_and_withdraws_the_task(store: Store) -> None:
    board = TaskManager(store)
    # A slow worker already holds the node's task (posted by an earlier process of the run).
    await board.submit(Task(id="r1/label/1", objective="label"))
    token = await board.claim("did:key:slow", "r1/label/1")
    engine = Engine(store, services=Services(tasks=board), id_factory=lambda: "r1")
    with pytest.raises(RunFailed) as info:
        await engine.execute(graph(BoardTask(), retries=1, timeout=0.05), {"item": "c"})
    assert "timed out after 0.05 s" in (info.value.result.error or "")
    for task_id in ("r1/label/1", "r1/label/1#2"):  # the retry posted a fresh task
        task = await board.get(task_id)
        assert task is not None and task.state is TaskState.CANCELLED, task_id
    with pytest.raises(InvalidTransition):  # the slow worker's late result is refused
        await board.report("did:key:slow", "r1/label/1", {"label": "LATE"}, token)
    assert await board.list_pending_tasks() == []


async def test_cancelling_the_run_withdraws_the_task(store: Store) -> None:
    board = TaskManager(store)
    async with Engine(store, services=Services(tasks=board), id_factory=lambda: "r1") as engine:
        handle = await engine.submit(graph(BoardTask()), {"item": "c"})
        await eventually(lambda: _in_state(board, "r1/label/1", TaskState.PENDING))
        result = await handle.cancel()
    assert result.status == "cancelled"
    task = await board.get("r1/label/1")
    assert task is not None and task.state is TaskState.CANCELLED
    assert "stopped waiting" in (task.error or "")


async def test_missing_inputs_are_left_out_of_the_task(store: Store, clock: ManualClock) -> None:
    async def broken(inputs: dict[str, Any]) -> str:
        raise RuntimeError("no notes today")

    async def show(task: Task) -> Any:
        return sorted(task.inputs)

    pipeline = (
        Graph("g")
        .add_node("notes", broken, on_error="skip")
        .add_node("label", BoardTask(), inputs=["item", "notes.output"])
        .connect("notes", "label")
    )
    board = TaskManager(store, clock=clock)
    async with worker(board, show, clock=clock, capabilities=()):
        result = await Engine(store, services=Services(tasks=board)).execute(
            pipeline, {"item": "x"}
        )
    assert result.output == ["item"]


async def test_a_board_node_whose_worker_dies_is_finished_by_another_after_the_lease(
    store: Store, clock: ManualClock
) -> None:
    board = TaskManager(store, claim_ttl_sec=30, clock=clock)
    net = LocalNetwork()
    grabbed = asyncio.Event()

    class Vanishing(Agent):
        """Claims the task, then dies without a word."""

        async def decide(
            self, messages: Sequence[Message], tasks: Sequence[Task]
        ) -> list[Decision]:
            if grabbed.is_set() or not tasks:
                return []
            grabbed.set()
            return [ClaimTask(task_id=tasks[0].id)]

    dying = Vanishing()
    executor = StandardExecutor(network=net, tasks=board, clock=clock)
    engine = Engine(store, services=Services(tasks=board), id_factory=lambda: "r1")
    async with asyncio.TaskGroup() as group:
        run = group.create_task(engine.execute(graph(BoardTask()), {"item": "d"}))
        async with AgentRuntime(dying, network=net, tasks=board, executor=executor, clock=clock):
            await eventually(lambda: _in_state(board, "r1/label/1", TaskState.CLAIMED))
        # The first worker is gone, its lease still held; the second one's reaper waits for it.
        async with worker(board, clock=clock) as second:
            await eventually(lambda: clock.sleepers >= 1)
            assert not run.done()
            clock.advance(31)
            result = await asyncio.wait_for(run, WAIT)
    assert result.output == {"published": {"label": "ITEM D", "objective": "label"}}
    task = await board.get("r1/label/1")
    assert task is not None
    assert (task.state, task.assigned_to, task.attempts) == (
        TaskState.COMPLETED,
        second.did,
        2,
    )
    [released] = [e.data for e in await store.read(kinds=["task.released"])]
    assert released["holder"] == dying.did
    assert await submitted(store) == ["r1/label/1"]


async def test_a_board_node_needs_the_engines_task_board(store: Store) -> None:
    with pytest.raises(RunFailed) as info:
        await Engine(store).execute(graph(BoardTask()), {"item": "e"})
    assert "Services(tasks=...)" in (info.value.result.error or "")


# -- options ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"pool": ""}, "pool"),
        ({"capabilities": "label"}, "capabilities"),
        ({"capabilities": ["Not A Capability!"]}, "capabilities"),
        ({"priority": "high"}, "priority"),
        ({"objective": ""}, "objective"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
    ],
)
def test_bad_options_name_the_option(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        BoardTask(**options)
    assert info.value.field == field


async def test_board_nodes_in_yaml(store: Store, clock: ManualClock) -> None:
    source = (
        "name: labelling\n"
        "nodes:\n"
        "  - {id: label, agent: labeler, inputs: [prepare.output]}\n"
        "  - {id: prepare, agent: prep, inputs: [item]}\n"
        "agents:\n"
        "  labeler: {kind: board, capabilities: [label], objective: label the item,\n"
        "            max_attempts: 2}\n"
    )

    async def prep(inputs: dict[str, Any]) -> str:
        return f"item {inputs['item']}"

    loaded = loads_graph(source, agents={"prep": prep})
    board = TaskManager(store, clock=clock)
    async with worker(board, clock=clock):
        engine = Engine(store, services=Services(tasks=board), id_factory=lambda: "r1")
        result = await engine.execute(loaded, {"item": "f"})
    assert result.output == {"label": "ITEM F", "objective": "label the item"}
    task = await board.get("r1/label/1")
    assert task is not None and task.max_attempts == 2


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ("{kind: board, pool: labelers, capabilties: [label]}", "agents.labeler.capabilties"),
        ("{kind: board, priority: high}", "agents.labeler.priority"),
        ("{kind: board, capabilities: label}", "agents.labeler.capabilities"),
    ],
)
def test_bad_yaml_options_name_file_line_and_key(entry: str, field: str) -> None:
    source = f"name: g\nnodes:\n  - {{id: a, agent: labeler}}\nagents:\n  labeler: {entry}\n"
    with pytest.raises(ValidationError) as info:
        loads_graph(source, source="g.yaml")
    assert (info.value.field, info.value.source, info.value.line) == (field, "g.yaml", 5)


# -- crash and resume ------------------------------------------------------------------------------

TTL = 30.0


@contextlib.asynccontextmanager
async def crash_setup(
    store: Store, log: Path, crash: bool
) -> AsyncIterator[tuple[Graph, Services, dict[str, Any]]]:
    """A pipeline whose board node's worker, in the child, claims the task and hangs there.

    The parent's board reads a clock already past that worker's lease, so its own worker's
    reaper returns the task to the board at once, and the worker finishes it.
    """
    clock: Clock = system_clock if crash else ManualClock(time.time() + TTL + 60)
    board = TaskManager(store, claim_ttl_sec=TTL, clock=clock)

    async def prepare(inputs: dict[str, Any]) -> str:
        append(log, "prepare done")
        return f"item {inputs['item']}"

    async def publish(inputs: dict[str, Any]) -> Any:
        append(log, "publish done")
        return {"published": inputs["label.output"]}

    class Dying(Agent):
        """Claims the task it is shown and dies holding it."""

        async def decide(
            self, messages: Sequence[Message], tasks: Sequence[Task]
        ) -> list[Decision]:
            if tasks:
                await board.claim(self.did, tasks[0].id, capabilities=self.capabilities)
                append(log, f"claimed {tasks[0].id}")
                await hang(log)
            return []

    async def finish(task: Task) -> Any:
        append(log, f"finished {task.id}")
        return await label(task)

    pipeline = (
        Graph("labelling")
        .add_node("prepare", prepare, inputs=["item"])
        .add_node("label", BoardTask(capabilities=["label"]), inputs=["prepare.output"])
        .add_node("publish", publish, inputs=["label.output"])
        .connect("prepare", "label")
        .connect("label", "publish")
    )
    net = LocalNetwork()
    agent: Agent = (
        Dying(capabilities=["label"]) if crash else Worker(finish, capabilities=["label"])
    )
    executor = StandardExecutor(network=net, tasks=board, clock=clock)
    async with AgentRuntime(agent, network=net, tasks=board, executor=executor, clock=clock):
        yield pipeline, Services(tasks=board), {"item": "g"}


@pytest.mark.slow
async def test_a_board_node_killed_mid_run_resumes_in_a_new_process(tmp_path: Path) -> None:
    result, lines = await crash_and_resume(
        tmp_path, "tests.orchestration.test_board_node:crash_setup"
    )
    assert result.output == {"published": {"label": "ITEM G", "objective": "label"}}
    assert lines == [
        "prepare done",
        "claimed crash-run/label/1",  # in the child, which was killed holding the lease
        "finished crash-run/label/1",  # in the parent: the same task, not a second one
        "publish done",
    ]
    from converge.store import SQLiteStore

    async with await SQLiteStore.open(tmp_path / "runs.db") as store:
        assert await submitted(store) == ["crash-run/label/1"]
        task = await store.get_task("crash-run/label/1")
        assert task is not None
        assert (task.state, task.attempts) == (TaskState.COMPLETED, 2)
