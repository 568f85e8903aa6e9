"""Encoding errors translated into converge's, at the boundary.

It translates msgspec's and Python's encoding errors. Every decoding entry (``from_json``,
``from_msgpack``, ``unseal``, memory's record reader) raises only ``ProtocolError``
(not the format at all) or ``ValidationError`` (the format, with a bad field), whatever the
input: invalid UTF-8, a ``str`` holding a lone surrogate (it has no UTF-8 form), an input that
is not bytes (or, for JSON, a str), nesting deeper than the decoder goes, numbers out of range.
The stores decode only rows they encoded themselves and do not translate: a row damaged on
disk surfaces as msgspec's own error.
"""

from __future__ import annotations

import re

import msgspec

from converge.errors import ProtocolError, ValidationError

__all__ = ["DECODE_ERRORS", "ENCODE_ERRORS", "decode_error", "encode_error", "validation_error"]

DECODE_ERRORS: tuple[type[BaseException], ...] = (
    msgspec.DecodeError,
    UnicodeDecodeError,  # invalid UTF-8 in a string
    UnicodeEncodeError,  # a `str` input with a lone surrogate, which has no UTF-8 form
    RecursionError,  # hostile nesting thousands of levels deep
    TypeError,  # input that is not bytes (or, for JSON, a str): msgspec checks nothing else
)
"""What decoding untrusted bytes can raise besides ``msgspec.ValidationError``."""

ENCODE_ERRORS: tuple[type[BaseException], ...] = (
    msgspec.EncodeError,
    TypeError,  # an unsupported type, or a non-str map key when keys are sorted
    OverflowError,  # an int beyond 64 bits
    UnicodeEncodeError,  # a lone surrogate in a str
    RecursionError,
)
"""What encoding a user's value can raise."""

_AT = " - at `$"
_NAMED = re.compile(r"(?:unknown|missing required) field `([^`]+)`")


def validation_error(exc: msgspec.ValidationError, what: str) -> ValidationError:
    """Turn msgspec's ``… - at `$.a.b``` into a ``ValidationError`` with ``field="a.b"``.

    Also names the field for a missing or unknown field, and for a value refused by a
    ``__post_init__`` check (whose own ``ValidationError`` msgspec chains as the cause).
    """
    text = str(exc)
    path = None
    at = text.rfind(_AT)
    if at != -1:
        path = text[at + len(_AT) :].rstrip("`").lstrip(".") or None
        text = text[:at]
    name = None
    named = _NAMED.search(text)
    cause = exc.__cause__
    if named is not None:
        name = named.group(1)
    elif isinstance(cause, ValidationError) and cause.field:
        name = cause.field
    field = ".".join(p for p in (path, name) if p) or None
    return ValidationError(f"invalid {what}: {text}", field=field)


def decode_error(exc: BaseException, what: str) -> ProtocolError:
    """A ``ProtocolError`` for bytes that are not ``what`` at all."""
    if isinstance(exc, RecursionError):
        return ProtocolError(f"malformed {what}: nested too deeply")
    if isinstance(exc, UnicodeDecodeError):
        return ProtocolError(f"malformed {what}: a string is not valid UTF-8")
    if isinstance(exc, UnicodeEncodeError):
        return ProtocolError(f"malformed {what}: the text holds a lone surrogate (not UTF-8)")
    return ProtocolError(f"malformed {what}: {exc}")


def encode_error(exc: BaseException, what: str, field: str | None = None) -> ValidationError:
    """A ``ValidationError`` for a value that cannot be encoded."""
    if isinstance(exc, RecursionError):
        reason = "nested too deeply"
    elif isinstance(exc, OverflowError):
        reason = "an integer does not fit in 64 bits"
    else:
        reason = str(exc)
    return ValidationError(f"{what} cannot be encoded: {reason}", field=field)
