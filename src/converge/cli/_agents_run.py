"""``converge agents run``: the decentralized runtime as a command.

Seed 000's runtime, as a long-running command.

One ``AgentRuntime`` per agent of the file (see ``_agents_config``), all sharing one
``LocalNetwork`` and one ``TaskManager``, ``PoolManager`` and ``DiscoveryService`` over the
configured SQLite store. Tasks other processes put on the board wake the agents through the
store's follower. A bad file is ``file:line: message``, exit 2, before the store is opened. A
board worker (a plain callable, see ``_agents_config``) takes one task per ``decide()`` —
claim, then report ``fn(task)`` or fail it with the exception (or with the encoding error, when
the result is not something the board can store) — choosing among those it sees by
a per-worker hash order, so workers seldom race for one task, and sends itself a message while
more tasks are visible (the board wakes a runtime only when a task becomes PENDING). An agent
without a ``key`` file gets a new identity each start.

The command runs until SIGINT (Ctrl-C) or SIGTERM, or until every agent has stopped on its own
(a budget in its ``limits`` ran out, or its runtime failed — its ``max_consecutive_failures``
decisions failed in a row, say: a line says so for each as it happens; the command then exits 1
if any failed, else 0). On a signal:

1. stops every runtime, in reverse start order, after its current ``decide()`` and the
   decisions it made (each agent is unregistered from discovery and logs ``runtime.stopped``);
2. closes the network, then the store.

A claim an agent still holds at that point is *not* released: its lease is left to expire, and
any runtime on the board (this command's next start, or another process) returns the task to
PENDING then. Releasing it eagerly would hand the task to another worker while this one may
still be reporting it. A shutdown by signal is the normal way to stop the command: it exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from converge.cli._agents_config import AgentEntry, AgentsConfig, PoolSpec
from converge.cli._config import Settings
from converge.core.agent import Agent
from converge.core.decisions import ClaimTask, Decision, FailTask, ReportTask, SendMessage
from converge.core.identity import Identity
from converge.core.message import Message
from converge.core.signing import check_finite, maybe_nonfinite
from converge.core.task import Task
from converge.core.user_code import call_in_thread, is_interruption
from converge.errors import ConflictError, StateError, ValidationError

if TYPE_CHECKING:
    from converge.network.transport import Transport

__all__ = ["AgentHost", "build_agent", "build_agents", "run_agents"]

_WAKE = "converge.board_worker.more"


class _BoardWorker(Agent):
    """A callable as a board worker: claim visible tasks (up to ``claim_batch`` at a time),
    report ``fn(task)`` for each."""

    def __init__(self, fn: Callable[[Task], Any], name: str, claim_batch: int = 1) -> None:
        super().__init__(name=name)
        self.fn = fn
        self.claim_batch = claim_batch
        self._async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - an object whose __call__ is async
        )

    async def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        if not tasks:
            return []
        # Each worker tries the tasks in its own order, so workers seldom race for one task.
        chosen = sorted(tasks, key=lambda t: hashlib.sha256(f"{self.did}{t.id}".encode()).digest())[
            : self.claim_batch
        ]
        outcomes = await asyncio.gather(*(self._run(task) for task in chosen))
        # Claims, then reports, then failures, each in a row: the runtime applies a run of
        # claims (or reports) as one unit of the board.
        decisions: list[Decision] = [ClaimTask(task_id=task.id) for task in chosen]
        decisions += [o for o in outcomes if isinstance(o, ReportTask)]
        decisions += [o for o in outcomes if isinstance(o, FailTask)]
        if len(tasks) > len(chosen):
            # The board only wakes a runtime when a task becomes PENDING: a note to itself
            # brings the worker back for the tasks it has not taken yet.
            decisions.append(SendMessage(kind=_WAKE, recipient=self.did))
        return decisions

    async def _run(self, task: Task) -> ReportTask | FailTask:
        try:
            result = await (self.fn(task) if self._async else call_in_thread(self.fn, task))
        except BaseException as exc:  # the function's failure is the task's, not the runtime's
            if is_interruption(exc):
                raise
            return FailTask(task_id=task.id, reason=f"{type(exc).__name__}: {exc}")
        try:
            if maybe_nonfinite(msgspec.msgpack.encode(result)):  # as the board will store it
                check_finite(result, "result")
        except (TypeError, ValueError, msgspec.EncodeError, ValidationError) as exc:
            # Reported, it would be refused and the task left claimed until its lease ran out,
            # to be run again: the result is the function's failure, now.
            reason = f"the result cannot be stored: {type(exc).__name__}: {exc}"
            return FailTask(task_id=task.id, reason=reason)
        return ReportTask(task_id=task.id, result=result)


def build_agents(
    config: AgentsConfig, *, create_keys: bool = True
) -> list[tuple[AgentEntry, Agent]]:
    """Every agent of ``config``, built (``ValidationError`` with file and line); with
    ``create_keys=False`` a missing key file is left to be created on the first start."""
    return [(spec, build_agent(spec, config.source, create_keys)) for spec in config.agents]


def build_agent(spec: AgentEntry, source: str, create_keys: bool = True) -> Agent:
    """The agent ``spec`` names, with its name, key and capabilities applied."""
    from converge.core.capability import CapabilitySet
    from converge.orchestration.object_refs import import_object_ref

    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)  # project modules resolve from where the command runs
    field = f"agents.{spec.name}.ref"
    target = import_object_ref(spec.ref, field=field, source=source, line=spec.line)
    if isinstance(target, type) and issubclass(target, Agent):
        try:
            target = target()
        except TypeError as exc:
            raise ValidationError(
                f"{target.__name__}() needs arguments ({exc}); name an instance instead",
                field=field,
                source=source,
                line=spec.line,
            ) from None
    if isinstance(target, Agent):
        agent = target
        if spec.claim_batch != 1:
            raise ValidationError(
                f"agent {spec.name!r} is an Agent, which decides how many tasks it claims: "
                "claim_batch is for board workers (callables)",
                field=f"agents.{spec.name}.claim_batch",
                source=source,
                line=spec.line,
            )
        if not agent.supports_decide:
            raise ValidationError(
                f"agent {spec.name!r} does not implement decide(), so it cannot run here",
                field=field,
                source=source,
                line=spec.line,
            )
        agent.name = spec.name
    elif callable(target):
        agent = _BoardWorker(target, spec.name, spec.claim_batch)
    else:
        raise ValidationError(
            f"{spec.ref} is a {type(target).__name__}, not an Agent or a callable",
            field=field,
            source=source,
            line=spec.line,
        )
    if spec.key is not None:
        if create_keys or spec.key.exists():
            agent.identity = _identity(spec, source)
    if spec.capabilities is not None:
        try:
            agent.capabilities = CapabilitySet(spec.capabilities)
        except ValidationError as exc:
            raise ValidationError(
                str(exc), field=f"agents.{spec.name}.capabilities", source=source, line=spec.line
            ) from None
    return agent


def _identity(spec: AgentEntry, source: str) -> Identity:
    from converge.errors import IdentityError

    assert spec.key is not None
    try:
        if spec.key.exists():
            return Identity.load(spec.key)
        identity = Identity.generate()
        spec.key.parent.mkdir(parents=True, exist_ok=True)
        identity.save(spec.key)
        return identity
    except (IdentityError, OSError) as exc:
        raise ValidationError(
            f"key {spec.key}: {exc}", field=f"agents.{spec.name}.key", source=source, line=spec.line
        ) from None


class AgentHost:
    """The runtimes of an agents file, over coordination services shared with their host:
    ``start()`` creates the file's pools (joining them if they exist), joins each agent to its
    pools and starts its runtime; ``stop(reason)`` stops those still running, in reverse start
    order. ``converge agents run`` hosts them alone; ``converge run --agents`` beside a run.
    """

    def __init__(
        self,
        config: AgentsConfig,
        agents: list[tuple[AgentEntry, Agent]],
        *,
        network: Transport,
        tasks: Any,
        pools: Any,
        discovery: Any,
        executor: Any,
        echo: Callable[[str], None],
    ) -> None:
        self.config = config
        self.agents = agents
        self.network = network
        self.tasks = tasks
        self.pools = pools
        self.discovery = discovery
        self.executor = executor
        self.echo = echo
        self.started: list[tuple[str, Any]] = []
        """(agent name, runtime) in start order."""
        self.ended: dict[str, tuple[str, bool]] = {}
        """Agents whose runtime ended on its own: why, and whether it failed."""
        self._stopped: set[str] = set()

    def by_name(self) -> dict[str, Agent]:
        """The agents by their name in the file."""
        return {spec.name: agent for spec, agent in self.agents}

    async def start(self) -> None:
        """Create the pools and start every agent's runtime (stopping those already started if
        one cannot start)."""
        from converge.runtime import AgentRuntime

        await _ensure_pools(self.pools, self.config.pools)
        tokens = {p.id: os.environ.get(p.token_env or "", "") for p in self.config.pools}
        try:
            for spec, agent in self.agents:
                for pool_id in spec.pools:
                    await self.pools.join_pool(
                        agent.did,
                        pool_id,
                        {"token": tokens[pool_id]} if tokens[pool_id] else None,
                        capabilities=agent.capabilities,
                    )
                runtime = AgentRuntime(
                    agent,
                    network=self.network,
                    tasks=self.tasks,
                    pools=self.pools,
                    discovery=self.discovery,
                    executor=self.executor,
                    max_batch=spec.max_batch,
                    max_consecutive_failures=spec.max_consecutive_failures,
                    limits=spec.limits,
                    policy=spec.policy,
                )
                runtime.start()
                self.started.append((spec.name, runtime))
                self.echo(f"agent {spec.name} started ({agent.did})")
        except BaseException:
            await self.stop("shutdown")
            raise

    async def stop(self, reason: str) -> None:
        """Stop every runtime that has not ended on its own, newest first."""
        for name, runtime in reversed(self.started):
            if name not in self.ended and name not in self._stopped:
                self._stopped.add(name)
                await _stop(name, runtime, self.echo, reason)


async def run_agents(cfg: Settings, config: AgentsConfig, echo: Callable[[str], None]) -> None:
    """Run the agents of ``config`` until SIGINT or SIGTERM, then stop them and close the store."""
    from converge.cli._run import open_store
    from converge.coordination import Consensus, DiscoveryService, PoolManager, TaskManager
    from converge.network import LocalNetwork
    from converge.runtime import StandardExecutor

    agents = build_agents(config)  # a bad reference is found before the store is opened
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with await open_store(cfg, create=True) as store, LocalNetwork() as network:
            board = TaskManager(store)
            pools = PoolManager(store)
            # Votes cast here go on the store's ballots, wherever they were opened.
            executor = StandardExecutor(
                network=network, tasks=board, pools=pools, votes_store=Consensus(store)
            )
            host = AgentHost(
                config,
                agents,
                network=network,
                tasks=board,
                pools=pools,
                discovery=DiscoveryService(store),
                executor=executor,
                echo=echo,
            )
            try:
                await host.start()
                host.ended = await _until_stopped(stop, host.started, echo)
            finally:
                # A signal, or the command ending early (a later agent could not start).
                await host.stop("signal" if stop.is_set() else "shutdown")
        started, ended = host.started, host.ended
        echo(f"stopped {len(started)} agent(s); store {cfg.store} closed")
        failed = [f"{name} {why}" for name, (why, broke) in ended.items() if broke]
        if started and len(ended) == len(started) and failed:
            raise StateError(f"every agent stopped on its own: {'; '.join(failed)}")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _until_stopped(
    stop: asyncio.Event, started: list[tuple[str, Any]], echo: Callable[[str], None]
) -> dict[str, tuple[str, bool]]:
    """Wait for the signal, or for every runtime to end on its own; says so for each one as it
    ends. Returns, by agent name, why each ended and whether it failed."""
    ended: dict[str, tuple[str, bool]] = {}
    watching = {asyncio.ensure_future(runtime.wait()): (name, runtime) for name, runtime in started}
    signalled = asyncio.ensure_future(stop.wait())
    try:
        while watching:
            done, _ = await asyncio.wait(
                {signalled, *watching}, return_when=asyncio.FIRST_COMPLETED
            )
            if signalled in done:
                break
            for fut in done:
                name, runtime = watching.pop(fut)
                if fut.cancelled():
                    why, broke = "cancelled", True
                elif (error := fut.exception()) is not None:
                    why, broke = f"failed: {_describe(error)}", True
                else:  # a budget ran out: a planned end
                    why, broke = runtime.stop_reason or "ended", False
                ended[name] = (why, broke)
                echo(f"agent {name} stopped on its own ({why})")
    finally:
        for fut in (signalled, *watching):
            fut.cancel()
    return ended


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


async def _stop(name: str, runtime: Any, echo: Callable[[str], None], reason: str) -> None:
    try:
        await runtime.shutdown(reason)
    except Exception as exc:  # one agent's crash must not keep the others running
        echo(f"agent {name} stopped (failed: {_describe(exc)})")
        return
    echo(f"agent {name} stopped ({runtime.stop_reason})")


async def _ensure_pools(pools: Any, specs: tuple[PoolSpec, ...]) -> None:
    import msgspec

    from converge.core.pool import Pool
    from converge.policy.admission import token_admission

    for spec in specs:
        admission: dict[str, Any] = {}
        if spec.admission == "token":
            admission = msgspec.to_builtins(token_admission(os.environ[spec.token_env or ""]))
        with contextlib.suppress(ConflictError):  # created by an earlier start: join it
            await pools.create_pool(Pool(name=spec.name, id=spec.id, admission=admission))
