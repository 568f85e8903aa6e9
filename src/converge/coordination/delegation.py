"""Delegation of scope: signed grants, narrowed down chains, revoked with everything below them.

An agent's **root scope** is what it may do on its own authority; it comes from the
``root_scopes`` the protocol is built with (a mapping or a function from did to actions), and an
agent it does not name has none. An agent passes part of what it holds to another with a
``DelegationGrant`` it signs; the delegate may pass part of *that* on (a sub-delegation, naming
the grant it derives from as ``parent_id``), and so on, up to ``max_depth`` grants in a chain.
Scopes are exact action names plus ``"prefix:*"`` wildcards (see ``normalize_scope``).

Rules:

- a grant's scope must be covered by what its delegator holds: its root scope for a root grant,
  the parent grant's scope otherwise; the delegator must be the parent's delegate and the
  parent's whole chain live. So a sub-delegation can only narrow.
- a grant to oneself, or to an agent already up the chain, is a cycle and is refused.
- ``revoke`` may be called by the grant's delegator or any delegator up its chain; it revokes
  the grant and, in the same unit of work, every grant derived from it, transitively.
- ``check(agent, action)``: the action is in the agent's root scope, or in the scope of a grant to
  the agent whose chain is live now (no link revoked or expired, every signature verified, every
  link covering the action) and whose root delegator still holds the action in its root scope.

Signatures are verified when a grant is recorded and again when it is read back (a cache keyed by
the exact stored bytes makes the second time cheap); a grant whose stored bytes do not verify
confers nothing.

Keys: ``delegation/<id>`` (the sealed grant and its revocation), ``delegation-to/<did>/<id>`` and
``delegation-child/<parent>/<id>`` (indexes, so ``check`` and a revocation's cascade read
prefixes, not every grant).

Events (trace id: the chain's root grant id, or for ``require`` the caller's; actor: the acting
did; subject: the grant id, or for ``require`` the agent):

- ``delegation.granted``: ``delegator``, ``delegate``, ``scope``, ``parent_id``, ``expires_at``;
- ``delegation.revoked`` (one per grant revoked): ``delegator``, ``delegate``, ``scope``,
  ``revoked_by``, ``cascade_from`` (the grant the revocation was asked for; None for that one);
- ``delegation.refused``: ``act`` (``"delegate"``, ``"revoke"`` or ``"act"``), ``reason``,
  ``error`` (the class), ``message``, and ``extra`` (over-scope), ``chain`` (cycle) or ``action``
  (``require``).

Every refusal is recorded as ``delegation.refused`` and then raised. Malformed input (a bad
scope, did or expiry, an unknown grant to revoke) is a ``ValidationError`` and records nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from converge.coordination._delegation_core import (
    DelegationCycle,
    DelegationGrant,
    DelegationRefused,
    GrantRecord,
    OutOfScope,
    RootScopes,
    ScopeExceeded,
    StoredGrant,
    allows,
    chain_allows,
    check_issue,
    check_name,
    child_key,
    covers,
    decode_stored,
    delegation_event,
    describe_grant,
    encode_stored,
    grant_key,
    normalize_scope,
    read_record,
    refused_event,
    root_scope_reader,
    to_key,
    uncovered,
)
from converge.core.clock import Clock, on_clock, system_clock
from converge.core.identity import Identity
from converge.core.ids import new_id
from converge.errors import ConflictError, ConvergeError, SignatureError, ValidationError
from converge.store.base import Entry, Store

__all__ = [
    "DelegationCycle",
    "DelegationGrant",
    "DelegationProtocol",
    "DelegationRefused",
    "GrantRecord",
    "OutOfScope",
    "RootScopes",
    "ScopeExceeded",
    "covers",
    "normalize_scope",
    "uncovered",
]

_MAX_RETRIES = 32


class DelegationProtocol:
    """Delegation grants over a ``Store``.

    Args:
        store: where grants and their events live.
        clock: the time source for issue times and expiry (wall-clock by default).
        root_scopes: each agent's own authority; None: no agent has any (only grants count,
            and no root grant can be issued).
        id_factory: makes grant ids.
        max_depth: the most grants a chain may hold (a root grant is 1).
    """

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock = system_clock,
        root_scopes: RootScopes | None = None,
        id_factory: Callable[[], str] = new_id,
        max_depth: int = 8,
    ) -> None:
        if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 1:
            raise ValidationError(
                f"max_depth must be an int >= 1, not {max_depth!r}", field="max_depth"
            )
        self.store = store
        self.clock = clock
        self.id_factory = id_factory
        self.max_depth = max_depth
        self._roots = root_scope_reader(root_scopes)

    def root_scope(self, agent: str) -> tuple[str, ...]:
        """What ``agent`` may do on its own authority (empty for an agent not named)."""
        return normalize_scope(self._roots(agent))

    # -- issuing -----------------------------------------------------------------------------------

    async def delegate(
        self,
        delegator: Identity,
        delegate: str,
        scope: Iterable[str],
        *,
        expires_at: float | None = None,
        parent_id: str | None = None,
        grant_id: str | None = None,
    ) -> DelegationGrant:
        """Grant ``delegate`` the actions ``scope``, signed by ``delegator``.

        Args:
            delegator: the granting agent's identity (with its private key).
            delegate: the did that receives the scope.
            scope: the actions granted (see ``normalize_scope``).
            expires_at: when the grant lapses (the protocol's clock); None: only when revoked.
            parent_id: the grant to ``delegator`` this one narrows; None: a root grant from
                ``delegator``'s own root scope.
            grant_id: the id to use; None: a new one.

        Raises:
            ValidationError: a bad did, scope, id or expiry (not after now).
            ScopeExceeded: ``scope`` is not covered by what ``delegator`` holds (``extra``).
            DelegationCycle: ``delegate`` is ``delegator`` or already up the chain (``chain``).
            DelegationRefused: an unknown or dead parent, a parent not made to ``delegator``, or
                a chain deeper than ``max_depth`` (``reason``).
            ConflictError: a different grant with this id exists.
        """
        grant = DelegationGrant(
            id=self.id_factory() if grant_id is None else grant_id,
            delegate=check_name(delegate, "delegate"),
            scope=normalize_scope(scope),
            issued_at=self.clock.now(),
            parent_id=parent_id,
            expires_at=expires_at,
        ).sign(delegator)
        return await self.record(grant)

    async def record(self, grant: DelegationGrant) -> DelegationGrant:
        """Store a grant signed elsewhere (received from the delegator's own runtime), under the
        same rules as ``delegate``. Recording the same grant twice is a no-op.

        Raises:
            SignatureError: the grant is unsigned, or not signed by the delegator it names.
            (and everything ``delegate`` raises)
        """
        if not isinstance(grant, DelegationGrant):
            raise ValidationError(f"expected a DelegationGrant, not {grant!r}", field="grant")
        try:
            grant.verify()
        except SignatureError as exc:
            raise await self._refused(
                exc, "delegate", grant.delegator, grant.id, grant.id
            ) from None
        if grant.expires_at is not None and grant.expires_at <= self.clock.now():
            raise ValidationError(f"grant {grant.id} has already expired", field="expires_at")
        sealed = grant.seal()
        conflict: ConflictError | None = None
        for _ in range(_MAX_RETRIES):
            now = self.clock.now()
            entry = await self.store.get(grant_key(grant.id))
            if entry is not None:
                if decode_stored(entry.value).sealed == sealed:
                    return grant
                raise ConflictError(grant_key(grant.id), 0, entry.version)
            parents = await self._parents(grant)
            links = [record for record, _ in parents or ()]
            trace = links[-1].grant.id if links else grant.id
            root = links[-1].grant.delegator if links else grant.delegator
            try:
                check_issue(
                    grant,
                    links if parents is not None else None,
                    self.root_scope(root),
                    now=now,
                    max_depth=self.max_depth,
                )
            except DelegationRefused as exc:
                raise await self._refused(
                    exc, "delegate", grant.delegator, grant.id, trace
                ) from None
            try:
                async with self.store.transaction() as tx:
                    tx.put_if_absent(grant_key(grant.id), encode_stored(StoredGrant(sealed)))
                    tx.put(to_key(grant.delegate, grant.id), grant.id.encode())
                    if parents:
                        parent, read = parents[0]
                        # Rewrite the parent as it was read: a revocation that commits first
                        # changes its version, so this grant cannot hang off a revoked parent.
                        tx.compare_and_set(read.key, read.version, read.value)
                        tx.put(child_key(parent.grant.id, grant.id), grant.id.encode())
                    tx.append(
                        delegation_event(
                            "delegation.granted",
                            trace,
                            grant.delegator,
                            grant.id,
                            now,
                            delegator=grant.delegator,
                            delegate=grant.delegate,
                            scope=list(grant.scope),
                            parent_id=grant.parent_id,
                            expires_at=grant.expires_at,
                        )
                    )
            except ConflictError as exc:
                conflict = exc
                continue  # the parent changed (or the id was taken) since the read: read again
            return grant
        assert conflict is not None
        raise conflict

    # -- revoking ----------------------------------------------------------------------------------

    async def revoke(self, revoker: str, grant_id: str) -> list[str]:
        """Revoke a grant and every grant derived from it, in one unit of work.

        Args:
            revoker: the (authenticated) did revoking: the grant's delegator or a delegator up
                its chain.
            grant_id: the grant.

        Returns:
            The ids revoked by this call, the grant first, then its descendants outward; empty
            when the grant was already revoked (its descendants went with it).

        Raises:
            ValidationError: no such grant, or a bad did.
            SignatureError: the stored grant does not verify.
            DelegationRefused: ``revoker`` is no delegator up the chain (``"not_in_chain"``).
        """
        check_name(revoker, "revoker")
        check_name(grant_id, "grant_id")
        conflict: ConflictError | None = None
        for _ in range(_MAX_RETRIES):
            now = self.clock.now()
            entry = await self.store.get(grant_key(grant_id))
            if entry is None:
                raise ValidationError(f"no delegation grant {grant_id!r}", field="grant_id")
            target = read_record(entry.value)
            ancestors = await self._chain(target.grant.parent_id, strict=False)
            chain = [target, *(r for r, _ in ancestors)]
            trace = chain[-1].grant.id
            if revoker not in {r.grant.delegator for r in chain}:
                refusal = DelegationRefused(
                    revoker,
                    "revoke",
                    grant_id,
                    "not_in_chain",
                    "it is not the delegator of the grant nor of any grant above it",
                )
                raise await self._refused(refusal, "revoke", revoker, grant_id, trace)
            if target.revoked:
                return []
            doomed = await self._subtree(grant_id, decode_stored(entry.value), entry.version)
            try:
                async with self.store.transaction() as tx:
                    for gid, stored, version in doomed:
                        cascade = None if gid == grant_id else grant_id
                        revoked = msgspec.structs.replace(
                            stored, revoked_at=now, revoked_by=revoker, cascade_from=cascade
                        )
                        tx.compare_and_set(grant_key(gid), version, encode_stored(revoked))
                        tx.append(
                            delegation_event(
                                "delegation.revoked",
                                trace,
                                revoker,
                                gid,
                                now,
                                revoked_by=revoker,
                                cascade_from=cascade,
                                **describe_grant(stored.sealed),
                            )
                        )
            except ConflictError as exc:
                conflict = exc
                continue  # a grant was derived or revoked meanwhile: read the tree again
            return [gid for gid, _, _ in doomed]
        assert conflict is not None
        raise conflict

    # -- acting ------------------------------------------------------------------------------------

    async def check(self, agent: str, action: str, now: float | None = None) -> bool:
        """Whether ``agent`` may do ``action`` now: its root scope covers it, or a grant to it
        whose chain is live does (see the module docstring).

        Args:
            agent: the did acting.
            action: a concrete action name (no wildcard).
            now: the time to judge expiry by; the protocol's clock by default.
        """
        now = on_clock(now, self.clock, what="grant expiries")
        check_name(agent, "agent")
        if not isinstance(action, str) or not action or "*" in action:
            raise ValidationError(f"invalid action {action!r}", field="action")
        if allows(self.root_scope(agent), action):
            return True
        for entry in await self.store.list(f"delegation-to/{agent}/"):
            try:
                chain = [r for r, _ in await self._chain(entry.key.rsplit("/", 1)[1])]
            except _BrokenChain:
                continue  # a missing or tampered link confers nothing
            # The index is not signed: the grant itself must name the agent.
            if chain[0].grant.delegate != agent:
                continue
            root = self.root_scope(chain[-1].grant.delegator)
            if chain_allows(chain, root, action, now):
                return True
        return False

    async def require(
        self, agent: str, action: str, *, now: float | None = None, trace_id: str | None = None
    ) -> None:
        """``check``, for the executor before it acts for ``agent``: a refusal is recorded as a
        ``delegation.refused`` event (in ``trace_id``, by default the agent's did) and raised.

        Raises:
            OutOfScope: ``agent`` may not do ``action`` (both named).
        """
        if await self.check(agent, action, now):
            return
        refusal = OutOfScope(agent, action)
        trace = agent if trace_id is None else trace_id
        raise await self._refused(refusal, "act", agent, agent, trace, action=action)

    # -- reading -----------------------------------------------------------------------------------

    async def get(self, grant_id: str) -> GrantRecord | None:
        """The grant with its revocation, or None.

        Raises:
            SignatureError: the stored grant does not verify (it was tampered with).
        """
        entry = await self.store.get(grant_key(check_name(grant_id, "grant_id")))
        return None if entry is None else read_record(entry.value)

    async def grants_of(self, agent: str) -> list[GrantRecord]:
        """Every grant made to ``agent``, live or not, in id order; grants whose stored bytes do
        not verify are left out (``get`` raises for them)."""
        out: list[GrantRecord] = []
        for entry in await self.store.list(f"delegation-to/{check_name(agent, 'agent')}/"):
            grant_entry = await self.store.get(grant_key(entry.key.rsplit("/", 1)[1]))
            if grant_entry is None:  # pragma: no cover - written together
                continue
            try:
                record = read_record(grant_entry.value)
            except ConvergeError:
                continue
            if record.grant.delegate == agent:
                out.append(record)
        return out

    # -- internals ---------------------------------------------------------------------------------

    async def _parents(self, grant: DelegationGrant) -> list[tuple[GrantRecord, Entry]] | None:
        """The chain above ``grant`` (empty for a root grant); None: its parent does not exist.
        A parent whose own chain is broken is refused here as not live."""
        if grant.parent_id is None:
            return []
        try:
            return await self._chain(grant.parent_id)
        except _BrokenChain as broken:
            if broken.missing and broken.grant_id == grant.parent_id:
                return None
            refusal = DelegationRefused(
                grant.delegator,
                "delegate",
                grant.id,
                "parent_not_live",
                f"the chain of grant {grant.parent_id} is broken at {broken.grant_id}",
            )
            raise await self._refused(
                refusal, "delegate", grant.delegator, grant.id, grant.id
            ) from None

    async def _chain(
        self, grant_id: str | None, *, strict: bool = True
    ) -> list[tuple[GrantRecord, Entry]]:
        """The grant ``grant_id`` and its ancestors, verified, with their versions. A missing or
        unverifiable link, or a chain longer than ``max_depth``, raises ``_BrokenChain``
        (``strict``) or ends the list there."""
        out: list[tuple[GrantRecord, Entry]] = []
        gid = grant_id
        while gid is not None:
            try:
                if len(out) >= self.max_depth:
                    raise _BrokenChain(gid, missing=False)
                entry = await self.store.get(grant_key(gid))
                if entry is None:
                    raise _BrokenChain(gid, missing=True)
                try:
                    record = read_record(entry.value)
                except ConvergeError:
                    raise _BrokenChain(gid, missing=False) from None
                if record.grant.id != gid:  # stored under another grant's key
                    raise _BrokenChain(gid, missing=False)
            except _BrokenChain:
                if strict:
                    raise
                return out
            out.append((record, entry))
            gid = record.grant.parent_id
        return out

    async def _subtree(
        self, grant_id: str, stored: StoredGrant, version: int
    ) -> list[tuple[str, StoredGrant, int]]:
        """``grant_id`` and every grant derived from it that is not revoked yet, breadth first,
        read through the parent index."""
        found = [(grant_id, stored, version)]
        seen = {grant_id}
        i = 0
        while i < len(found):
            parent = found[i][0]
            i += 1
            for child in await self.store.list(f"delegation-child/{parent}/"):
                cid = child.key.rsplit("/", 1)[1]
                entry = None if cid in seen else await self.store.get(grant_key(cid))
                seen.add(cid)
                if entry is None:
                    continue
                child_stored = decode_stored(entry.value)
                if child_stored.revoked_at is None:
                    found.append((cid, child_stored, entry.version))
        return found

    async def _refused(
        self,
        exc: ConvergeError,
        act: str,
        actor: str,
        subject: str,
        trace_id: str,
        **data: Any,
    ) -> ConvergeError:
        """Record ``exc`` as a ``delegation.refused`` event and return it, to be raised."""
        event = refused_event(exc, act, actor, subject, trace_id, self.clock.now(), **data)
        await self.store.append([event])
        return exc


class _BrokenChain(Exception):  # control flow inside this module, never raised out of it
    def __init__(self, grant_id: str, *, missing: bool) -> None:
        self.grant_id = grant_id
        self.missing = missing
