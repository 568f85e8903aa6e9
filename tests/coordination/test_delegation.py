"""Delegation: signed grants, narrowing, cycles, cascading revocation, expiry, tampering,
persistence, and a property over random delegation trees."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from converge.coordination.delegation import (
    DelegationCycle,
    DelegationGrant,
    DelegationProtocol,
    DelegationRefused,
    OutOfScope,
    ScopeExceeded,
    covers,
    normalize_scope,
    uncovered,
)
from converge.core.clip import MAX_ID_CHARS, MAX_TEXT_CHARS, clip
from converge.core.clock import ManualClock
from converge.core.identity import Identity
from converge.errors import PolicyViolation, SignatureError, ValidationError
from converge.protocol.event import Event
from converge.store import MemoryStore, SQLiteStore, Store

ALICE, BOB, CAROL, DAVE, MALLORY = (Identity.generate() for _ in range(5))
A, B, C, D, M = (i.did for i in (ALICE, BOB, CAROL, DAVE, MALLORY))
ROOTS = {A: ["claim_task", "submit_task", "invoke_tool:*"], D: ["claim_task"]}


@pytest.fixture
def delegation(store: Store, clock: ManualClock) -> DelegationProtocol:
    return DelegationProtocol(store, clock=clock, root_scopes=ROOTS)


async def events(store: Store, kind: str) -> list[Event]:
    return await store.read(kinds=[kind])


# -- scopes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("held", "wanted", "ok"),
    [
        ("claim_task", "claim_task", True),
        ("claim_task", "claim_tasks", False),
        ("invoke_tool:*", "invoke_tool:search", True),
        ("invoke_tool:*", "invoke_tool:web:*", True),
        ("invoke_tool:*", "invoke_tool", False),
        ("invoke_tool:web:*", "invoke_tool:*", False),
        ("invoke_tool:search", "invoke_tool:*", False),
    ],
)
def test_exact_names_and_prefix_wildcards(held: str, wanted: str, ok: bool) -> None:
    assert covers(held, wanted) is ok


def test_scopes_are_normalised_and_checked() -> None:
    assert normalize_scope(["b", "a", "b"]) == ("a", "b")
    assert uncovered(["a", "t:*"], ["a", "t:x", "u", "c"]) == ("c", "u")
    for bad in ("claim_task", ["*"], ["a*b"], ["x:*:*"], [""], [3]):
        with pytest.raises(ValidationError) as info:
            normalize_scope(bad)  # type: ignore[arg-type]
        assert info.value.field == "scope"


# -- issuing and acting ------------------------------------------------------------------------


async def test_a_root_grant_lets_the_delegate_act_within_it(
    delegation: DelegationProtocol, store: Store, clock: ManualClock
) -> None:
    grant = await delegation.delegate(ALICE, B, ["invoke_tool:search", "claim_task"])
    grant.verify()
    assert (grant.delegator, grant.delegate, grant.parent_id) == (A, B, None)
    assert grant.scope == ("claim_task", "invoke_tool:search")
    assert grant.issued_at == clock.now() and grant.expires_at is None

    assert await delegation.check(B, "claim_task")
    assert await delegation.check(B, "invoke_tool:search")
    assert not await delegation.check(B, "invoke_tool:web")
    assert not await delegation.check(B, "submit_task")
    assert await delegation.check(A, "submit_task")  # A's own root scope
    assert not await delegation.check(C, "claim_task")
    await delegation.require(B, "claim_task")

    record = await delegation.get(grant.id)
    assert record is not None and record.grant == grant and not record.revoked
    assert await delegation.grants_of(B) == [record]
    assert await delegation.grants_of(C) == []
    assert await delegation.get("nope") is None
    [granted] = await events(store, "delegation.granted")
    assert (granted.actor, granted.subject, granted.trace_id) == (A, grant.id, grant.id)
    assert granted.data == {
        "delegator": A,
        "delegate": B,
        "scope": ["claim_task", "invoke_tool:search"],
        "parent_id": None,
        "expires_at": None,
    }


async def test_a_sub_delegation_narrows(delegation: DelegationProtocol, store: Store) -> None:
    g1 = await delegation.delegate(ALICE, B, ["claim_task", "submit_task", "invoke_tool:*"])
    g2 = await delegation.delegate(BOB, C, ["claim_task", "invoke_tool:search"], parent_id=g1.id)
    assert await delegation.check(C, "claim_task")
    assert await delegation.check(C, "invoke_tool:search")
    assert not await delegation.check(C, "submit_task")
    assert not await delegation.check(C, "invoke_tool:web")
    granted = await events(store, "delegation.granted")
    assert [e.subject for e in granted] == [g1.id, g2.id]
    assert granted[1].trace_id == g1.id and granted[1].data["parent_id"] == g1.id


async def test_an_over_scope_delegation_is_refused_naming_the_extra_actions(
    delegation: DelegationProtocol, store: Store
) -> None:
    g1 = await delegation.delegate(ALICE, B, ["claim_task", "invoke_tool:search"])
    with pytest.raises(ScopeExceeded) as info:
        await delegation.delegate(
            BOB, C, ["claim_task", "submit_task", "invoke_tool:*"], parent_id=g1.id
        )
    assert isinstance(info.value, PolicyViolation)
    assert info.value.extra == ("invoke_tool:*", "submit_task")
    assert (info.value.agent_id, info.value.reason) == (B, "over_scope")
    # No root authority at all: every action is extra.
    with pytest.raises(ScopeExceeded) as root:
        await delegation.delegate(MALLORY, C, ["claim_task"])
    assert root.value.extra == ("claim_task",)
    with pytest.raises(ScopeExceeded):  # more than A holds on its own authority
        await delegation.delegate(ALICE, B, ["report_task"])

    refused = await events(store, "delegation.refused")
    assert [e.data["reason"] for e in refused] == ["over_scope"] * 3
    assert refused[0].actor == B and refused[0].trace_id == g1.id
    assert refused[0].data["extra"] == ["invoke_tool:*", "submit_task"]
    assert refused[0].data["error"] == "ScopeExceeded"
    assert await delegation.grants_of(C) == []
    assert not await delegation.check(C, "claim_task")


async def test_only_the_delegate_of_a_parent_can_derive_from_it(
    delegation: DelegationProtocol,
) -> None:
    g1 = await delegation.delegate(ALICE, B, ["claim_task"])
    with pytest.raises(DelegationRefused) as info:
        await delegation.delegate(MALLORY, C, ["claim_task"], parent_id=g1.id)
    assert info.value.reason == "not_parent_delegate"
    with pytest.raises(DelegationRefused) as unknown:
        await delegation.delegate(BOB, C, ["claim_task"], parent_id="no-such-grant")
    assert unknown.value.reason == "unknown_parent"


async def test_cycles_are_refused_naming_the_chain(
    delegation: DelegationProtocol, store: Store
) -> None:
    g1 = await delegation.delegate(ALICE, B, ["claim_task"])
    g2 = await delegation.delegate(BOB, C, ["claim_task"], parent_id=g1.id)
    with pytest.raises(DelegationCycle) as info:
        await delegation.delegate(CAROL, A, ["claim_task"], parent_id=g2.id)
    assert info.value.chain == (A, B, C, A) and info.value.reason == "cycle"
    with pytest.raises(DelegationCycle) as back:
        await delegation.delegate(CAROL, B, ["claim_task"], parent_id=g2.id)
    assert back.value.chain == (A, B, C, B)
    with pytest.raises(DelegationCycle) as self_grant:
        await delegation.delegate(ALICE, A, ["claim_task"])
    assert self_grant.value.chain == (A, A)

    refused = await events(store, "delegation.refused")
    assert [e.data["chain"] for e in refused] == [[A, B, C, A], [A, B, C, B], [A, A]]
    assert await delegation.grants_of(A) == []


async def test_chains_are_bounded(store: Store, clock: ManualClock) -> None:
    shallow = DelegationProtocol(store, clock=clock, root_scopes=ROOTS, max_depth=2)
    g1 = await shallow.delegate(ALICE, B, ["claim_task"])
    g2 = await shallow.delegate(BOB, C, ["claim_task"], parent_id=g1.id)
    with pytest.raises(DelegationRefused) as info:
        await shallow.delegate(CAROL, D, ["claim_task"], parent_id=g2.id)
    assert info.value.reason == "too_deep"


# -- revocation --------------------------------------------------------------------------------


async def test_revoking_cascades_and_acting_afterwards_is_refused(
    delegation: DelegationProtocol, store: Store, clock: ManualClock
) -> None:
    g1 = await delegation.delegate(ALICE, B, ["claim_task", "submit_task"])
    g2 = await delegation.delegate(BOB, C, ["claim_task", "submit_task"], parent_id=g1.id)
    g3 = await delegation.delegate(CAROL, D, ["submit_task"], parent_id=g2.id)
    other = await delegation.delegate(ALICE, C, ["invoke_tool:search"])
    assert await delegation.check(D, "submit_task")
    clock.advance(5)

    assert await delegation.revoke(A, g1.id) == [g1.id, g2.id, g3.id]
    for agent, action in [(B, "claim_task"), (C, "claim_task"), (D, "submit_task")]:
        assert not await delegation.check(agent, action)
    assert await delegation.check(C, "invoke_tool:search")  # an unrelated grant lives on
    assert await delegation.check(D, "claim_task")  # D's own root scope

    with pytest.raises(OutOfScope) as info:
        await delegation.require(C, "claim_task", trace_id="run-1")
    assert (info.value.agent_id, info.value.action) == (C, "claim_task")

    revoked = await events(store, "delegation.revoked")
    assert [(e.subject, e.data["cascade_from"]) for e in revoked] == [
        (g1.id, None),
        (g2.id, g1.id),
        (g3.id, g1.id),
    ]
    assert {(e.actor, e.trace_id, e.at) for e in revoked} == {(A, g1.id, clock.now())}
    assert revoked[2].data["delegate"] == D and revoked[2].data["scope"] == ["submit_task"]
    record = await delegation.get(g2.id)
    assert record is not None and record.revoked and record.revoked_at == clock.now()
    assert (record.revoked_by, record.cascade_from) == (A, g1.id)
    [refused] = await events(store, "delegation.refused")
    assert (refused.actor, refused.trace_id, refused.data["act"]) == (C, "run-1", "act")
    assert (refused.data["reason"], refused.data["action"]) == ("out_of_scope", "claim_task")

    # Revoking again changes nothing; deriving from a revoked grant is refused.
    assert await delegation.revoke(A, g1.id) == []
    assert len(await events(store, "delegation.revoked")) == 3
    with pytest.raises(DelegationRefused) as dead:
        await delegation.delegate(CAROL, D, ["claim_task"], parent_id=g2.id)
    assert dead.value.reason == "parent_not_live"
    assert other.id not in {e.subject for e in revoked}


async def test_only_the_delegator_chain_may_revoke(
    delegation: DelegationProtocol, store: Store
) -> None:
    g1 = await delegation.delegate(ALICE, B, ["claim_task"])
    g2 = await delegation.delegate(BOB, C, ["claim_task"], parent_id=g1.id)
    for outsider in (C, M):  # the delegate itself, and a stranger
        with pytest.raises(DelegationRefused) as info:
            await delegation.revoke(outsider, g2.id)
        assert (info.value.reason, info.value.agent_id) == ("not_in_chain", outsider)
    with pytest.raises(DelegationRefused):
        await delegation.revoke(B, g1.id)  # below the grant, not above it
    refused = await events(store, "delegation.refused")
    assert [(e.actor, e.data["act"]) for e in refused] == [
        (C, "revoke"),
        (M, "revoke"),
        (B, "revoke"),
    ]
    assert await delegation.check(C, "claim_task")

    assert await delegation.revoke(A, g2.id) == [g2.id]  # from up the chain
    assert not await delegation.check(C, "claim_task")
    assert await delegation.check(B, "claim_task")
    with pytest.raises(ValidationError):
        await delegation.revoke(A, "no-such-grant")


async def test_a_revocation_racing_a_sub_delegation_leaves_nothing_live(
    delegation: DelegationProtocol,
) -> None:
    for _ in range(5):
        g1 = await delegation.delegate(ALICE, B, ["claim_task"])
        await asyncio.gather(
            delegation.revoke(A, g1.id),
            delegation.delegate(BOB, C, ["claim_task"], parent_id=g1.id),
            return_exceptions=True,
        )
        assert not await delegation.check(C, "claim_task")
        assert all(r.revoked for r in await delegation.grants_of(C))


async def test_withdrawing_a_root_scope_withdraws_what_was_delegated_from_it(
    store: Store, clock: ManualClock
) -> None:
    roots = {A: {"claim_task", "submit_task"}}
    delegation = DelegationProtocol(store, clock=clock, root_scopes=lambda did: roots.get(did, ()))
    g1 = await delegation.delegate(ALICE, B, ["claim_task", "submit_task"])
    await delegation.delegate(BOB, C, ["submit_task"], parent_id=g1.id)
    roots[A] = {"claim_task"}
    assert await delegation.check(B, "claim_task")
    assert not await delegation.check(B, "submit_task")
    assert not await delegation.check(C, "submit_task")


# -- expiry ------------------------------------------------------------------------------------


async def test_grants_expire_with_the_first_link_of_their_chain(
    delegation: DelegationProtocol, clock: ManualClock
) -> None:
    g1 = await delegation.delegate(ALICE, B, ["claim_task"], expires_at=clock.now() + 10)
    await delegation.delegate(BOB, C, ["claim_task"], parent_id=g1.id)  # no expiry of its own
    assert await delegation.check(C, "claim_task")
    assert await delegation.check(C, "claim_task", now=clock.now() + 9.9)
    clock.advance(10)
    assert not await delegation.check(B, "claim_task")
    assert not await delegation.check(C, "claim_task")
    with pytest.raises(DelegationRefused) as info:
        await delegation.delegate(BOB, D, ["claim_task"], parent_id=g1.id)
    assert info.value.reason == "parent_not_live"
    with pytest.raises(ValidationError) as past:
        await delegation.delegate(ALICE, B, ["claim_task"], expires_at=clock.now())
    assert past.value.field == "expires_at"
    with pytest.raises(ValidationError):  # a value from another clock
        await delegation.check(B, "claim_task", now=12.0)


# -- signatures --------------------------------------------------------------------------------


async def test_a_grant_signed_by_someone_else_is_refused(
    delegation: DelegationProtocol, store: Store, clock: ManualClock
) -> None:
    forged = DelegationGrant(
        id="g-forged", delegate=M, scope=("claim_task",), issued_at=clock.now()
    )
    forged = msgspec.structs.replace(forged.sign(MALLORY), delegator=A)  # claims A signed it
    with pytest.raises(SignatureError):
        await delegation.record(forged)
    with pytest.raises(SignatureError):  # unsigned
        await delegation.record(msgspec.structs.replace(forged, signature=None))
    refused = await events(store, "delegation.refused")
    assert [(e.actor, e.subject, e.data["reason"]) for e in refused] == [
        (A, "g-forged", "bad_signature"),
        (A, "g-forged", "unsigned"),
    ]
    assert await delegation.get("g-forged") is None
    assert not await delegation.check(M, "claim_task")

    # Signed by A elsewhere and recorded here: accepted, and recording it twice is a no-op.
    genuine = DelegationGrant(id="g-ok", delegate=B, scope=("claim_task",), issued_at=clock.now())
    genuine = genuine.sign(ALICE)
    assert await delegation.record(genuine) == genuine
    assert await delegation.record(genuine) == genuine
    assert len(await events(store, "delegation.granted")) == 1
    assert await delegation.check(B, "claim_task")


async def test_a_tampered_stored_grant_confers_nothing(
    delegation: DelegationProtocol, store: Store
) -> None:
    g1 = await delegation.delegate(ALICE, B, ["claim_task"])
    g2 = await delegation.delegate(BOB, C, ["claim_task"], parent_id=g1.id)
    # The index is not trusted: pointing M at C's grant gives M nothing.
    await store.put(f"delegation-to/{M}/{g2.id}", g2.id.encode())
    assert not await delegation.check(M, "claim_task")
    assert await delegation.grants_of(M) == []

    entry = await store.get(f"delegation/{g1.id}")
    assert entry is not None
    raw = msgspec.msgpack.decode(entry.value)
    widened = msgspec.structs.replace(g1, scope=("claim_task", "submit_task"))  # old signature
    raw["sealed"] = widened.seal()
    await store.put(entry.key, msgspec.msgpack.encode(raw))

    assert not await delegation.check(B, "submit_task")
    assert not await delegation.check(B, "claim_task")
    assert not await delegation.check(C, "claim_task")  # its chain no longer verifies
    with pytest.raises(SignatureError):
        await delegation.get(g1.id)
    assert await delegation.grants_of(B) == []
    with pytest.raises(DelegationRefused) as info:
        await delegation.delegate(CAROL, D, ["claim_task"], parent_id=g2.id)
    assert info.value.reason == "parent_not_live"


async def test_bad_input_is_a_validation_error(delegation: DelegationProtocol) -> None:
    with pytest.raises(ValidationError) as info:
        await delegation.delegate(ALICE, "did:x/../y", ["claim_task"])
    assert info.value.field == "delegate"
    with pytest.raises(ValidationError):
        await delegation.delegate(ALICE, B, "claim_task")
    with pytest.raises(ValidationError):
        await delegation.check(B, "invoke_tool:*")
    with pytest.raises(ValidationError):
        DelegationProtocol(MemoryStore(), max_depth=0)


# -- persistence -------------------------------------------------------------------------------


async def test_grants_and_revocations_survive_a_sqlite_reopen(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "delegation.db"
    async with await SQLiteStore.open(path) as store:
        delegation = DelegationProtocol(store, clock=clock, root_scopes=ROOTS)
        g1 = await delegation.delegate(ALICE, B, ["claim_task", "submit_task"])
        g2 = await delegation.delegate(BOB, C, ["submit_task"], parent_id=g1.id)
        g3 = await delegation.delegate(ALICE, D, ["invoke_tool:*"])
        await delegation.revoke(A, g3.id)
    async with await SQLiteStore.open(path) as store:
        delegation = DelegationProtocol(store, clock=clock, root_scopes=ROOTS)
        assert await delegation.check(C, "submit_task")
        assert not await delegation.check(D, "invoke_tool:search")
        record = await delegation.get(g2.id)
        assert record is not None and record.grant == g2 and not record.revoked
        assert await delegation.revoke(B, g2.id) == [g2.id]
    async with await SQLiteStore.open(path) as store:
        delegation = DelegationProtocol(store, clock=clock, root_scopes=ROOTS)
        assert not await delegation.check(C, "submit_task")
        assert await delegation.check(B, "submit_task")
        kinds = [e.kind for e in await store.read()]
        assert kinds.count("delegation.granted") == 3 and kinds.count("delegation.revoked") == 2


# -- property ----------------------------------------------------------------------------------

AGENTS = (ALICE, BOB, CAROL, DAVE)
ACTIONS = ("a", "b", "t:x", "t:y", "t:z")
GRANTABLE = ("a", "b", "t:x", "t:y", "t:*")
PROP_ROOTS = {A: ("a", "b", "t:*"), D: ("a",)}

delegate_op = st.tuples(
    st.just("delegate"),
    st.integers(-1, 5),  # the parent: an index (mod) into the grants so far; -1: a root grant
    st.integers(0, 3),  # the delegate
    st.sets(st.sampled_from(GRANTABLE), min_size=1, max_size=3),
    st.booleans(),  # keep the scope as drawn (possibly wider than held), or narrow it
)
revoke_op = st.tuples(st.just("revoke"), st.integers(0, 7), st.integers(0, 5))  # 4, 5: its own
# A tree first, then revocations, then attempts to grow it again (from revoked grants, too).
ops = st.tuples(
    st.lists(delegate_op, min_size=3, max_size=10),
    st.lists(revoke_op, min_size=1, max_size=3),
    st.lists(delegate_op, max_size=3),
).map(lambda parts: [op for part in parts for op in part])
IDENTITY = {i.did: i for i in AGENTS}


def _allows(scope: tuple[str, ...], action: str) -> bool:
    return any(h == action or (h.endswith(":*") and action.startswith(h[:-1])) for h in scope)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_random_trees_narrow_and_revocation_kills_every_descendant(
    plan: list[tuple[object, ...]],
) -> None:
    async def run() -> None:
        clock = ManualClock(1_800_000_000.0)
        delegation = DelegationProtocol(MemoryStore(), clock=clock, root_scopes=PROP_ROOTS)
        grants: list[DelegationGrant] = []
        revoked: set[str] = set()
        for op in plan:
            if op[0] == "delegate":
                _, parent, dst, drawn, wide = op
                assert isinstance(parent, int) and isinstance(dst, int) and isinstance(wide, bool)
                scope = set(drawn)  # type: ignore[call-overload]
                if parent >= 0 and grants:
                    parent_grant: DelegationGrant | None = grants[parent % len(grants)]
                    assert parent_grant is not None
                    delegator = IDENTITY[parent_grant.delegate]
                    if not wide:
                        scope = {s for s in scope if _allows(parent_grant.scope, s)}
                        scope = scope or set(parent_grant.scope[:1])
                else:  # a root grant from A, or from D to A
                    parent_grant = None
                    delegator = DAVE if dst == 0 else ALICE
                    if not wide:
                        scope = {s for s in scope if _allows(PROP_ROOTS[delegator.did], s)}
                if not scope:
                    continue
                try:
                    grants.append(
                        await delegation.delegate(
                            delegator,
                            AGENTS[dst].did,
                            scope,
                            parent_id=None if parent_grant is None else parent_grant.id,
                        )
                    )
                except PolicyViolation:
                    continue
            else:
                _, index, who = op
                assert isinstance(index, int) and isinstance(who, int)
                if not grants:
                    continue
                index %= len(grants)
                revoker = grants[index].delegator if who >= 4 else AGENTS[who].did
                try:
                    gone = await delegation.revoke(revoker, grants[index].id)
                    event(f"a revocation cascaded: {len(gone) > 1}")
                    revoked.update(gone)
                except PolicyViolation:
                    continue
                # Every descendant of a revoked grant is revoked.
                for g in grants:
                    if g.parent_id in revoked:
                        assert g.id in revoked
            by_id = {g.id: g for g in grants}
            for g in grants:  # every live grant narrows its parent
                if g.id not in revoked and g.parent_id is not None:
                    parent_scope = by_id[g.parent_id].scope
                    assert all(_allows(parent_scope, s) or s in parent_scope for s in g.scope)

            def live_chain(
                g: DelegationGrant, by_id: dict[str, DelegationGrant] = by_id
            ) -> list[DelegationGrant] | None:
                chain = [g]
                while chain[-1].parent_id is not None:
                    chain.append(by_id[chain[-1].parent_id])
                return None if any(x.id in revoked for x in chain) else chain

            # check() agrees with a model: root scope, or a grant whose chain is unrevoked and
            # covers the action all the way up to the root delegator's own authority.
            for agent in AGENTS:
                for action in ACTIONS:
                    expected = _allows(PROP_ROOTS.get(agent.did, ()), action)
                    for g in grants:
                        chain = live_chain(g) if g.delegate == agent.did else None
                        if chain and all(_allows(x.scope, action) for x in chain):
                            root = PROP_ROOTS.get(chain[-1].delegator, ())
                            expected = expected or _allows(root, action)
                    assert await delegation.check(agent.did, action) is expected, (agent, action)

    asyncio.run(run())


# -- hostile sizes -----------------------------------------------------------------------------


async def test_a_refused_grant_is_logged_with_its_claims_clipped(
    delegation: DelegationProtocol, store: Store, clock: ManualClock
) -> None:
    huge = "did:key:z6Mk" + "x" * 400_000
    unsigned = DelegationGrant(
        id="g" * 100_000, delegate=M, scope=("claim_task",), issued_at=clock.now()
    )
    forged = msgspec.structs.replace(unsigned.sign(MALLORY), delegator=huge)
    with pytest.raises(SignatureError):
        await delegation.record(forged)
    with pytest.raises(PolicyViolation):
        await delegation.require(huge, "a" * 100_000)
    refused = await events(store, "delegation.refused")
    assert [e.actor for e in refused] == [clip(huge), clip(huge)]
    assert refused[0].subject == refused[0].trace_id == clip("g" * 100_000)
    assert refused[1].data["action"] == clip("a" * 100_000)
    for refusal in refused:
        assert len(refusal.data["message"]) <= MAX_TEXT_CHARS
        assert len(msgspec.json.encode(refusal)) < 2_000
    assert len(clip(huge)) == MAX_ID_CHARS
