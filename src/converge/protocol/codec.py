"""Encoding protocol objects: JSON, MessagePack, sealed bytes, schema.

JSON for people and HTTP, MessagePack for the wire and the store,
sealed bytes for signed objects in transit, and JSON Schema for all of them.

Decoding is strict: unknown fields are refused, and a bad field raises ``ValidationError``
naming it; bytes that are not the format at all raise ``ProtocolError``. Nothing else escapes.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar, overload

import msgspec

from converge.core.codec_errors import (
    DECODE_ERRORS,
    ENCODE_ERRORS,
    decode_error,
    encode_error,
    validation_error,
)
from converge.core.message import Message
from converge.core.signing import Signed, check_finite, maybe_nonfinite, unseal
from converge.errors import ValidationError
from converge.protocol.event import Event
from converge.protocol.objects import (
    Attestation,
    Intent,
    Offer,
    Receipt,
    TaskDone,
    TaskProgress,
    TaskStart,
)

__all__ = [
    "OBJECT_TYPES",
    "ProtocolObject",
    "from_json",
    "from_msgpack",
    "json_schema",
    "seal",
    "to_json",
    "to_msgpack",
    "unseal",
]

ProtocolObject = (
    Intent | Offer | TaskStart | TaskProgress | TaskDone | Receipt | Attestation | Event | Message
)
"""Any protocol object; decoded by its ``type`` tag."""

OBJECT_TYPES: dict[str, type[Any]] = {
    str(cls.__struct_config__.tag): cls
    for cls in (
        Intent,
        Offer,
        TaskStart,
        TaskProgress,
        TaskDone,
        Receipt,
        Attestation,
        Event,
        Message,
    )
}
"""Each protocol object class by its tag: ``intent``, ``offer``, ``task_start``… ``message``."""

T = TypeVar("T")

_json_encoder = msgspec.json.Encoder()
_has_null = re.compile(rb"null").search
_msgpack_encoder = msgspec.msgpack.Encoder()
_json_decoders: dict[type[Any] | None, msgspec.json.Decoder[Any]] = {}
_msgpack_decoders: dict[type[Any] | None, msgspec.msgpack.Decoder[Any]] = {}


def to_json(obj: Any) -> bytes:
    """JSON bytes of a protocol object (or any encodable value). Bytes become base64 strings.

    Raises:
        ValidationError: the value cannot be encoded, or holds a NaN or an infinity, which JSON
            cannot represent (it would silently become ``null``).
    """
    try:
        data = _json_encoder.encode(obj)
        # msgspec writes NaN and infinities as null: only then look closer (a compiled search
        # is about twice as fast as `in` here).
        if _has_null(data) and maybe_nonfinite(_msgpack_encoder.encode(obj)):
            check_finite(obj)
    except ENCODE_ERRORS as exc:
        raise encode_error(exc, type(obj).__name__) from exc
    return data


def to_msgpack(obj: Any) -> bytes:
    """MessagePack bytes of a protocol object (or any encodable value)."""
    try:
        return _msgpack_encoder.encode(obj)
    except ENCODE_ERRORS as exc:
        raise encode_error(exc, type(obj).__name__) from exc


@overload
def from_json(data: bytes | str, cls: type[T]) -> T: ...
@overload
def from_json(data: bytes | str, cls: None = None) -> ProtocolObject: ...
def from_json(data: bytes | str, cls: type[Any] | None = None) -> Any:
    """Decode JSON into ``cls``, or into whichever protocol object its ``type`` names."""
    dec = _json_decoders.get(cls)
    if dec is None:
        dec = _json_decoders[cls] = msgspec.json.Decoder(ProtocolObject if cls is None else cls)
    try:
        return dec.decode(data)
    except msgspec.ValidationError as exc:
        raise validation_error(exc, _name(cls)) from exc
    except DECODE_ERRORS as exc:
        raise decode_error(exc, f"JSON for {_name(cls)}") from exc


@overload
def from_msgpack(data: bytes, cls: type[T]) -> T: ...
@overload
def from_msgpack(data: bytes, cls: None = None) -> ProtocolObject: ...
def from_msgpack(data: bytes, cls: type[Any] | None = None) -> Any:
    """Decode MessagePack into ``cls``, or into whichever protocol object its ``type`` names."""
    dec = _msgpack_decoders.get(cls)
    if dec is None:
        target = ProtocolObject if cls is None else cls
        dec = _msgpack_decoders[cls] = msgspec.msgpack.Decoder(target)
    try:
        return dec.decode(data)
    except msgspec.ValidationError as exc:
        raise validation_error(exc, _name(cls)) from exc
    except DECODE_ERRORS as exc:
        raise decode_error(exc, f"MessagePack for {_name(cls)}") from exc


def _name(cls: type[Any] | None) -> str:
    return "protocol object" if cls is None else getattr(cls, "__name__", str(cls))


def seal(obj: Signed) -> bytes:
    """The wire form of a signed object: its canonical body and signatures (see ``unseal``)."""
    return obj.seal()


def json_schema(name: str | None = None) -> dict[str, Any]:
    """JSON Schema of one protocol object (by tag or class name), or of all of them.

    Raises:
        ValidationError: ``name`` is not a protocol object (the message lists them).
    """
    if name is None:
        schema, components = msgspec.json.schema_components([ProtocolObject])
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "converge protocol object",
            **schema[0],
            "$defs": components,
        }
    cls = _lookup(name)
    result: dict[str, Any] = msgspec.json.schema(cls)
    result["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return result


def _lookup(name: str) -> type[Any]:
    key = name.strip()
    if key in OBJECT_TYPES:
        return OBJECT_TYPES[key]
    for cls in OBJECT_TYPES.values():
        if cls.__name__.lower() == key.lower():
            return cls
    raise ValidationError(
        f"unknown protocol object {name!r}; choose one of: {', '.join(sorted(OBJECT_TYPES))}",
        field="name",
    )
