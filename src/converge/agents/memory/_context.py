"""Context isolation: an agent sees only the scopes and keys granted.

``Grants`` say which keys of which scope an agent may read and which it may write (patterns as
in ``fnmatch``: ``"history"``, ``"notes/*"``, ``"*"``). A ``Context`` wraps the scopes of one
execution — its request, session, agent, run and the global scope — and checks every call
against the grants before touching them: anything not granted raises ``ContextAccessDenied``
(a ``PolicyViolation``) naming the scope, the key and the access, and nothing is read or
written. Write does not imply read, and ``update`` needs both; ``Grants.of({...})`` grants both
at once. ``keys(scope)`` lists only readable keys. Grants naming a scope the context has no owner
for (no run id for ``graph``) are refused when the context is built. ``ContextScopes`` builds
contexts over one store.

A graph node gets its context as ``ctx.context`` when the engine has
``Services(memory=ContextScopes(store))``: with the grants of its agent's name — the graph's
``grants:`` (YAML top level, or ``Graph.grants``) first, else ``Services.grants``, else none (it
sees nothing). The request scope is one per run, shared by its nodes; the session is the graph
input ``session_id`` (if given); the agent scope is the agent's name; the graph scope is the
run's trace (a subgraph shares its parent's).
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from types import TracebackType
from typing import Any, Literal, Self

import msgspec

from converge.agents.memory._scopes import (
    SCOPES,
    Change,
    RequestScope,
    Scope,
    ScopeName,
    StoredScope,
)
from converge.core.clock import Clock, system_clock
from converge.errors import ContextAccessDenied, ValidationError
from converge.store.base import Store

__all__ = ["Access", "Context", "ContextScopes", "Grants"]

Access = Literal["read", "write"]


class Grants(msgspec.Struct, frozen=True):
    """Which keys of which scopes an agent may read and write.

    ``Grants.of({"session": ["history"], "global": ["*"]})`` grants read and write alike;
    ``Grants(read={...}, write={...})`` grants them separately (write does not imply read).
    """

    read: dict[str, tuple[str, ...]] = msgspec.field(default_factory=dict)
    """Scope name -> key patterns that may be read."""
    write: dict[str, tuple[str, ...]] = msgspec.field(default_factory=dict)
    """Scope name -> key patterns that may be written (set, update, delete)."""

    def __post_init__(self) -> None:
        for access, table in (("read", self.read), ("write", self.write)):
            for scope, patterns in table.items():
                if scope not in SCOPES:
                    raise ValidationError(
                        f"unknown scope {scope!r} in grants; scopes are {', '.join(SCOPES)}",
                        field=f"{access}.{scope}",
                    )
                if isinstance(patterns, str) or not all(isinstance(p, str) and p for p in patterns):
                    raise ValidationError(
                        f"grants for {scope!r} are a list of key patterns, not {patterns!r}",
                        field=f"{access}.{scope}",
                    )

    @classmethod
    def of(cls, grants: Mapping[str, Sequence[str]]) -> Grants:
        """Read and write on the same keys: ``{"session": ["history"], "global": ["*"]}``."""
        for scope, keys in grants.items():
            if isinstance(keys, str):  # tuple() would grant each of its characters
                raise ValidationError(
                    f"grants for {scope!r} are a list of key patterns, not {keys!r}",
                    field=f"read.{scope}",
                )
        table = {scope: tuple(keys) for scope, keys in grants.items()}
        return cls(read=table, write=dict(table))

    def allows(self, access: Access, scope: str, key: str) -> bool:
        """Whether ``access`` to ``key`` of ``scope`` is granted."""
        table = self.read if access == "read" else self.write
        return any(fnmatchcase(key, p) for p in table.get(scope, ()))

    def scopes(self) -> builtins.set[str]:
        """Every scope named in the grants."""
        return set(self.read) | set(self.write)


class Context:
    """What an agent gets: the scopes of its execution, seen through its grants.

    Use it as ``async with`` (or call ``aclose()``) so the request scope is dropped when the
    request ends.

    Args:
        scopes: the scopes of this execution by name.
        grants: what the agent may read and write.
        agent: the agent's did, named in refusals.
    """

    def __init__(
        self,
        scopes: Mapping[ScopeName, Scope],
        grants: Grants | Mapping[str, Sequence[str]],
        *,
        agent: str = "",
    ) -> None:
        self.grants = grants if isinstance(grants, Grants) else Grants.of(grants)
        missing = sorted(self.grants.scopes() - set(scopes))
        if missing:
            raise ValidationError(
                f"grants name the {', '.join(missing)} scope, which this context does not have "
                "(pass its session id, agent or run id)",
                field="grants",
            )
        self._scopes = dict(scopes)
        self.agent = agent

    async def get(self, scope: ScopeName, key: str, default: Any = None) -> Any:
        """The value of ``key`` in ``scope``, or ``default``.

        Raises:
            ContextAccessDenied: reading ``key`` of ``scope`` is not granted.
        """
        return await self._scope("read", scope, key).get(key, default)

    async def set(self, scope: ScopeName, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` in ``scope``.

        Raises:
            ContextAccessDenied: writing ``key`` of ``scope`` is not granted.
        """
        await self._scope("write", scope, key).set(key, value)

    async def update(self, scope: ScopeName, key: str, change: Change, default: Any = None) -> Any:
        """Replace ``key``'s value by ``change(value or default)`` without losing a concurrent
        update; needs both read and write on ``key``.

        Raises:
            ContextAccessDenied: reading or writing ``key`` of ``scope`` is not granted.
        """
        self._scope("read", scope, key)
        return await self._scope("write", scope, key).update(key, change, default)

    async def delete(self, scope: ScopeName, key: str) -> bool:
        """Remove ``key`` from ``scope``; returns whether it was there.

        Raises:
            ContextAccessDenied: writing ``key`` of ``scope`` is not granted.
        """
        return await self._scope("write", scope, key).delete(key)

    async def keys(self, scope: ScopeName) -> builtins.list[str]:
        """The keys of ``scope`` this agent may read (others stay invisible).

        Raises:
            ContextAccessDenied: nothing in ``scope`` is readable.
        """
        if not self.grants.read.get(scope):
            raise ContextAccessDenied(scope, "", "read", self.agent)
        found = await self._scopes[scope].keys()
        return [k for k in found if self.grants.allows("read", scope, k)]

    def can(self, access: Access, scope: ScopeName, key: str) -> bool:
        """Whether ``access`` to ``key`` of ``scope`` would be allowed."""
        return scope in self._scopes and self.grants.allows(access, scope, key)

    async def aclose(self) -> None:
        """End the request: drop the request scope's values. Idempotent."""
        request = self._scopes.get("request")
        if isinstance(request, RequestScope):
            request.clear()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _scope(self, access: Access, scope: str, key: str) -> Scope:
        if not isinstance(key, str) or not key:
            raise ValidationError(f"a context key is a non-empty str, not {key!r}", field="key")
        if not self.grants.allows(access, scope, key) or scope not in self._scopes:
            raise ContextAccessDenied(scope, key, access, self.agent)
        return self._scopes[scope]


