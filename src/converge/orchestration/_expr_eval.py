"""The evaluation half of edge conditions.

The evaluation half of edge conditions: the closures ``_expr`` compiles a condition into,
and the rules for values they apply (truthiness, equality, ordering, arithmetic, membership,
and stepping through a reference).

Every failure is a ``Fail`` (``NotFound`` when a reference step found nothing, which ``exists``
and ``default`` catch); ``Expression`` turns it into an ``ExpressionError``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

import msgspec

__all__ = [
    "ARITHMETIC",
    "COMPARE",
    "FUNCTIONS",
    "NOTHING",
    "Fail",
    "Fn",
    "NotFound",
    "PathStep",
    "access",
    "chain",
    "compare",
    "constant",
    "is_number",
    "kind",
    "minus",
    "negate",
    "refer",
    "thaw",
    "truth",
]

Fn = Callable[[Mapping[str, Any]], Any]
"""A compiled node: the values by first segment in, its value out."""
PathStep = tuple[str | None, Fn | None, str]
"""One step of a reference: (``.name``'s name, or ``[...]``'s closure, the step as written)."""
NOTHING: Any = object()
"""What a step finds when it finds nothing (None is a value)."""

_MAX_INT_BITS = 4096


class Fail(Exception):
    def __init__(self, reason: str, path: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = path


class NotFound(Fail):
    """A reference step found nothing; ``exists`` and ``default`` catch this one."""


# -- compiling: each node becomes a closure over its children's --------------------------------


def constant(value: Any) -> Fn:
    """A literal."""
    return lambda _: value


def thaw(value: Any) -> Any:
    """A constant list literal (nested tuples) as fresh lists."""
    return [thaw(v) for v in value] if isinstance(value, tuple) else value


def negate(inner: Fn) -> Fn:
    """``not``."""
    return lambda values: not truth(inner(values))


def minus(inner: Fn) -> Fn:
    """Unary ``-``."""

    def negative(values: Mapping[str, Any]) -> Any:
        value = inner(values)
        if not is_number(value):
            raise Fail(f"unary '-' needs a number, not {kind(value)}")
        return -value

    return negative


def chain(ops: list[str], fns: list[Fn]) -> Fn:
    """``f0 op0 f1 op1 f2 ...`` at one precedence level, without nesting a closure per operator:
    ``and``/``or`` (all the same), or left-associative arithmetic."""
    if ops[0] in ("and", "or"):
        want = ops[0] == "or"  # the truth value that decides the chain early
        if len(fns) == 2:
            a, b = fns
            if want:
                return lambda values: truth(a(values)) or truth(b(values))
            return lambda values: truth(a(values)) and truth(b(values))
        return lambda values: want if any(truth(f(values)) is want for f in fns) else not want
    first, rest = fns[0], tuple(zip([ARITHMETIC[op] for op in ops], fns[1:], strict=True))
    if len(rest) == 1:
        ((op, second),) = rest
        return lambda values: op(first(values), second(values))

    def arithmetic(values: Mapping[str, Any]) -> Any:
        acc = first(values)
        for op, fn in rest:
            acc = op(acc, fn(values))
        return acc

    return arithmetic


def compare(op: str, a: Fn, const: Any, b: Fn) -> Fn:
    """``a op b``; ``const`` is b's value when known at parse time (else ``NOTHING``)."""
    test = COMPARE[op]
    if const is not NOTHING:
        return lambda values: test(a(values), const)
    return lambda values: test(a(values), b(values))


def refer(root: str, steps: Sequence[PathStep], text: str) -> Fn:
    """A reference: ``values[root]``, then each step; ``text`` is the reference as written."""
    walk = _walker(steps, root, text)

    def lookup(values: Mapping[str, Any]) -> Any:
        value = values.get(root, NOTHING)
        if value is NOTHING:
            raise NotFound(f"there is no node or input named {root!r}", text)
        return walk(value, values)

    return lookup


def access(base: Fn, steps: Sequence[PathStep], text: str) -> Fn:
    """Steps into a computed value (``(a.b).c``, ``[1, 2][0]``); ``text`` as written."""
    walk = _walker(steps, text[: len(text) - sum(len(s[2]) for s in steps)], text)
    return lambda values: walk(base(values), values)


