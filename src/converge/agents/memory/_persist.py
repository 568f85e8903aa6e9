"""How memory records live in a store.

How memory records live in a store: MessagePack values, versions, compare-and-set writes, and
one event per change.

Every memory system keeps its records under its own key prefix (``memory/conversation/``,
``memory/structured/``, ``memory/vector/``, ``context/``). A write is a unit of work: the
compare-and-set of the record and a ``memory.*`` or ``context.*`` event naming the key and the
new version commit together, so the event log says when each record changed. Events never carry
the record's content: the log is read by tracing and dashboards that context isolation (seed
002 §10) does not cover.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from converge.core.codec_errors import (
    DECODE_ERRORS,
    ENCODE_ERRORS,
    decode_error,
    encode_error,
    validation_error,
)
from converge.errors import ConflictError, ValidationError
from converge.protocol.event import Event
from converge.store.base import Store

__all__ = [
    "MAX_ATTEMPTS",
    "check_name",
    "decode",
    "encode",
    "remove",
    "write",
]

T = TypeVar("T")

MAX_ATTEMPTS = 64
"""Compare-and-set retries before a read-modify-write gives up with ``ConflictError``."""

_encoder = msgspec.msgpack.Encoder()
_decoders: dict[Any, msgspec.msgpack.Decoder[Any]] = {}


def encode(value: Any, what: str, field: str | None = None) -> bytes:
    """MessagePack bytes of ``value``; ``ValidationError`` naming ``field`` if it cannot be."""
    try:
        return _encoder.encode(value)
    except ENCODE_ERRORS as exc:
        raise encode_error(exc, what, field) from exc


def decode(data: bytes, cls: Any, what: str) -> Any:
    """Decode ``data`` as ``cls`` (``Any``: plain builtins)."""
    dec = _decoders.get(cls)
    if dec is None:
        dec = _decoders[cls] = msgspec.msgpack.Decoder(cls)
    try:
        return dec.decode(data)
    except msgspec.ValidationError as exc:
        raise validation_error(exc, what) from exc
    except DECODE_ERRORS as exc:
        raise decode_error(exc, what) from exc


def check_name(value: object, field: str) -> str:
    """Return ``value`` if it is a non-empty ``str`` without ``/`` (it becomes one segment of a
    store key, so ``a`` and ``a/b`` must not share records)."""
    if not isinstance(value, str) or not value or "/" in value:
        raise ValidationError(
            f"{field} must be a non-empty str without '/', not {value!r}", field=field
        )
    return value


async def write(
    store: Store,
    key: str,
    expected_version: int,
    value: bytes,
    *,
    kind: str,
    trace_id: str,
    actor: str = "",
    data: dict[str, Any] | None = None,
) -> int:
    """Write ``value`` under ``key`` if it is still at ``expected_version``, with an event of
    ``kind``; returns the new version.

    Raises:
        ConflictError: another writer got there first (nothing was written).
    """
    version = expected_version + 1
    async with store.transaction() as tx:
        tx.compare_and_set(key, expected_version, value)
        tx.append(
            Event(
                kind=kind,
                trace_id=trace_id,
                actor=actor,
                subject=key,
                data={"version": version, **(data or {})},
            )
        )
    return version


async def remove(
    store: Store,
    key: str,
    expected_version: int,
    *,
    kind: str,
    trace_id: str,
    actor: str = "",
) -> None:
    """Delete ``key`` if it is still at ``expected_version`` (> 0), with an event of ``kind``.

    Raises:
        ConflictError: the record changed since it was read (nothing was deleted).
    """
    entry = await store.get(key)
    found = 0 if entry is None else entry.version
    if found != expected_version:
        raise ConflictError(key, expected_version, found)
    # Transactions have no conditional delete: re-check inside one by a compare-and-set of the
    # same bytes (which bumps the version), then delete.
    assert entry is not None
    async with store.transaction() as tx:
        tx.compare_and_set(key, expected_version, entry.value)
        tx.delete(key)
        tx.append(Event(kind=kind, trace_id=trace_id, actor=actor, subject=key, data={}))
