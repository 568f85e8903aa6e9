"""Delegation of scope, pure: the signed grant, the scope algebra, and the rules for issuing a
grant and for acting on one. No I/O, no clock: ``DelegationProtocol`` reads the chain of grants
from a store and hands it here with the current time.

A **scope** is a set of action names, kept as a sorted tuple so a grant's signed bytes are
canonical. An entry is either an exact name (``"claim_task"``, ``"invoke_tool:search"``) or a
wildcard ``"<prefix>:*"`` that covers every name starting with ``"<prefix>:"`` (``"invoke_tool:*"``
covers ``"invoke_tool:search"`` and the narrower wildcard ``"invoke_tool:web:*"``). Nothing else
is special: there is no bare ``"*"``, and ``"*"`` may appear only as a wildcard's last character.

A **chain** is a grant followed by its ancestors, parent first, ending with a root grant
(``parent_id`` None) issued by an agent on its own authority.

The rest of what the driver needs and that does no I/O lives here too: each agent's root scopes
as a function (``root_scope_reader``), a grant's stored form (``StoredGrant``, read back through
``read_record``), its store keys and its events.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import msgspec

from converge.core.clip import clip, clip_text
from converge.core.signing import Signed, unseal
from converge.errors import ConvergeError, PolicyViolation, ProtocolError, ValidationError
from converge.protocol.event import Event

__all__ = [
    "DelegationCycle",
    "DelegationGrant",
    "DelegationRefused",
    "GrantRecord",
    "OutOfScope",
    "RootScopes",
    "ScopeExceeded",
    "StoredGrant",
    "allows",
    "chain_allows",
    "chain_live",
    "check_issue",
    "check_name",
    "child_key",
    "covers",
    "decode_stored",
    "delegation_event",
    "describe_grant",
    "encode_stored",
    "grant_key",
    "normalize_scope",
    "open_grant",
    "read_record",
    "refused_event",
    "root_scope_reader",
    "to_key",
    "uncovered",
]

RootScopes = Mapping[str, Iterable[str]] | Callable[[str], Iterable[str]]
"""Each agent's own authority: did -> actions, as a mapping or a function (read at every use)."""

_WILDCARD = ":*"


# -- errors ------------------------------------------------------------------------------------


class DelegationRefused(PolicyViolation):
    """A delegation or revocation that policy does not allow.

    Attributes:
        agent_id: who tried (the delegator, or the revoker).
        act: ``"delegate"`` or ``"revoke"``.
        grant_id: the grant issued or revoked.
        reason: ``"unknown_parent"``, ``"not_parent_delegate"`` (the delegator does not hold the
            parent grant), ``"parent_not_live"`` (revoked, expired, or with a dead or unverifiable
            chain), ``"too_deep"``, ``"not_in_chain"`` (a revoker who is no delegator up the
            chain), and for the subclasses ``"over_scope"`` and ``"cycle"``.
    """

    def __init__(self, agent_id: str, act: str, grant_id: str, reason: str, detail: str) -> None:
        super().__init__(f"{agent_id} may not {act} grant {grant_id}: {detail}")
        self.agent_id = agent_id
        self.act = act
        self.grant_id = grant_id
        self.reason = reason


class ScopeExceeded(DelegationRefused):
    """A grant for actions its delegator does not hold (a sub-delegation can only narrow).

    Attributes:
        extra: the requested actions the delegator's own scope does not cover, sorted.
    """

    def __init__(self, agent_id: str, grant_id: str, extra: Sequence[str]) -> None:
        self.extra = tuple(extra)
        super().__init__(
            agent_id,
            "delegate",
            grant_id,
            "over_scope",
            f"it does not hold {', '.join(self.extra)}",
        )


class DelegationCycle(DelegationRefused):
    """A grant to an agent already in its chain (or to the delegator itself).

    Attributes:
        chain: the dids from the chain's root delegator down to the new delegate, who appears
            in it twice.
    """

    def __init__(self, agent_id: str, grant_id: str, chain: Sequence[str]) -> None:
        self.chain = tuple(chain)
        super().__init__(
            agent_id,
            "delegate",
            grant_id,
            "cycle",
            f"it would close the cycle {' -> '.join(self.chain)}",
        )


