"""``BoardTask``: a node whose work is a task on the board.

Decentralized workers do it (``kind: board``).

```python
graph.add_node("label", BoardTask(pool="labelers", capabilities=["label"]), timeout=600)
```
```yaml
agents:
  labeler: {kind: board, pool: labelers, capabilities: [label], priority: 5}
```

The node puts a task on the engine's ``TaskManager`` (``Services(tasks=...)``) whose inputs are
the node's inputs and waits until a worker (an ``AgentRuntime``, a process elsewhere sharing
the store) completes it; the task's result is the node's output. A task that ends FAILED or
CANCELLED fails the node's try with ``BoardTaskFailed``, so the node's ``retry`` and
``on_error`` apply.

**The same task across retries and resumes.** The task's id is the node's
``idempotency_key`` (``run/node/iteration``, the ``task_id`` its ``node.start`` events name).
A try first looks for the tasks it may already have: the chain ``key``, ``key#2``,
``key#3``… is walked to its first task that did not end FAILED or CANCELLED. A COMPLETED one
gives its result at once; an unfinished one is waited for (a node killed with its process and
resumed waits for the task it posted — no second task is posted); an absent one is submitted.
So a task that ended without a result is never waited on again: the next try (a retry, or a
resume of the failed run) posts a fresh one, ``key#n``, and each try posts at most one.
A ``TaskConflict`` on submit means the task is already there (another process resuming the
same run posted it): it is waited for. The task's events are in the run's trace
(``ctx.trace_id``: a subgraph's child run shares its root's), so the root run's trace shows it.

**Deadline.** The node's ``timeout`` (per try) is the deadline: the engine cancels the try when
it runs out. A try that is cancelled — its timeout, the run cancelled, the run aborted by
another node's failure — withdraws its task (``CANCELLED``), so no worker goes on with work
nobody will read, and the worker's late report is refused. A process killed outright cannot
withdraw anything: its task stays on the board, and the resumed node waits for it.

Inputs that are ``MISSING`` (from a skipped node) are left out of the task's inputs. Options:
``pool``, ``capabilities``, ``priority``, ``objective`` (default the node id) and
``max_attempts`` (the claims a lapsing lease may use up). The lease's length is the board's
(``claim_ttl_sec``), not the node's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping
from itertools import count
from typing import TYPE_CHECKING, Any

from converge.core.capability import Requirement
from converge.core.task import Task, TaskState
from converge.errors import BoardTaskFailed, ConvergeError, TaskConflict, ValidationError
from converge.orchestration._context import NodeContext
from converge.orchestration._refs import MISSING
from converge.orchestration.kinds import Kind, KindContext
from converge.orchestration.services import Needs

if TYPE_CHECKING:
    from converge.coordination.task_manager import TaskManager

__all__ = ["KIND", "BoardTask", "BoardTaskFailed"]

_ENDED_WITHOUT_RESULT = frozenset({TaskState.FAILED, TaskState.CANCELLED})


class BoardTask:
    """A node done by whichever worker on the board claims its task.

    Args:
        pool: only members of this pool may see and claim the task (None: any agent).
        capabilities: requirements a claimer must meet, all of them (``"label>=1.2"``).
        priority: higher is claimed first.
        objective: what the task asks, in words a worker understands (default: the node's id).
        max_attempts: claims allowed before an expired lease fails the task (each claim that
            lapses — a worker that died or stalled — returns it to the board until then).

    Raises:
        ValidationError: a bad option, naming it.
    """

    def __init__(
        self,
        *,
        pool: str | None = None,
        capabilities: Iterable[str] = (),
        priority: int = 0,
        objective: str | None = None,
        max_attempts: int = 3,
    ) -> None:
        caps = _check(pool, capabilities, priority, objective, max_attempts, _invalid)
        self.pool = pool
        self.capabilities = caps
        self.priority = priority
        self.objective = objective
        self.max_attempts = max_attempts
        self.name = f"board:{pool}" if pool else "board"

    async def __call__(self, inputs: dict[str, Any], ctx: NodeContext) -> Any:
        board: TaskManager = ctx.services.need("tasks", ctx.node_id, "board")
        task_id, task = await self._current(board, ctx.idempotency_key)
        try:
            if task is None:
                task = await self._submit(board, task_id, inputs, ctx)
            if not task.is_terminal:
                task = await board.wait(task_id)
        except asyncio.CancelledError:
            # The deadline passed, or the run stopped: withdraw the task so no worker goes on
            # with it. The write must survive this cancellation (and a second one).
            await _withdraw(board, task_id, ctx)
            raise
        if task.state is TaskState.COMPLETED:
            return task.result
        raise BoardTaskFailed(ctx.node_id, task_id, task.state.value, task.error)

    @staticmethod
    async def _current(board: TaskManager, key: str) -> tuple[str, Task | None]:
        """The try's task id, and its task if it is on the board: the first of the node's
        chain (``key``, ``key#2``…) that is free or did not end without a result."""
        for n in count(1):
            task_id = key if n == 1 else f"{key}#{n}"
            task = await board.get(task_id)
            if task is None or task.state not in _ENDED_WITHOUT_RESULT:
                return task_id, task
        raise AssertionError("unreachable")  # pragma: no cover

    async def _submit(
        self, board: TaskManager, task_id: str, inputs: dict[str, Any], ctx: NodeContext
    ) -> Task:
        try:
            return await board.submit(self.task(task_id, inputs, ctx), actor=_actor(ctx))
        except TaskConflict:
            # Posted meanwhile (another process resuming the same run): it is ours to wait for.
            found = await board.get(task_id)
            if found is None:
                raise
            return found

    def task(self, task_id: str, inputs: Mapping[str, Any], ctx: NodeContext) -> Task:
        """The task this node posts for one try."""
        return Task(
            id=task_id,
            objective=self.objective or ctx.node_id,
            inputs={k: v for k, v in inputs.items() if v is not MISSING},
            pool_id=self.pool,
            required_capabilities=self.capabilities,
            priority=self.priority,
            max_attempts=self.max_attempts,
            trace_id=ctx.trace_id,  # the root run's trace, which a child run shares
        )

    def needs(self) -> Needs:
        """The task board; its workers may run anywhere that shares the store."""
        return Needs("board", ("tasks",), "workers", across_processes=True)

    def __repr__(self) -> str:
        opts = [f"pool={self.pool!r}"] if self.pool else []
        if self.capabilities:
            opts.append(f"capabilities={list(self.capabilities)!r}")
        return f"BoardTask({', '.join(opts)})"


_Fail = Callable[[str, str], Exception]


def _invalid(message: str, option: str) -> Exception:
    return ValidationError(message, field=option)


def _check(
    pool: Any, capabilities: Any, priority: Any, objective: Any, max_attempts: Any, fail: _Fail
) -> tuple[str, ...]:
    """The options checked (``fail(message, option)`` makes the error); returns the
    requirements as a tuple."""
    if pool is not None and (not isinstance(pool, str) or not pool):
        raise fail(f"pool is a pool id, not {pool!r}", "pool")
    if isinstance(capabilities, str) or not isinstance(capabilities, Iterable):
        raise fail(f"capabilities is a list of requirements, not {capabilities!r}", "capabilities")
    caps = tuple(capabilities)
    for req in caps:
        if not isinstance(req, str):
            raise fail(f"a capability requirement is a string, not {req!r}", "capabilities")
        try:
            Requirement.parse(req)
        except ValidationError:
            raise fail(f"invalid capability requirement {req!r}", "capabilities") from None
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise fail(f"priority is an int, not {priority!r}", "priority")
    if objective is not None and (not isinstance(objective, str) or not objective):
        raise fail(f"objective is a non-empty string, not {objective!r}", "objective")
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise fail(f"max_attempts is an int >= 1, not {max_attempts!r}", "max_attempts")
    return caps


def _actor(ctx: NodeContext) -> str:
    identity = ctx.services.identity
    return identity.did if identity is not None else ""


async def _withdraw(board: TaskManager, task_id: str, ctx: NodeContext) -> None:
    reason = f"node {ctx.node_id!r} stopped waiting (its timeout, or the run stopped)"
    # A worker may have finished it just now (its report stands), or the write may fail: the
    # try is being cancelled either way, and that is what the caller hears. Cancelled again
    # meanwhile, the shielded write still goes on to the end.
    with contextlib.suppress(ConvergeError, asyncio.CancelledError):
        await asyncio.shield(board.cancel_task(task_id, reason, actor=_actor(ctx)))


def _read(options: Mapping[str, Any], ctx: KindContext) -> BoardTask:
    found = ctx.options(options, _OPTIONS)
    _check(
        found.get("pool"),
        found.get("capabilities", ()),
        found.get("priority", 0),
        found.get("objective"),
        found.get("max_attempts", 3),
        ctx.fail,
    )
    return BoardTask(**found)


_OPTIONS = {
    "pool": "Post the task in this pool (only its members see it).",
    "capabilities": "Capabilities a worker needs to claim it (each may carry a version range).",
    "priority": "Higher is claimed first (default 0).",
    "objective": "What the task asks, in words (default: the node's id).",
    "max_attempts": "Claims a lapsing lease may use up before the task fails (default 3).",
}
KIND = Kind(
    "board",
    _read,
    options=_OPTIONS,
    doc="Posts the node's inputs as a task on the board and waits for a decentralized worker.",
)
