"""Delegation of scope: signed grants, narrowed chains, revocation.

A grant is revoked with everything below it.

An agent's **root scope** is what it may do on its own authority; it comes from the
``root_scopes`` the protocol is built with (a mapping or a function from did to actions), and an
agent it does not name has none. An agent passes part of what it holds to another with a
``DelegationGrant`` it signs; the delegate may pass part of *that* on (a sub-delegation, naming
the grant it derives from as ``parent_id``), and so on, up to ``max_depth`` (8) grants in a
chain.
Scopes are exact action names plus ``"prefix:*"`` wildcards (see ``normalize_scope``).

Rules:

- a grant's scope must be covered by what its delegator holds: its root scope for a root grant,
  the parent grant's scope otherwise; the delegator must be the parent's delegate and the
  parent's whole chain live. So a sub-delegation can only narrow.
- a grant to oneself, or to an agent already up the chain, is a cycle and is refused
  (``DelegationCycle``, naming the chain).
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

A **scope** is a set of action names, kept as a sorted tuple so a grant's signed bytes are
canonical. An entry is either an exact name (``"claim_task"``, ``"invoke_tool:search"``) or a
wildcard ``"<prefix>:*"`` that covers every name starting with ``"<prefix>:"`` (``"invoke_tool:*"``
covers ``"invoke_tool:search"`` and the narrower wildcard ``"invoke_tool:web:*"``). Nothing else
is special: there is no bare ``"*"``, and ``"*"`` may appear only as a wildcard's last character.
A **chain** is a grant followed by its ancestors, parent first, ending with a root grant
(``parent_id`` None) issued by an agent on its own authority.

The rules are pure functions of a chain and the time (``_check_issue``, ``_chain_allows``); the
protocol reads the chain from the store and hands it to them. Grants have no state machine of
their own, so the scope algebra, those rules, the stored form, keys and events live in this one
module beside ``DelegationProtocol``. ``require(agent, action)`` is ``check`` that records
``delegation.refused`` and raises ``OutOfScope`` on a refusal. The ``StandardExecutor``, given a
``delegation_protocol``, runs ``Delegate``/``RevokeDelegation`` through it and calls ``require``
before every other decision, the action being the decision's tag (``invoke_tool:<tool>`` for
tools).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import msgspec

from converge.core.clip import clip, clip_text
from converge.core.clock import Clock, on_clock, system_clock
from converge.core.identity import Identity
from converge.core.ids import new_id
from converge.core.signing import Signed, unseal
from converge.errors import (
    ConflictError,
    ConvergeError,
    DelegationCycle,
    DelegationRefused,
    OutOfScope,
    ProtocolError,
    ScopeExceeded,
    SignatureError,
    ValidationError,
)
from converge.protocol.event import Event
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

RootScopes = Mapping[str, Iterable[str]] | Callable[[str], Iterable[str]]
"""Each agent's own authority: did -> actions, as a mapping or a function (read at every use)."""

_WILDCARD = ":*"


# -- errors ------------------------------------------------------------------------------------


# -- objects -----------------------------------------------------------------------------------