def _walker(steps: Sequence[PathStep], head: str, text: str) -> Callable[[Any, Any], Any]:
    plan: list[tuple[str | None, Fn | None, str]] = []
    for name, index, piece in steps:
        plan.append((name, index, head))
        head += piece
    frozen = tuple(plan)

    def walk(value: Any, values: Mapping[str, Any]) -> Any:
        for name, index, before in frozen:
            if index is None:
                key: Any = name
                found = value.get(name, NOTHING) if type(value) is dict else _field(value, name)
            else:
                key = index(values)
                found = _item(value, key)
            if found is NOTHING:
                raise NotFound(_why(value, key, index is None, before), text)
            value = found
        return value

    return walk


def _field(value: Any, name: Any) -> Any:
    """``value.name``: a mapping key or a public data attribute; never calls anything."""
    if isinstance(value, msgspec.Struct):  # first: cheaper than the Mapping ABC check
        if name[:1] == "_" or name not in type(value).__struct_fields__:
            return NOTHING
        found = getattr(value, name, NOTHING)
        return NOTHING if found is msgspec.UNSET else found
    if isinstance(value, Mapping):
        try:
            return value[name]
        except (KeyError, TypeError):
            return NOTHING
    if name[:1] == "_":
        return NOTHING
    fields = getattr(type(value), "__dataclass_fields__", None)
    if isinstance(fields, dict):
        return getattr(value, name, NOTHING) if name in fields else NOTHING
    fields = getattr(type(value), "_fields", None)
    if isinstance(value, tuple) and isinstance(fields, tuple):  # a namedtuple
        return value[fields.index(name)] if name in fields else NOTHING
    attrs = getattr(value, "__dict__", None)
    return attrs.get(name, NOTHING) if isinstance(attrs, dict) else NOTHING


def _item(value: Any, key: Any) -> Any:
    """``value[key]``: a sequence or string by integer, a mapping by key, else as ``.key``."""
    if isinstance(value, Mapping) or (isinstance(key, str) and not isinstance(value, str)):
        return _field(value, key)
    if isinstance(value, (list, tuple, str)) and _is_integer(key):
        try:
            return value[key]
        except IndexError:
            return NOTHING
    return NOTHING


def _why(value: Any, key: Any, dotted: bool, before: str) -> str:
    shown = _show(key)
    if value is None:
        return f"{before} is null, so it has no {shown}"
    if isinstance(value, Mapping):
        return f"{before} has no key {shown}"
    if isinstance(value, (list, tuple, str)) and not dotted:
        if _is_integer(key):
            return f"{before} has no index {shown} (it is a {kind(value)} of {len(value)})"
        return f"{before} is a {kind(value)}: index it with an integer, not {kind(key)}"
    if isinstance(key, str) and key[:1] == "_":
        return f"{before}: {shown} starts with '_', and such names are not readable"
    return f"{before} ({kind(value)}) has no field {shown}"


def _len(inner: Fn) -> Fn:
    def length(values: Mapping[str, Any]) -> int:
        value = inner(values)
        if isinstance(value, (str, list, tuple, Mapping, AbstractSet)):
            return len(value)
        raise Fail(f"len() needs a string, list or mapping, not {kind(value)}")

    return length


def _case(method: Callable[[str], str], name: str) -> Callable[[Fn], Fn]:
    def make(inner: Fn) -> Fn:
        def change(values: Mapping[str, Any]) -> str:
            value = inner(values)
            if isinstance(value, str):
                return method(value)
            raise Fail(f"{name}() needs a string, not {kind(value)}")

        return change

    return make


def _exists(ref: Fn) -> Fn:
    def exists(values: Mapping[str, Any]) -> bool:
        try:
            ref(values)
        except NotFound:
            return False
        return True

    return exists


def _default(ref: Fn, fallback: Fn) -> Fn:
    def default(values: Mapping[str, Any]) -> Any:
        try:
            return ref(values)
        except NotFound:
            return fallback(values)

    return default


FUNCTIONS: dict[str, Callable[..., Fn]] = {
    "default": _default,
    "exists": _exists,
    "len": _len,
    "lower": _case(str.lower, "lower"),
    "upper": _case(str.upper, "upper"),
}


# -- values --------------------------------------------------------------------------------------


