"""``StructuredMemory``: records that follow a schema.

Records are persisted with compare-and-set.

A schema is a msgspec ``Struct`` type (records are instances of it, validated by
``msgspec.convert``, which runs ``Meta`` constraints; a hand-built instance is round-tripped
through builtins, so wrong types are caught) or a JSON Schema dict (records are plain dicts;
see ``_jsonschema`` for the keywords checked: ``jsonschema`` was not made a core dependency for
this). Every write is
validated first: a bad record is a ``ValidationError`` naming the field, and nothing is stored.
Records live at ``memory/structured/<namespace>/<record_id>``; ``update`` is a read-modify-write
retried on ``ConflictError`` (64 tries), so concurrent writers never lose an update; ``put``
and ``delete`` take an optional ``expected_version``. A refusal's ``field`` is the dotted path
(``address.city``, ``tags[1]``).
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar, cast, overload

import msgspec

from converge.agents.memory import _jsonschema
from converge.agents.memory._persist import (
    MAX_ATTEMPTS,
    check_name,
    decode,
    encode,
    remove,
    write,
)
from converge.core.codec_errors import validation_error
from converge.errors import ConflictError, ValidationError
from converge.store.base import Store

__all__ = ["StructuredMemory"]

T = TypeVar("T")
PREFIX = "memory/structured/"


class StructuredMemory(Generic[T]):
    """Schema-checked records under one namespace of the store.

    Args:
        store: where the records are kept.
        namespace: groups the records (one key segment: no ``/``), e.g. ``"user_profiles"``.
        schema: a msgspec ``Struct`` type, or a JSON Schema dict (records are then dicts).
        actor: who writes, recorded on the events.

    Example::

        profiles = StructuredMemory(store, "profiles", Profile)
        await profiles.put("u1", Profile(name="Ada", visits=0))
        await profiles.update("u1", lambda p: msgspec.structs.replace(p, visits=p.visits + 1))
    """

    @overload
    def __init__(
        self: StructuredMemory[dict[str, Any]],
        store: Store,
        namespace: str,
        schema: Mapping[str, Any],
        *,
        actor: str = "",
    ) -> None: ...
    @overload
    def __init__(
        self, store: Store, namespace: str, schema: type[T], *, actor: str = ""
    ) -> None: ...
    def __init__(
        self,
        store: Store,
        namespace: str,
        schema: type[T] | Mapping[str, Any],
        *,
        actor: str = "",
    ) -> None:
        self.namespace = check_name(namespace, "namespace")
        if isinstance(schema, Mapping):
            _jsonschema.check_schema(schema)
            self._json_schema: Mapping[str, Any] | None = dict(schema)
            self._type: Any = Any
        elif isinstance(schema, type) and issubclass(schema, msgspec.Struct):
            self._json_schema = None
            self._type = schema
        else:
            raise ValidationError(
                f"schema must be a msgspec Struct type or a JSON Schema dict, not {schema!r}",
                field="schema",
            )
        self.schema = schema
        self.store = store
        self.actor = actor
        self._prefix = f"{PREFIX}{namespace}/"

    # -- validation ------------------------------------------------------------------------------

    def validate(self, value: Any) -> T:
        """``value`` as a record of this schema (a dict is converted to the Struct type).

        Raises:
            ValidationError: the value does not follow the schema; ``field`` names where.
        """
        if self._json_schema is None:
            try:
                # Round-trip through builtins: runs the Struct's type checks and __post_init__
                # even on an instance built by hand with wrong types.
                raw = msgspec.to_builtins(value) if isinstance(value, msgspec.Struct) else value
                return cast(T, msgspec.convert(raw, self._type))
            except msgspec.ValidationError as exc:
                raise validation_error(exc, self._type.__name__) from exc
            except TypeError as exc:
                raise ValidationError(f"record cannot be encoded: {exc}") from exc
        try:
            plain = msgspec.to_builtins(value)
        except TypeError as exc:
            raise ValidationError(f"record cannot be encoded: {exc}") from exc
        _jsonschema.validate(plain, self._json_schema)
        return cast(T, plain)

    # -- reading ---------------------------------------------------------------------------------

    async def get(self, record_id: str) -> T | None:
        """The record, or None."""
        return (await self.get_versioned(record_id))[0]

    async def get_versioned(self, record_id: str) -> tuple[T | None, int]:
        """The record (or None) and its version (0: absent), for a later ``expected_version``."""
        entry = await self.store.get(self._key(record_id))
        if entry is None:
            return None, 0
        value = decode(entry.value, self._type, f"stored {self.namespace} record")
        return cast(T, value), entry.version

    async def ids(self) -> builtins.list[str]:
        """The ids of every record, in key order."""
        return [e.key[len(self._prefix) :] for e in await self.store.list(self._prefix)]

    async def items(self) -> builtins.list[tuple[str, T]]:
        """Every ``(id, record)``, in key order."""
        out = []
        for e in await self.store.list(self._prefix):
            value = decode(e.value, self._type, f"stored {self.namespace} record")
            out.append((e.key[len(self._prefix) :], cast(T, value)))
        return out

    # -- writing ---------------------------------------------------------------------------------

    async def put(self, record_id: str, value: Any, *, expected_version: int | None = None) -> int:
        """Validate and store ``value``; returns the new version.

        Args:
            record_id: the record.
            value: a record of the schema (for a Struct schema, a dict of its fields also does).
            expected_version: write only if the stored record is at this version (0: absent);
                None writes whatever is there (last writer wins).

        Raises:
            ValidationError: ``value`` does not follow the schema (nothing is written).
            ConflictError: the record is not at ``expected_version``.
        """
        data = encode(self.validate(value), f"{self.namespace} record")
        key = self._key(record_id)
        if expected_version is not None:
            return await self._write(key, expected_version, data)
        for _ in range(MAX_ATTEMPTS):
            entry = await self.store.get(key)
            try:
                return await self._write(key, 0 if entry is None else entry.version, data)
            except ConflictError:
                continue
        raise ConflictError(key, -1, -1)

    async def update(
        self,
        record_id: str,
        change: Callable[[T | None], T | Any | Awaitable[T | Any]],
    ) -> T:
        """Read the record, apply ``change`` (sync or async; it gets None if absent), validate
        and write back; on a concurrent write, read again and repeat. Returns the stored record.

        ``change`` may run more than once, so it should only compute the new value.

        Raises:
            ValidationError: the changed record does not follow the schema.
            ConflictError: other writers kept winning for ``MAX_ATTEMPTS`` tries.
        """
        key = self._key(record_id)
        for _ in range(MAX_ATTEMPTS):
            current, version = await self.get_versioned(record_id)
            new = change(current)
            if isinstance(new, Awaitable):
                new = await new
            record = self.validate(new)
            try:
                await self._write(key, version, encode(record, f"{self.namespace} record"))
            except ConflictError:
                continue
            return record
        raise ConflictError(key, -1, -1)

    async def delete(self, record_id: str, *, expected_version: int | None = None) -> bool:
        """Remove the record; returns whether there was one.

        Raises:
            ConflictError: ``expected_version`` was given and the record is not at it.
        """
        key = self._key(record_id)
        for _ in range(MAX_ATTEMPTS):
            entry = await self.store.get(key)
            found = 0 if entry is None else entry.version
            if expected_version is not None and found != expected_version:
                raise ConflictError(key, expected_version, found)
            if entry is None:
                return False
            try:
                await remove(
                    self.store,
                    key,
                    found,
                    kind="memory.structured.deleted",
                    trace_id=self.namespace,
                    actor=self.actor,
                )
            except ConflictError:
                if expected_version is not None:
                    raise
                continue
            return True
        raise ConflictError(key, -1, -1)

    def _key(self, record_id: str) -> str:
        return self._prefix + check_name(record_id, "record_id")

    async def _write(self, key: str, expected: int, data: bytes) -> int:
        return await write(
            self.store,
            key,
            expected,
            data,
            kind="memory.structured.written",
            trace_id=self.namespace,
            actor=self.actor,
        )
