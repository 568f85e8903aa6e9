"""What a node's agent is, and how the engine calls it.

An agent of a graph is one of:

- an ``Agent`` (instance, or a subclass that takes no arguments): its ``run(inputs, ctx)``;
- a callable ``fn(inputs)`` or ``fn(inputs, ctx)``, async or not;
- a ``"module:attr"`` string naming either of the above (``attr`` may be dotted).

A reference is imported by ``object_refs.import_object_ref``: one that is malformed or whose
module cannot be imported is a ``ValidationError`` at the reference's file and line, never the
import's own traceback.

A sync callable runs in the engine's bounded thread pool, so it cannot stall the event loop,
unless it is marked ``inline`` (``AgentSpec(fn, inline=True)``): then it runs on the loop, for
functions too quick to be worth a thread hop.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from converge.errors import AgentModeError, ValidationError
from converge.orchestration.object_refs import import_object_ref

if TYPE_CHECKING:
    from converge.core.agent import Agent, RunContext

__all__ = ["AgentSpec", "NodeAgent", "resolve_agent"]


class AgentSpec:
    """An agent with options: ``AgentSpec(fn_or_agent_or_ref, inline=True)``.

    Args:
        target: the agent, callable or ``"module:attr"`` reference.
        inline: run a sync callable on the event loop instead of the thread pool.
    """

    __slots__ = ("inline", "target")

    def __init__(self, target: Any, *, inline: bool = False) -> None:
        self.target = target
        self.inline = bool(inline)

    def __repr__(self) -> str:
        return f"AgentSpec({self.target!r}, inline={self.inline})"


class NodeAgent:
    """A resolved agent, ready to call.

    Attributes:
        name: the agent's name in the graph.
        fn: the callable: ``fn(inputs, ctx)`` when ``takes_ctx``, else ``fn(inputs)``.
        is_async: whether ``fn`` returns an awaitable.
        inline: whether a sync ``fn`` runs on the loop.
        agent: the ``Agent`` behind it, if any.
    """

    __slots__ = ("agent", "fn", "inline", "is_async", "name", "takes_ctx")

    def __init__(
        self,
        name: str,
        fn: Callable[..., Any],
        *,
        takes_ctx: bool,
        is_async: bool,
        inline: bool = False,
        agent: Agent | None = None,
    ) -> None:
        self.name = name
        self.fn = fn
        self.takes_ctx = takes_ctx
        self.is_async = is_async
        self.inline = inline
        self.agent = agent

    def __repr__(self) -> str:
        kind = "async" if self.is_async else ("inline" if self.inline else "thread")
        return f"NodeAgent({self.name!r}, {kind})"


def resolve_agent(
    name: str, target: Any, *, source: str | None = None, line: int | None = None
) -> NodeAgent:
    """Turn what the graph says an agent is into a ``NodeAgent``.

    Raises:
        ValidationError: the reference cannot be imported, or names something that is not an
            agent or a callable of one or two positional parameters.
    """
    inline = False
    if isinstance(target, AgentSpec):
        inline, target = target.inline, target.target
    field = f"agents.{name}"
    if isinstance(target, str):
        target = import_object_ref(
            target, field=field, source=source, line=line, what=f"agent {name!r}"
        )
    # Nothing can be an Agent unless the module that defines Agent was imported: checking
    # sys.modules keeps `converge validate` from importing the whole core for plain functions.
    core = sys.modules.get("converge.core.agent")
    agent_cls: type[Agent] | None = None if core is None else core.Agent
    if agent_cls is not None and isinstance(target, type) and issubclass(target, agent_cls):
        try:
            target = target()
        except TypeError as exc:
            raise ValidationError(
                f"agent {name!r}: {target.__name__}() needs arguments ({exc}); "
                "give an instance instead",
                field=field,
                source=source,
                line=line,
            ) from None
    if agent_cls is not None and isinstance(target, agent_cls):
        if not target.supports_run:
            raise AgentModeError(target.name, "run", f"as the graph agent {name!r}")
        return NodeAgent(name, target.run, takes_ctx=True, is_async=True, agent=target)
    if not callable(target):
        raise ValidationError(
            f"agent {name!r} is a {type(target).__name__}, not an Agent or a callable",
            field=field,
            source=source,
            line=line,
        )
    takes_ctx = _takes_ctx(name, target, field, source, line)
    return NodeAgent(name, target, takes_ctx=takes_ctx, is_async=_is_async(target), inline=inline)


def _takes_ctx(
    name: str, fn: Callable[..., Any], field: str, source: str | None, line: int | None
) -> bool:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False  # a builtin without a signature: call it with the inputs alone
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if any(p.kind is p.VAR_POSITIONAL for p in params) or len(positional) == 2:
        return True
    if len(positional) == 1 or (not positional and params):
        return False
    raise ValidationError(
        f"agent {name!r}: a node's callable takes (inputs) or (inputs, ctx), "
        f"not {len(positional)} required arguments",
        field=field,
        source=source,
        line=line,
    )


def _is_async(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - an object whose __call__ is async
    return call is not None and inspect.iscoroutinefunction(call)


def call_kwargs(agent: NodeAgent, inputs: Mapping[str, Any], ctx: RunContext) -> tuple[Any, ...]:
    """The positional arguments for ``agent.fn``."""
    return (inputs, ctx) if agent.takes_ctx else (inputs,)