class DelegationGrant(Signed, frozen=True, tag="delegation_grant"):
    """Part of the delegator's scope, granted to the delegate (signed by the delegator)."""

    __signers__: ClassVar[tuple[tuple[str, str], ...]] = (("signature", "delegator"),)

    id: str
    """Unique id; the store key is ``delegation/<id>``."""
    delegate: str
    """The did the scope is granted to."""
    scope: tuple[str, ...]
    """The granted actions: exact names and ``"prefix:*"`` wildcards, sorted, no repeats."""
    issued_at: float
    """When it was issued (seconds since the epoch)."""
    parent_id: str | None = None
    """The grant this one narrows; None: a root grant, on the delegator's own authority."""
    expires_at: float | None = None
    """It lapses at this time; None: only when revoked. A chain lapses with its first link."""
    delegator: str = ""
    """The granting agent's did; set by ``sign()``."""
    signature: bytes | None = None
    """The delegator's signature."""

    def __post_init__(self) -> None:
        _check_name(self.id, "id")
        _check_name(self.delegate, "delegate")
        if self.parent_id is not None:
            _check_name(self.parent_id, "parent_id")
        for name in ("issued_at", "expires_at"):
            value = getattr(self, name)
            if value is None and name == "expires_at":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValidationError(f"`{name}` is a time, not {value!r}", field=name)
            if not math.isfinite(value):
                raise ValidationError(f"`{name}` is a finite time, not {value!r}", field=name)
        if normalize_scope(self.scope) != self.scope:
            raise ValidationError(
                "a grant's scope is sorted, without repeats (use normalize_scope)", field="scope"
            )
        if self.expires_at is not None and self.expires_at <= self.issued_at:
            raise ValidationError(
                f"expires_at {self.expires_at} is not after issued_at {self.issued_at}",
                field="expires_at",
            )

    def live_at(self, now: float) -> bool:
        """Whether it has not yet expired at ``now`` (revocation is the store's to say)."""
        return self.expires_at is None or now < self.expires_at


class GrantRecord(msgspec.Struct, frozen=True):
    """A stored grant as read back (its signature verified) with its revocation."""

    grant: DelegationGrant
    """The grant."""
    revoked_at: float | None = None
    """When it was revoked; None: it was not."""
    revoked_by: str = ""
    """The did that revoked it (this grant, or the ancestor the revocation cascaded from)."""
    cascade_from: str | None = None
    """The grant whose revocation revoked this one; None: revoked directly, or not revoked."""

    @property
    def revoked(self) -> bool:
        """Whether it was revoked."""
        return self.revoked_at is not None

    def live_at(self, now: float) -> bool:
        """Neither revoked nor expired at ``now`` (this link only; see ``_chain_allows``)."""
        return self.revoked_at is None and self.grant.live_at(now)


# -- scope algebra -----------------------------------------------------------------------------


def normalize_scope(scope: Iterable[str]) -> tuple[str, ...]:
    """``scope`` as a grant holds it: sorted, without repeats.

    Raises:
        ValidationError: ``scope`` is a bare string, or an entry is not a non-empty string, or
            holds ``"*"`` anywhere but as the last character of a ``"prefix:*"`` wildcard.
    """
    if isinstance(scope, (str, bytes)):
        raise ValidationError(f"a scope is a collection of actions, not {scope!r}", field="scope")
    try:
        items = list(scope)
    except TypeError:
        raise ValidationError(
            f"a scope is a collection of actions, not {scope!r}", field="scope"
        ) from None
    for item in items:
        if not isinstance(item, str) or not item or item.isspace():
            raise ValidationError(f"invalid action {item!r} in a scope", field="scope")
        head = item[:-2] if item.endswith(_WILDCARD) else item
        if not head or "*" in head:
            raise ValidationError(
                f"invalid action {item!r}: '*' is allowed only as a 'prefix:*' wildcard",
                field="scope",
            )
    return tuple(sorted(set(items)))


def _check_name(value: object, field: str) -> str:
    """``value`` if it can name an agent or a grant in a store key (a non-empty str without
    ``"/"``), else raise ``ValidationError`` naming ``field``."""
    if not isinstance(value, str) or not value or "/" in value or value.isspace():
        raise ValidationError(f"invalid {field} {value!r}", field=field)
    return value


def covers(held: str, wanted: str) -> bool:
    """Whether the scope entry ``held`` covers ``wanted`` (an action or a narrower entry)."""
    if held == wanted:
        return True
    return held.endswith(_WILDCARD) and wanted.startswith(held[:-1])


def uncovered(held: Iterable[str], wanted: Iterable[str]) -> tuple[str, ...]:
    """The entries of ``wanted`` that no entry of ``held`` covers, sorted."""
    held = tuple(held)
    return tuple(sorted({w for w in wanted if not any(covers(h, w) for h in held)}))


def _allows(scope: Iterable[str], action: str) -> bool:
    """Whether ``scope`` covers ``action``."""
    return any(covers(h, action) for h in scope)


