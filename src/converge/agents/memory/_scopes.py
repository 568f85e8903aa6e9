"""The five context scopes and where each one lives.

==========  =============================  ================================================
scope       owner                          persistence
==========  =============================  ================================================
request     one execution                  in process only: gone with the request
session     a session id                   store, ``context/session/<id>/``; optional expiry
agent       an agent's did                 store, ``context/agent/<did>/``
graph       a run id                       store, ``context/graph/<run_id>/``
global      the platform                   store, ``context/global/``
==========  =============================  ================================================

Values are anything MessagePack holds (``None``, bools, numbers, str, bytes, lists, dicts,
msgspec Structs, which read back as dicts). A session with a ``ttl`` expires ``ttl`` seconds
after its last write, on an injected clock: an expired session reads as empty, and its old keys
are removed before the next write, so they never come back. ``update`` is a compare-and-set
with retries, as for structured memory.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol, get_args, runtime_checkable

from converge.agents.memory._persist import MAX_ATTEMPTS, check_name, decode, encode, write
from converge.core.clock import Clock, system_clock
from converge.errors import ConflictError, ValidationError
from converge.protocol.event import Event
from converge.store.base import Store, validate_key

__all__ = ["SCOPES", "RequestScope", "Scope", "ScopeName", "StoredScope"]

ScopeName = Literal["request", "session", "agent", "graph", "global"]
SCOPES: tuple[ScopeName, ...] = get_args(ScopeName)
"""The scope names, narrowest first."""

Change = Callable[[Any], Any | Awaitable[Any]]


@runtime_checkable
class Scope(Protocol):
    """A key-value space of one scope and owner."""

    @property
    def name(self) -> ScopeName:
        """Which scope this is."""
        ...

    async def get(self, key: str, default: Any = None) -> Any:
        """The value under ``key``, or ``default``."""
        ...

    async def set(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key``."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove ``key``; returns whether it was there."""
        ...

    async def keys(self) -> builtins.list[str]:
        """Every key, sorted."""
        ...

    async def update(self, key: str, change: Change, default: Any = None) -> Any:
        """Replace the value by ``change(value or default)`` without losing a concurrent update;
        returns the new value."""
        ...


