"""``FunctionAgent``: any Python callable as an ``Agent``.

Its inputs and its output are typed and checked.

```python
class Order(msgspec.Struct):
    sku: str
    qty: int

def price(order: Order) -> float:           # the whole inputs, as an Order
    ...

def add(a: int, b: int, ctx: RunContext) -> int:   # one input per parameter, and the context
    ...

graph.add_node("price", FunctionAgent(price))
```

**Inputs.** A node's inputs (a mapping) reach the function in one of two shapes:

- *Whole*: with ``input_type=`` given, or when the function's only parameter besides the
  context is annotated with a record type (a ``msgspec.Struct``, ``TypedDict``, dataclass,
  ``dict``/``Mapping``) or not annotated at all, the inputs are converted to that type and passed
  as that one argument (unannotated: the mapping as it is, as graphs call plain callables).
- *Spread*: otherwise each parameter is one input, by name, converted to its annotation;
  parameters with defaults are optional. Inputs no parameter names are ignored (a node's
  inputs often carry more than one step needs).

A parameter named ``ctx``, or annotated ``RunContext``, gets the run context. Conversion is
msgspec's lax mode (``"3"`` becomes ``3`` for an ``int``). A missing or mistyped input is a
``ValidationError`` naming the field and the agent.

**Output.** The return value is checked against ``output_type=`` or else the return
annotation (strictly: an ``int`` that is declared ``str`` is refused, not converted), as a
``ValidationError`` naming the agent. No annotation: no check.

**Sync functions** run in a worker thread (``asyncio.to_thread``), so they never stall the
event loop; the context's async methods (``emit``, ``pause``…) need an async function.

**Where it runs.** A ``FunctionAgent`` is an ``Agent`` that implements ``run`` only, so it is a
graph node's agent (given directly, or as ``module:attr`` in YAML naming a ``FunctionAgent``
instance). It does not implement ``decide``: a function computes an output from inputs, while
the decentralized runtime asks an agent what to *do* about messages and visible tasks (claim,
bid, vote…), and the claim's outcome only comes back on a later call. To have functions work
tasks off the board, use a ``BoardTask`` node in a graph, or an ``Agent`` whose ``decide``
claims tasks and reports results.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from converge.core.agent import Agent, RunContext
from converge.core.capability import Capability
from converge.core.codec_errors import validation_error
from converge.core.identity import Identity
from converge.core.topic import Topic
from converge.core.user_code import call_in_thread
from converge.errors import ValidationError

__all__ = ["FunctionAgent"]

_NOT_SET: Any = inspect.Parameter.empty


class FunctionAgent(Agent):
    """A sync or async callable as an ``Agent`` (see the module doc for inputs and output).

    Args:
        fn: the function.
        name: the agent's name (default: the function's).
        input_type: the type the whole inputs are converted to and passed as one argument.
        output_type: the type the result is checked against (default: the return annotation).
        identity: the agent's key pair; a new one if omitted.
        capabilities: what it can do.
        topics: topics it follows.

    Raises:
        ValidationError: ``fn`` is not callable, or its annotations cannot be read or used.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        input_type: Any = None,
        output_type: Any = _NOT_SET,
        identity: Identity | None = None,
        capabilities: typing.Iterable[Capability | str] = (),
        topics: typing.Iterable[Topic | str] = (),
    ) -> None:
        if not callable(fn):
            raise ValidationError(f"a FunctionAgent needs a callable, not {fn!r}", field="fn")
        label = name or getattr(fn, "__name__", None) or type(fn).__name__
        super().__init__(identity, name=label, capabilities=capabilities, topics=topics)
        self.fn = fn
        self._is_async = _is_async(fn)
        hints = _hints(fn, label)
        params = _parameters(fn, label)
        self._ctx_param = next(
            (p.name for p in params if p.name == "ctx" or hints.get(p.name) is RunContext), None
        )
        inputs = [p for p in params if p.name != self._ctx_param]
        self._whole: str | None = None  # the parameter that takes the whole inputs
        self._input_type: Any = None
        self._spread: type[msgspec.Struct] | None = None
        if input_type is not None:
            if len(inputs) != 1:
                raise ValidationError(
                    f"agent {label!r}: with input_type the function takes one input "
                    f"parameter (and ctx), not {len(inputs)}",
                    field="input_type",
                )
            self._whole, self._input_type = inputs[0].name, input_type
        elif len(inputs) == 1 and _is_record(hints.get(inputs[0].name, _NOT_SET)):
            self._whole = inputs[0].name
            hint = hints.get(inputs[0].name, _NOT_SET)
            self._input_type = None if hint in (_NOT_SET, Any) else hint
        else:
            self._spread = _spread_struct(label, inputs, hints)
        self.output_type: Any = (
            hints.get("return", _NOT_SET) if output_type is _NOT_SET else (output_type)
        )
        if self.output_type in (Any, _NOT_SET):
            self.output_type = _NOT_SET
        for what, typ in (("input_type", self._input_type), ("output_type", self.output_type)):
            if typ not in (None, _NOT_SET):
                try:
                    msgspec.inspect.type_info(typ)
                except (TypeError, ValueError) as exc:
                    msg = f"agent {label!r}: {what} {typ!r} cannot be checked: {exc}"
                    raise ValidationError(msg, field=what) from None

    def arguments(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword arguments ``fn`` is called with (without the context), or a
        ``ValidationError`` naming the field and the agent."""
        if not isinstance(inputs, Mapping):
            raise ValidationError(
                f"inputs of agent {self.name!r} must be a mapping, not {type(inputs).__name__}",
                field="inputs",
            )
        try:
            if self._spread is not None:
                args = msgspec.convert(dict(inputs), self._spread, strict=False)
                return {f: getattr(args, f) for f in self._spread.__struct_fields__}
            assert self._whole is not None
            if self._input_type is None:
                return {self._whole: inputs}
            value = msgspec.convert(
                dict(inputs), self._input_type, strict=False, from_attributes=True
            )
            return {self._whole: value}
        except msgspec.ValidationError as exc:
            raise validation_error(exc, f"inputs of agent {self.name!r}") from exc

    def check_output(self, value: Any) -> Any:
        """``value`` checked against the output type (returned as converted), or a
        ``ValidationError`` naming the agent."""
        if self.output_type is _NOT_SET:
            return value
        try:
            return msgspec.convert(value, self.output_type, strict=True, from_attributes=True)
        except msgspec.ValidationError as exc:
            raise validation_error(exc, f"output of agent {self.name!r}") from exc

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Any:
        """Convert ``inputs``, call the function, check its result.

        Raises:
            ValidationError: an input or the output does not meet its type.
        """
        kwargs = self.arguments(inputs)
        if self._ctx_param is not None:
            kwargs[self._ctx_param] = ctx
        if self._is_async:
            result = await self.fn(**kwargs)
        else:
            result = await call_in_thread(self.fn, **kwargs)
        return self.check_output(result)

    def __repr__(self) -> str:
        return f"FunctionAgent({self.name!r})"


def _is_async(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - an object whose __call__ is async
    return call is not None and inspect.iscoroutinefunction(call)


def _hints(fn: Callable[..., Any], label: str) -> dict[str, Any]:
    target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else type(fn).__call__
    try:
        return typing.get_type_hints(target)
    except Exception as exc:
        msg = f"cannot read the annotations of agent {label!r}: {exc}"
        raise ValidationError(msg, field="fn") from None


def _parameters(fn: Callable[..., Any], label: str) -> list[inspect.Parameter]:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"agent {label!r}: no signature ({exc})", field="fn") from None
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ValidationError(
                f"agent {label!r}: parameter {p.name!r} must be a named one (no *args/**kwargs)",
                field=p.name,
            )
    return params


def _is_record(hint: Any) -> bool:
    """Whether an annotation takes the whole inputs: none, Any, or a record type."""
    if hint in (_NOT_SET, Any):
        return True
    origin = typing.get_origin(hint) or hint
    if not isinstance(origin, type):
        return False
    return (
        issubclass(origin, (msgspec.Struct, Mapping, dict))
        or typing.is_typeddict(origin)
        or dataclasses.is_dataclass(origin)
    )


def _spread_struct(
    label: str, params: list[inspect.Parameter], hints: Mapping[str, Any]
) -> type[msgspec.Struct]:
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for p in params:
        hint = hints.get(p.name, Any)
        fields.append((p.name, hint) if p.default is _NOT_SET else (p.name, hint, p.default))
    try:
        return msgspec.defstruct(f"{label.title().replace('_', '')}Inputs", fields)
    except TypeError as exc:
        raise ValidationError(f"agent {label!r}: {exc}", field="fn") from None