def _root_scope_reader(root_scopes: RootScopes | None) -> Callable[[str], Iterable[str]]:
    """``root_scopes`` as a function from did to actions: a mapping is normalized once, here
    (an agent it does not name has none); None: no agent has any.

    Raises:
        ValidationError: ``root_scopes`` is neither a mapping nor a function, or a scope in the
            mapping is invalid.
    """
    if root_scopes is None:
        return lambda _did: ()
    if isinstance(root_scopes, Mapping):
        table = {did: normalize_scope(scope) for did, scope in root_scopes.items()}
        return lambda did: table.get(did, ())
    if callable(root_scopes):
        return root_scopes
    raise ValidationError(
        f"root_scopes is a mapping or a function, not {root_scopes!r}", field="root_scopes"
    )


# -- issuing -----------------------------------------------------------------------------------


def _check_issue(
    grant: DelegationGrant,
    parents: Sequence[GrantRecord] | None,
    root_scope: Sequence[str],
    *,
    now: float,
    max_depth: int,
) -> None:
    """Raise unless ``grant`` (signature already verified) may be issued.

    Args:
        grant: the new grant.
        parents: its parent's chain (the parent first, the root last; each verified), or None
            when ``grant.parent_id`` names no stored grant. Empty for a root grant.
        root_scope: the root delegator's own authority (the new grant's delegator for a root
            grant).
        now: the current time.
        max_depth: the most grants a chain may hold, the new one included.

    Raises:
        DelegationRefused: the checks below, in this order — an unknown parent; a delegator who
            is not the parent's delegate; a parent chain not live now; a cycle
            (``DelegationCycle``: a delegate already in the chain, or the delegator itself); a
            chain longer than ``max_depth``; a scope wider than the delegator holds
            (``ScopeExceeded``).
    """
    who, gid = grant.delegator, grant.id

    def refuse(reason: str, detail: str) -> DelegationRefused:
        return DelegationRefused(who, "delegate", gid, reason, detail)

    if parents is None:
        raise refuse("unknown_parent", f"there is no grant {grant.parent_id}")
    if grant.parent_id is not None:
        parent = parents[0].grant
        if parent.delegate != who:
            raise refuse("not_parent_delegate", f"grant {parent.id} was made to {parent.delegate}")
        if not _chain_live(parents, now):
            raise refuse("parent_not_live", f"grant {parent.id} or an ancestor is not live")
    path = [r.grant.delegator for r in reversed(parents)] + [who]
    if grant.delegate in path:
        raise DelegationCycle(who, gid, [*path, grant.delegate])
    if len(parents) + 1 > max_depth:
        raise refuse("too_deep", f"its chain would hold {len(parents) + 1} > {max_depth} grants")
    held = parents[0].grant.scope if parents else root_scope
    extra = uncovered(held, grant.scope)
    if extra:
        raise ScopeExceeded(who, gid, extra)


# -- acting ------------------------------------------------------------------------------------


def _chain_live(chain: Sequence[GrantRecord], now: float) -> bool:
    """Whether every link of ``chain`` is live at ``now`` and the links fit together: each grant
    names the next as parent, was made by that parent's delegate, narrows its scope, and the
    last is a root grant."""
    if not chain or chain[-1].grant.parent_id is not None:
        return False
    for i, record in enumerate(chain):
        if not record.live_at(now):
            return False
        if i + 1 < len(chain):
            grant, parent = record.grant, chain[i + 1].grant
            if (
                grant.parent_id != parent.id
                or grant.delegator != parent.delegate
                or uncovered(parent.scope, grant.scope)
            ):
                return False
    return True


def _chain_allows(
    chain: Sequence[GrantRecord], root_scope: Sequence[str], action: str, now: float
) -> bool:
    """Whether ``chain`` (a grant to the agent, then its ancestors) lets its delegate do
    ``action`` at ``now``: the whole chain is live, every link covers the action, and so does the
    root delegator's own authority today (``root_scope``: withdrawing an agent's root scope
    withdraws everything it delegated)."""
    return (
        _chain_live(chain, now)
        and all(_allows(r.grant.scope, action) for r in chain)
        and _allows(root_scope, action)
    )


