"""Tools agents can call: a protocol, function tools, a registry.

Function tools come with schemas.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import msgspec

from converge.core.codec_errors import validation_error
from converge.core.user_code import call_in_thread
from converge.errors import PolicyViolation, ValidationError

__all__ = ["FunctionTool", "Tool", "ToolRegistry", "ToolSpec"]

_TOOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")


class ToolSpec(msgspec.Struct, frozen=True):
    """A tool as a model (or a person) is offered it: name, description, argument schema."""

    name: str
    """Its name."""
    description: str
    """What it does."""
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)
    """JSON Schema of its arguments object."""


@runtime_checkable
class Tool(Protocol):
    """Something an agent can call by name with JSON-like arguments."""

    @property
    def name(self) -> str:
        """Unique name in its registry (letters, digits, ``_`` and ``-``)."""
        ...

    @property
    def description(self) -> str:
        """What it does, for people and LLMs."""
        ...

    @property
    def parameters(self) -> dict[str, Any]:
        """JSON Schema of its arguments object."""
        ...

    async def invoke(self, arguments: Mapping[str, Any]) -> Any:
        """Call it; ``arguments`` are checked against ``parameters`` first."""
        ...


class FunctionTool:
    """A Python function (sync or async) as a ``Tool``, its schema read from its signature.

    A msgspec struct is built from the function's signature: the JSON Schema comes from it, and
    arguments are converted and checked against it before the call, so a wrong type is a
    ``ValidationError`` naming the argument. A sync function runs in a worker thread
    (``call_in_thread``, on the loop's bounded default executor), so it cannot stall the event
    loop.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        unsafe: bool = False,
    ) -> None:
        self.fn = fn
        self.unsafe = bool(unsafe)
        """Whether the tool may run only in a sandbox."""
        self._name = name or fn.__name__
        if not _TOOL_NAME.match(self._name):
            raise ValidationError(f"invalid tool name {self._name!r}", field="name")
        doc = inspect.getdoc(fn) or ""
        self._description = description if description is not None else doc.split("\n\n")[0]
        self._args_type = _arguments_struct(fn, self._name)
        self._is_async = inspect.iscoroutinefunction(fn)
        _, components = msgspec.json.schema_components([self._args_type])
        schema = components[self._args_type.__name__]
        schema.pop("title", None)
        self._parameters: dict[str, Any] = schema

    @property
    def name(self) -> str:
        return self._name

    @property
    def description(self) -> str:
        return self._description

    @property
    def parameters(self) -> dict[str, Any]:
        return self._parameters

    def check(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments converted to the annotated types, or ``ValidationError``."""
        if not isinstance(arguments, Mapping):
            raise ValidationError(
                f"arguments of tool {self._name!r} must be an object, not "
                f"{type(arguments).__name__}",
                field="arguments",
            )
        try:
            args = msgspec.convert(dict(arguments), self._args_type, strict=False)
        except msgspec.ValidationError as exc:
            raise validation_error(exc, f"arguments for tool {self._name!r}") from exc
        return {f: getattr(args, f) for f in self._args_type.__struct_fields__}

    async def invoke(self, arguments: Mapping[str, Any]) -> Any:
        if self.unsafe:
            raise PolicyViolation(
                f"tool {self._name!r} is marked unsafe and does not run in this process; "
                "call it through converge.agents.SafeTools, which runs it in a sandbox"
            )
        kwargs = self.check(arguments)
        if self._is_async:
            return await self.fn(**kwargs)
        return await call_in_thread(self.fn, **kwargs)

    def __repr__(self) -> str:
        unsafe = ", unsafe=True" if self.unsafe else ""
        return f"FunctionTool({self._name!r}{unsafe})"


def _arguments_struct(fn: Callable[..., Any], name: str) -> type[msgspec.Struct]:
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise ValidationError(f"cannot read the annotations of tool {name!r}: {exc}") from exc
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise ValidationError(
                f"tool {name!r}: parameter {param.name!r} must be passable by keyword "
                "(no *args, **kwargs or positional-only parameters)",
                field=param.name,
            )
        hint = hints.get(param.name, Any)
        if param.default is inspect.Parameter.empty:
            fields.append((param.name, hint))
        else:
            fields.append((param.name, hint, param.default))
    struct_name = "".join(p.capitalize() for p in re.split(r"[_\-]", name)) + "Arguments"
    try:
        return msgspec.defstruct(struct_name, fields, forbid_unknown_fields=True)
    except TypeError as exc:
        raise ValidationError(f"tool {name!r}: {exc}") from exc


class ToolRegistry:
    """Tools by name. ``register`` also works as a decorator::

    registry = ToolRegistry()

    @registry.register
    def add(a: int, b: int) -> int:
        "Add two integers."
        return a + b
    """

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    @typing.overload
    def register(self, tool: Tool, *, name: None = None, description: None = None) -> Tool: ...

    @typing.overload
    def register(
        self,
        tool: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> Callable[..., Any]: ...

    def register(
        self,
        tool: Tool | Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> Tool | Callable[..., Any]:
        """Add a ``Tool``, or a function (wrapped in ``FunctionTool``); returns what it was given.

        Raises:
            ValidationError: a tool of that name is already registered.
        """
        wrapped: Tool
        if isinstance(tool, Tool) and not callable(tool):
            wrapped = tool
        elif isinstance(tool, FunctionTool):
            wrapped = tool
        else:
            wrapped = FunctionTool(tool, name=name, description=description)
        if wrapped.name in self._tools:
            raise ValidationError(f"a tool named {wrapped.name!r} is already registered")
        self._tools[wrapped.name] = wrapped
        return tool

    def get(self, name: str) -> Tool:
        """The tool called ``name``.

        Raises:
            ValidationError: no such tool (the message lists the known ones).
        """
        try:
            return self._tools[name]
        except KeyError:
            known = ", ".join(sorted(self._tools)) or "none"
            raise ValidationError(f"unknown tool {name!r} (known: {known})", field="tool") from None

    async def invoke(self, name: str, arguments: Mapping[str, Any]) -> Any:
        """Call the tool ``name`` with ``arguments``."""
        return await self.get(name).invoke(arguments)

    def schemas(self) -> list[dict[str, Any]]:
        """Every tool as ``{"name", "description", "parameters"}``, as LLM APIs take them."""
        return [
            {"name": t.name, "description": t.description, "parameters": t.parameters}
            for t in self._tools.values()
        ]

    @property
    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)