class RequestScope:
    """The request scope: a dict in this process, dropped with the request."""

    name: ScopeName = "request"

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}

    async def get(self, key: str, default: Any = None) -> Any:
        """The value under ``key``, or ``default``."""
        return self._data.get(validate_key(key), default)

    async def set(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key``."""
        self._data[validate_key(key)] = value

    async def delete(self, key: str) -> bool:
        """Remove ``key``; returns whether it was there."""
        return self._data.pop(validate_key(key), _GONE) is not _GONE

    async def keys(self) -> builtins.list[str]:
        """Every key, sorted."""
        return sorted(self._data)

    async def update(self, key: str, change: Change, default: Any = None) -> Any:
        """Replace the value by ``change(value or default)``; returns the new value."""
        new = change(self._data.get(validate_key(key), default))
        if isinstance(new, Awaitable):
            new = await new
        self._data[key] = new
        return new

    def clear(self) -> None:
        """Drop everything (the request is over)."""
        self._data.clear()


_GONE = object()


class StoredScope:
    """A persistent scope: keys under ``context/<scope>/<owner>/`` in the store.

    Args:
        store: where values are kept.
        name: ``session``, ``agent``, ``graph`` or ``global``.
        owner: the session id, agent did or run id (None for ``global``).
        ttl: sessions only: seconds after the last write at which the session expires.
        clock: the time source for expiry.
        actor: who writes, recorded on the events.
    """

    def __init__(
        self,
        store: Store,
        name: ScopeName,
        owner: str | None = None,
        *,
        ttl: float | None = None,
        clock: Clock = system_clock,
        actor: str = "",
    ) -> None:
        if name not in SCOPES or name == "request":
            raise ValidationError(
                f"a stored scope is one of {SCOPES[1:]}, not {name!r}", field="name"
            )
        if (owner is None) != (name == "global"):
            raise ValidationError(
                f"the {name} scope {'has no' if name == 'global' else 'needs an'} owner",
                field="owner",
            )
        if ttl is not None and (name != "session" or not ttl > 0):
            raise ValidationError("ttl is a number of seconds > 0, for sessions only", field="ttl")
        self.name = name
        self.owner = None if owner is None else check_name(owner, "owner")
        self.store = store
        self.ttl = ttl
        self.clock = clock
        self.actor = actor
        self.prefix = f"context/{name}/" + ("" if owner is None else f"{owner}/")
        self._expiry_key = None if owner is None else f"context/expiry/{name}/{owner}"
        self._trace = f"context.{name}" + ("" if owner is None else f".{owner}")

    # -- reading ---------------------------------------------------------------------------------

    async def get(self, key: str, default: Any = None) -> Any:
        """The value under ``key``, or ``default`` (also when the session has expired)."""
        return (await self._get(key, default))[0]

    async def keys(self) -> builtins.list[str]:
        """Every key, sorted (none when the session has expired)."""
        if await self._expired():
            return []
        return [e.key[len(self.prefix) :] for e in await self.store.list(self.prefix)]

    async def expires_at(self) -> float | None:
        """When the session expires, on the scope's clock (None: no expiry, or nothing written)."""
        if self._expiry_key is None:
            return None
        entry = await self.store.get(self._expiry_key)
        return None if entry is None else float(decode(entry.value, float, "session expiry"))

    # -- writing ---------------------------------------------------------------------------------

    async def set(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` (and push a session's expiry back)."""
        data = encode(value, f"{self.name} value", key)
        await self._purge_if_expired()
        async with self.store.transaction() as tx:
            tx.put(self._key(key), data)
            self._touch(tx)
            tx.append(self._event("context.written", key))

    async def delete(self, key: str) -> bool:
        """Remove ``key``; returns whether it was there."""
        if await self._purge_if_expired():
            return False
        entry = await self.store.get(self._key(key))
        if entry is None:
            return False
        async with self.store.transaction() as tx:
            tx.delete(self._key(key))
            tx.append(self._event("context.deleted", key))
        return True

    async def update(self, key: str, change: Change, default: Any = None) -> Any:
        """Replace the value by ``change(value or default)`` with compare-and-set, retried on
        conflict (``change`` may run more than once); returns the new value.

        Raises:
            ConflictError: other writers kept winning for ``MAX_ATTEMPTS`` tries.
        """
        await self._purge_if_expired()
        full = self._key(key)
        for _ in range(MAX_ATTEMPTS):
            current, version = await self._get(key, default)
            new = change(current)
            if isinstance(new, Awaitable):
                new = await new
            data = encode(new, f"{self.name} value", key)
            try:
                if self._expiry_key is None or self.ttl is None:
                    await write(
                        self.store,
                        full,
                        version,
                        data,
                        kind="context.written",
                        trace_id=self._trace,
                        actor=self.actor,
                        data={"scope": self.name, "key": key},
                    )
                else:
                    async with self.store.transaction() as tx:
                        tx.compare_and_set(full, version, data)
                        self._touch(tx)
                        tx.append(self._event("context.written", key))
            except ConflictError:
                continue
            return new
        raise ConflictError(full, -1, -1)

    async def clear(self) -> None:
        """Remove every key of this scope and owner."""
        entries = await self.store.list(self.prefix)
        async with self.store.transaction() as tx:
            for e in entries:
                tx.delete(e.key)
            if self._expiry_key is not None:
                tx.delete(self._expiry_key)
            tx.append(self._event("context.cleared", ""))

    # -- internals -------------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    async def _get(self, key: str, default: Any) -> tuple[Any, int]:
        entry = await self.store.get(self._key(key))
        if entry is None or await self._expired():
            return default, 0 if entry is None else entry.version
        return decode(entry.value, Any, f"stored {self.name} value"), entry.version

    async def _expired(self) -> bool:
        if self.ttl is None and self.name != "session":
            return False
        until = await self.expires_at()
        return until is not None and until <= self.clock.now()

    async def _purge_if_expired(self) -> bool:
        if not await self._expired():
            return False
        await self.clear()
        return True

    def _touch(self, tx: Any) -> None:
        if self._expiry_key is not None and self.ttl is not None:
            tx.put(self._expiry_key, encode(self.clock.now() + self.ttl, "session expiry"))

    def _event(self, kind: str, key: str) -> Event:
        return Event(
            kind=kind,
            trace_id=self._trace,
            actor=self.actor,
            subject=self.prefix + key,
            data={"scope": self.name, "key": key},
        )