def truth(value: Any) -> bool:
    """Python's truthiness; a ``Fail`` when the value has none."""
    if value is True or value is False:
        return value
    try:
        return bool(value)
    except Exception:  # a value whose __bool__ or __len__ raises (numpy arrays...)
        raise Fail(f"{kind(value)} has no truth value") from None


def is_number(value: Any) -> bool:
    """An int or float, and not a bool: booleans are not numbers here."""
    t = type(value)
    if t is int or t is float:
        return True
    return t is not bool and isinstance(value, (int, float))


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def kind(value: Any) -> str:
    """What ``value`` is, for messages: ``null``, ``boolean``, ``number``, ``list``…"""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "list"
    return "mapping" if isinstance(value, Mapping) else type(value).__name__


def _show(key: Any) -> str:
    if isinstance(key, str):
        return repr(key) if len(key) <= 40 else repr(key[:37] + "...")
    if _is_integer(key) and key.bit_length() <= 64:
        return str(key)
    return kind(key)  # no repr: a huge int's would raise, an object's may run code


def _equal(a: Any, b: Any) -> bool:
    """``a == b``, iteratively through lists and mappings; never raises; ``true != 1``."""
    pending = [(a, b)]
    while pending:
        x, y = pending.pop()
        tx, ty = type(x), type(y)
        if tx is bool or ty is bool:
            if tx is not ty or x is not y:
                return False
        elif isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
            if len(x) != len(y):
                return False
            pending.extend(zip(x, y, strict=True))
        elif isinstance(x, Mapping) and isinstance(y, Mapping):
            if len(x) != len(y):
                return False
            for key, value in x.items():
                other = y.get(key, NOTHING)
                if other is NOTHING:
                    return False
                pending.append((value, other))
        else:
            try:
                if not (x == y):
                    return False
            except Exception:  # an __eq__ or __bool__ that raises: not equal
                return False
    return True


def _eq(a: Any, b: Any) -> bool:
    t = type(a)
    if t is type(b) and (t is str or t is int or t is float):  # the common case, fast
        return bool(a == b)
    return _equal(a, b)


def _contains(item: Any, container: Any) -> bool:
    if isinstance(container, str):
        if isinstance(item, str):
            return item in container
        raise Fail(f"'in' a string needs a string on the left, not {kind(item)}")
    if isinstance(container, (list, tuple)):
        return any(_eq(item, x) for x in container)
    if isinstance(container, (Mapping, AbstractSet)):
        if isinstance(item, (bool, int, float)):  # 1, 1.0 and true hash alike: compare
            return any(_eq(item, x) for x in container)
        try:
            return item in container
        except TypeError:  # unhashable: cannot be a key
            return False
    raise Fail(f"'in' needs a list, string or mapping on the right, not {kind(container)}")


def _order(symbol: str, test: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def order(a: Any, b: Any) -> bool:
        if (is_number(a) and is_number(b)) or (isinstance(a, str) and isinstance(b, str)):
            return test(a, b)
        raise Fail(f"cannot compare {kind(a)} with {kind(b)} using {symbol!r}")

    return order


COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": _eq,
    "!=": lambda a, b: not _eq(a, b),
    "<": _order("<", operator.lt),
    "<=": _order("<=", operator.le),
    ">": _order(">", operator.gt),
    ">=": _order(">=", operator.ge),
    "in": _contains,
    "not in": lambda a, b: not _contains(a, b),
}


def _arith(symbol: str, compute: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def arith(a: Any, b: Any) -> Any:
        if not (is_number(a) and is_number(b)):
            raise Fail(f"{symbol!r} needs two numbers, not {kind(a)} and {kind(b)}")
        if (
            symbol == "*"
            and isinstance(a, int)
            and isinstance(b, int)
            and a.bit_length() + b.bit_length() > _MAX_INT_BITS
        ):
            raise Fail(f"integer product too large (over {_MAX_INT_BITS} bits)")
        try:
            return compute(a, b)
        except ZeroDivisionError:
            raise Fail(f"division by zero in {symbol!r}") from None
        except OverflowError:
            raise Fail(f"number too large in {symbol!r}") from None

    return arith


ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "+": _arith("+", operator.add),
    "-": _arith("-", operator.sub),
    "*": _arith("*", operator.mul),
    "/": _arith("/", operator.truediv),
    "%": _arith("%", operator.mod),
}