class ContextScopes:
    """Builds scopes and contexts over one store.

    Args:
        store: where session, agent, graph and global values are kept.
        session_ttl: default expiry of sessions, in seconds after their last write (None: none).
        clock: the time source for session expiry.
    """

    def __init__(
        self, store: Store, *, session_ttl: float | None = None, clock: Clock = system_clock
    ) -> None:
        self.store = store
        self.session_ttl = session_ttl
        self.clock = clock

    def scope(self, name: ScopeName, owner: str | None = None, *, actor: str = "") -> Scope:
        """One scope, unchecked (for the platform's own code, not for agents): ``request`` is
        new each call; ``global`` has no owner; the others need theirs."""
        if name == "request":
            return RequestScope()
        ttl = self.session_ttl if name == "session" else None
        return StoredScope(self.store, name, owner, ttl=ttl, clock=self.clock, actor=actor)

    def context(
        self,
        grants: Grants | Mapping[str, Sequence[str]],
        *,
        agent: str | None = None,
        session_id: str | None = None,
        run_id: str | None = None,
        request: RequestScope | None = None,
    ) -> Context:
        """The context an agent gets for one execution.

        Args:
            grants: what the agent may read and write.
            agent: its did (the owner of the agent scope, and named in refusals).
            session_id: the session, for the session scope.
            run_id: the graph run, for the graph scope.
            request: the request scope to share (a new one by default).

        Raises:
            ValidationError: the grants name a scope whose owner was not given.
        """
        actor = agent or ""
        scopes: dict[ScopeName, Scope] = {
            "request": request if request is not None else RequestScope(),
            "global": self.scope("global", actor=actor),
        }
        if session_id is not None:
            scopes["session"] = self.scope("session", session_id, actor=actor)
        if agent is not None:
            scopes["agent"] = self.scope("agent", agent, actor=actor)
        if run_id is not None:
            scopes["graph"] = self.scope("graph", run_id, actor=actor)
        return Context(scopes, grants, agent=actor)