# -- the protocol ---------------------------------------------------------------------------------

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
        self._roots = _root_scope_reader(root_scopes)

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
            delegate=_check_name(delegate, "delegate"),
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
            entry = await self.store.get(_grant_key(grant.id))
            if entry is not None:
                if _decode_stored(entry.value).sealed == sealed:
                    return grant
                raise ConflictError(_grant_key(grant.id), 0, entry.version)
            parents = await self._parents(grant)
            links = [record for record, _ in parents or ()]
            trace = links[-1].grant.id if links else grant.id
            root = links[-1].grant.delegator if links else grant.delegator
            try:
                _check_issue(
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
                    tx.put_if_absent(_grant_key(grant.id), _encode_stored(_StoredGrant(sealed)))
                    tx.put(_to_key(grant.delegate, grant.id), grant.id.encode())
                    if parents:
                        parent, read = parents[0]
                        # Rewrite the parent as it was read: a revocation that commits first
                        # changes its version, so this grant cannot hang off a revoked parent.
                        tx.compare_and_set(read.key, read.version, read.value)
                        tx.put(_child_key(parent.grant.id, grant.id), grant.id.encode())
                    tx.append(
                        _delegation_event(
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
        _check_name(revoker, "revoker")
        _check_name(grant_id, "grant_id")
        conflict: ConflictError | None = None
        for _ in range(_MAX_RETRIES):
            now = self.clock.now()
            entry = await self.store.get(_grant_key(grant_id))
            if entry is None:
                raise ValidationError(f"no delegation grant {grant_id!r}", field="grant_id")
            target = _read_record(entry.value)
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
            doomed = await self._subtree(grant_id, _decode_stored(entry.value), entry.version)
            try:
                async with self.store.transaction() as tx:
                    for gid, stored, version in doomed:
                        cascade = None if gid == grant_id else grant_id
                        revoked = msgspec.structs.replace(
                            stored, revoked_at=now, revoked_by=revoker, cascade_from=cascade
                        )
                        tx.compare_and_set(_grant_key(gid), version, _encode_stored(revoked))
                        tx.append(
                            _delegation_event(
                                "delegation.revoked",
                                trace,
                                revoker,
                                gid,
                                now,
                                revoked_by=revoker,
                                cascade_from=cascade,
                                **_describe_grant(stored.sealed),
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
        _check_name(agent, "agent")
        if not isinstance(action, str) or not action or "*" in action:
            raise ValidationError(f"invalid action {action!r}", field="action")
        if _allows(self.root_scope(agent), action):
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
            if _chain_allows(chain, root, action, now):
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
        entry = await self.store.get(_grant_key(_check_name(grant_id, "grant_id")))
        return None if entry is None else _read_record(entry.value)

    async def grants_of(self, agent: str) -> list[GrantRecord]:
        """Every grant made to ``agent``, live or not, in id order; grants whose stored bytes do
        not verify are left out (``get`` raises for them)."""
        out: list[GrantRecord] = []
        for entry in await self.store.list(f"delegation-to/{_check_name(agent, 'agent')}/"):
            grant_entry = await self.store.get(_grant_key(entry.key.rsplit("/", 1)[1]))
            if grant_entry is None:  # pragma: no cover - written together
                continue
            try:
                record = _read_record(grant_entry.value)
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
                entry = await self.store.get(_grant_key(gid))
                if entry is None:
                    raise _BrokenChain(gid, missing=True)
                try:
                    record = _read_record(entry.value)
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
        self, grant_id: str, stored: _StoredGrant, version: int
    ) -> list[tuple[str, _StoredGrant, int]]:
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
                entry = None if cid in seen else await self.store.get(_grant_key(cid))
                seen.add(cid)
                if entry is None:
                    continue
                child_stored = _decode_stored(entry.value)
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
        event = _refused_event(exc, act, actor, subject, trace_id, self.clock.now(), **data)
        await self.store.append([event])
        return exc


class _BrokenChain(Exception):  # control flow inside this module, never raised out of it
    def __init__(self, grant_id: str, *, missing: bool) -> None:
        self.grant_id = grant_id
        self.missing = missing


# -- storing and logging -----------------------------------------------------------------------


class _StoredGrant(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """A grant as stored: its sealed bytes (verified on every read) and its revocation."""

    sealed: bytes
    """The sealed (signed, encoded) grant."""
    revoked_at: float | None = None
    """When it was revoked; None: it was not."""
    revoked_by: str = ""
    """The did that revoked it."""
    cascade_from: str | None = None
    """The grant whose revocation revoked this one; None: revoked directly, or not revoked."""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_StoredGrant)


def _encode_stored(stored: _StoredGrant) -> bytes:
    """``stored`` as the bytes kept under ``_grant_key``."""
    return _encoder.encode(stored)


def _decode_stored(value: bytes) -> _StoredGrant:
    """The ``_StoredGrant`` in ``value`` (raises ``msgspec.DecodeError`` if it is none)."""
    return _decoder.decode(value)


@functools.lru_cache(maxsize=4096)
def _open_grant(sealed: bytes) -> DelegationGrant:
    """Verify and decode a sealed grant. Cached by its exact bytes: bytes that differ in any
    way (a tampered scope) miss the cache and are verified afresh; failures are not cached."""
    return unseal(sealed, DelegationGrant)


def _read_record(value: bytes) -> GrantRecord:
    """The grant stored as ``value``, verified, with its revocation (``ProtocolError``: it does
    not decode; ``SignatureError``: it does not verify)."""
    try:
        stored = _decoder.decode(value)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"a stored delegation grant does not decode: {exc}") from exc
    return GrantRecord(
        _open_grant(stored.sealed),
        revoked_at=stored.revoked_at,
        revoked_by=stored.revoked_by,
        cascade_from=stored.cascade_from,
    )


def _describe_grant(sealed: bytes) -> dict[str, Any]:
    """A revoked grant's parties and scope for its event ({} if it no longer verifies)."""
    try:
        grant = _open_grant(sealed)
    except ConvergeError:
        return {}
    return {"delegator": grant.delegator, "delegate": grant.delegate, "scope": list(grant.scope)}


def _grant_key(grant_id: str) -> str:
    """Where a grant is stored."""
    return f"delegation/{grant_id}"


def _to_key(delegate: str, grant_id: str) -> str:
    """The index key of a grant under its delegate."""
    return f"delegation-to/{delegate}/{grant_id}"


def _child_key(parent_id: str, grant_id: str) -> str:
    """The index key of a grant under its parent."""
    return f"delegation-child/{parent_id}/{grant_id}"


def _delegation_event(
    kind: str, trace_id: str, actor: str, subject: str, at: float, **data: Any
) -> Event:
    """An event of the delegation protocol (``data`` as given)."""
    return Event(kind=kind, trace_id=trace_id, actor=actor, subject=subject, data=data, at=at)


def _refused_event(
    exc: ConvergeError, act: str, actor: str, subject: str, trace_id: str, at: float, **data: Any
) -> Event:
    """The ``delegation.refused`` event recording ``exc``: its reason, class and message, and
    ``extra`` (``ScopeExceeded``) or ``chain`` (``DelegationCycle``), plus ``data``."""
    # A refused request's ids and scope are the requester's claims (a grant that did not verify
    # names its own id, delegator and trace): every string is clipped for the log.
    reason = getattr(exc, "reason", "refused")
    if isinstance(exc, ScopeExceeded):
        data["extra"] = [clip(x) for x in exc.extra]
    elif isinstance(exc, DelegationCycle):
        data["chain"] = [clip(x) for x in exc.chain]
    elif isinstance(exc, OutOfScope):
        reason = "out_of_scope"
    return _delegation_event(
        "delegation.refused",
        clip(trace_id),
        clip(actor),
        clip(subject),
        at,
        act=act,
        reason=reason,
        error=type(exc).__name__,
        message=clip_text(exc.message),
        **{k: clip(v) if isinstance(v, str) else v for k, v in data.items()},
    )
