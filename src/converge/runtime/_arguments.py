"""Checks of the runtime's and the executor's constructor arguments.

Checks of the runtime's constructor arguments: a wrong one is refused when the runtime or its
executor is built, as a ``ValidationError`` naming the argument, never later as an
``AttributeError`` from deep inside a decision.
"""

from __future__ import annotations

from typing import Any

from converge.errors import ValidationError

__all__ = ["check_count", "check_type"]


def check_type(
    value: object,
    expected: type[Any] | tuple[type[Any], ...],
    name: str,
    *,
    optional: bool = True,
) -> None:
    """Refuse ``value`` for the argument ``name`` unless it is an ``expected`` (or None, when
    ``optional``).

    Raises:
        ValidationError: it is something else (``field`` is ``name``).
    """
    if (value is not None or not optional) and not isinstance(value, expected):
        raise ValidationError(
            f"{name} must be {_names(expected)}, not {describe(value)}", field=name
        )


def check_count(value: object, name: str) -> int:
    """``value`` as a count of at least 1 for the argument ``name``.

    Raises:
        ValidationError: it is not an int >= 1 (a bool is not a count).
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(f"{name} must be an int >= 1, not {value!r}", field=name)
    return value


def describe(value: object) -> str:
    """How a message names a wrong value: its type, and the value itself when short."""
    text = repr(value)
    kind = type(value).__name__
    return f"{kind} {text}" if len(text) <= 40 else f"a {kind}"


def _names(expected: type[Any] | tuple[type[Any], ...]) -> str:
    types = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(f"a {t.__name__}" for t in types)
