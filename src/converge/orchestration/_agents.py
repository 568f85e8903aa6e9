"""What a node's agent is, and how the engine calls it.

An agent of a graph is one of:

- an ``Agent`` (instance, or a subclass that takes no arguments): its ``run(inputs, ctx)``;
- a callable ``fn(inputs)`` or ``fn(inputs, ctx)``, async or not;
- a ``"module:attr"`` string naming either of the above (``attr`` may be dotted).

A reference whose module cannot be imported is a ``ValidationError`` at the reference's file and
line, never the import's own traceback: a module not found says where modules are looked up
(the current directory when it is on ``sys.path``, as the ``converge`` command puts it,
``PYTHONPATH`` and the installed packages); a module that raises while it is imported (a
``SyntaxError``, a ``KeyError`` from ``os.environ[...]``…) names the error and the file and line
it was raised at, and keeps it as ``__cause__``.

A sync callable runs in the engine's bounded thread pool, so it cannot stall the event loop,
unless it is marked ``inline`` (``AgentSpec(fn, inline=True)``): then it runs on the loop, for
functions too quick to be worth a thread hop.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import sysconfig
import traceback
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from converge.errors import AgentModeError, ValidationError

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
        target = _import(target, field, source, line, what=f"agent {name!r}")
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


def _import(
    ref: str, field: str, source: str | None, line: int | None, *, what: str | None = None
) -> Any:
    """What ``ref`` (``"module:attr"``) names; every failure is a ``ValidationError`` at
    ``source``:``line`` (``what`` names the reference in messages: ``"agent 'writer'"``)."""
    label = repr(ref) if what is None else f"{what} ({ref})"

    def fail(message: str) -> ValidationError:
        return ValidationError(f"{label}: {message}", field=field, source=source, line=line)

    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ValidationError(
            f"an agent reference is 'module:attr', not {ref!r}",
            field=field,
            source=source,
            line=line,
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (
            module_name == exc.name or module_name.startswith(exc.name + ".")
        ):
            raise fail(f"no module named {exc.name!r}; {_search_path()}") from exc
        raise fail(f"importing {module_name} failed: {_describe(exc)}") from exc
    except (Exception, SystemExit) as exc:  # the module's own code failed while it was imported
        raise fail(f"importing {module_name} failed: {_describe(exc)}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise fail(f"{module_name} has no attribute {attr!r}") from None
    return obj


def _search_path() -> str:
    """Where ``import`` looks for a module, in words, for a "not found" message."""
    cwd = os.getcwd()
    pythonpath = os.environ.get("PYTHONPATH")
    env = f"PYTHONPATH ({pythonpath})" if pythonpath else "PYTHONPATH (not set)"
    if any(os.path.abspath(entry or os.curdir) == cwd for entry in sys.path):
        return (
            f"modules are looked up in the current directory ({cwd}), {env} and the "
            "installed packages"
        )
    return (
        f"modules are looked up in {env} and the installed packages, not in the current "
        f"directory ({cwd}): add the module's directory to PYTHONPATH"
    )


def _describe(exc: BaseException) -> str:
    """``KeyError: 'API_KEY' (mymod.py:3)``: the error and where it was raised."""
    if isinstance(exc, SyntaxError):
        text = exc.msg
        where = _location(exc.filename, exc.lineno) if exc.filename else _raised_at(exc)
    else:
        text = str(exc)
        where = _raised_at(exc)
    out = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return f"{out} ({where})" if where else out


def _raised_at(exc: BaseException) -> str | None:
    """The file:line an import's error was raised at: the deepest frame of the user's own code
    (not Python's, not an installed package's, not converge's), else of an installed package."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith("<") and not _under(f.filename, (_OWN,))
    ]
    for outside in (_LIBRARY_DIRS, _STDLIB_DIRS):
        for frame in reversed(frames):
            if not _under(frame.filename, outside):
                return _location(frame.filename, frame.lineno)
    return None


def _location(filename: str, lineno: int | None) -> str:
    path = os.path.abspath(filename)
    try:
        shown = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        shown = path
    if shown.startswith(os.pardir):
        shown = path
    return f"{shown}:{lineno}" if lineno else shown


def _under(filename: str, dirs: tuple[str, ...]) -> bool:
    path = os.path.abspath(filename)
    return any(path.startswith(d + os.sep) for d in dirs)


_OWN = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the converge package
_STDLIB_DIRS = tuple({os.path.abspath(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib")})
_LIBRARY_DIRS = tuple(
    {
        os.path.abspath(sysconfig.get_paths()[k])
        for k in ("stdlib", "platstdlib", "purelib", "platlib")
    }
)


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