class OutOfScope(PolicyViolation):
    """An agent tried an action that neither its root scope nor a live grant covers.

    Attributes:
        agent_id: the agent.
        action: the action it tried.
    """

    def __init__(self, agent_id: str, action: str) -> None:
        super().__init__(
            f"{agent_id} may not {action}: it is not in its root scope nor in a live grant to it"
        )
        self.agent_id = agent_id
        self.action = action


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
        check_name(self.id, "id")
        check_name(self.delegate, "delegate")
        if self.parent_id is not None:
            check_name(self.parent_id, "parent_id")
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
        """Neither revoked nor expired at ``now`` (this link only; see ``chain_allows``)."""
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


def check_name(value: object, field: str) -> str:
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


def allows(scope: Iterable[str], action: str) -> bool:
    """Whether ``scope`` covers ``action``."""
    return any(covers(h, action) for h in scope)


def root_scope_reader(root_scopes: RootScopes | None) -> Callable[[str], Iterable[str]]:
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


def check_issue(
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
        if not chain_live(parents, now):
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


def chain_live(chain: Sequence[GrantRecord], now: float) -> bool:
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


def chain_allows(
    chain: Sequence[GrantRecord], root_scope: Sequence[str], action: str, now: float
) -> bool:
    """Whether ``chain`` (a grant to the agent, then its ancestors) lets its delegate do
    ``action`` at ``now``: the whole chain is live, every link covers the action, and so does the
    root delegator's own authority today (``root_scope``: withdrawing an agent's root scope
    withdraws everything it delegated)."""
    return (
        chain_live(chain, now)
        and all(allows(r.grant.scope, action) for r in chain)
        and allows(root_scope, action)
    )


# -- storing and logging -----------------------------------------------------------------------


class StoredGrant(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
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
_decoder = msgspec.msgpack.Decoder(StoredGrant)


def encode_stored(stored: StoredGrant) -> bytes:
    """``stored`` as the bytes kept under ``grant_key``."""
    return _encoder.encode(stored)


def decode_stored(value: bytes) -> StoredGrant:
    """The ``StoredGrant`` in ``value`` (raises ``msgspec.DecodeError`` if it is none)."""
    return _decoder.decode(value)


@functools.lru_cache(maxsize=4096)
def open_grant(sealed: bytes) -> DelegationGrant:
    """Verify and decode a sealed grant. Cached by its exact bytes: bytes that differ in any
    way (a tampered scope) miss the cache and are verified afresh; failures are not cached."""
    return unseal(sealed, DelegationGrant)


def read_record(value: bytes) -> GrantRecord:
    """The grant stored as ``value``, verified, with its revocation (``ProtocolError``: it does
    not decode; ``SignatureError``: it does not verify)."""
    try:
        stored = _decoder.decode(value)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"a stored delegation grant does not decode: {exc}") from exc
    return GrantRecord(
        open_grant(stored.sealed),
        revoked_at=stored.revoked_at,
        revoked_by=stored.revoked_by,
        cascade_from=stored.cascade_from,
    )


def describe_grant(sealed: bytes) -> dict[str, Any]:
    """A revoked grant's parties and scope for its event ({} if it no longer verifies)."""
    try:
        grant = open_grant(sealed)
    except ConvergeError:
        return {}
    return {"delegator": grant.delegator, "delegate": grant.delegate, "scope": list(grant.scope)}


def grant_key(grant_id: str) -> str:
    """Where a grant is stored."""
    return f"delegation/{grant_id}"


def to_key(delegate: str, grant_id: str) -> str:
    """The index key of a grant under its delegate."""
    return f"delegation-to/{delegate}/{grant_id}"


def child_key(parent_id: str, grant_id: str) -> str:
    """The index key of a grant under its parent."""
    return f"delegation-child/{parent_id}/{grant_id}"


def delegation_event(
    kind: str, trace_id: str, actor: str, subject: str, at: float, **data: Any
) -> Event:
    """An event of the delegation protocol (``data`` as given)."""
    return Event(kind=kind, trace_id=trace_id, actor=actor, subject=subject, data=data, at=at)


def refused_event(
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
    return delegation_event(
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
