"""Pools: admission on join, membership from both sides, governance of disputes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from converge.coordination import PoolManager, TaskManager
from converge.core.clock import ManualClock
from converge.core.pool import Pool
from converge.core.task import Task
from converge.errors import ConflictError, PolicyViolation, ValidationError
from converge.policy import admission_spec, token_admission
from converge.store import SQLiteStore, Store

A, B, C = "did:key:z6MkA", "did:key:z6MkB", "did:key:z6MkC"


class Trust:
    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores

    async def score(self, agent_id: str) -> float:
        return self.scores.get(agent_id, 0.5)


@pytest.fixture
def pools(store: Store, clock: ManualClock) -> PoolManager:
    return PoolManager(store, trust=Trust({A: 0.9, B: 0.2}), clock=clock)


async def refused_reasons(store: Store) -> list[str]:
    return [e.data["reason"] for e in await store.read(kinds=["pool.join_refused"])]


async def test_create_get_and_list(pools: PoolManager, store: Store) -> None:
    pool = await pools.create_pool(Pool(name="GPU", id="gpu"), actor=A)
    assert pool.created_by == A
    assert await pools.get_pool("gpu") == pool
    await pools.create_pool(Pool(name="CPU", id="cpu"))
    assert [p.id for p in await pools.list_pools()] == ["cpu", "gpu"]
    assert await pools.get_pool("nope") is None
    with pytest.raises(ConflictError):
        await pools.create_pool(Pool(name="again", id="gpu"))
    [created, _] = await store.read(kinds=["pool.created"])
    assert (created.subject, created.actor, created.data["admission"]) == ("gpu", A, "open")


async def test_bad_policy_specs_are_refused_with_the_field(pools: PoolManager) -> None:
    with pytest.raises(ValidationError) as info:
        await pools.create_pool(Pool(name="x", admission={"kind": "min_trust", "score": 3}))
    assert info.value.field == "admission.score"
    with pytest.raises(ValidationError) as info:
        await pools.create_pool(Pool(name="x", governance={"kind": "monarchy"}))
    assert info.value.field == "governance.kind"


async def test_open_pool_membership_from_both_sides(pools: PoolManager, store: Store) -> None:
    await pools.create_pool(Pool(name="p", id="p"))
    await pools.create_pool(Pool(name="q", id="q"))
    assert (await pools.join_pool(A, "p")).admitted
    assert (await pools.join_pool(A, "q")).admitted
    assert (await pools.join_pool(B, "p")).admitted
    assert (await pools.join_pool(A, "p")).reason == "already a member"
    assert await pools.members("p") == sorted([A, B])
    assert await pools.get_pools_for_agent(A) == ["p", "q"]
    assert await pools.leave_pool(A, "p")
    assert not await pools.leave_pool(A, "p")
    assert await pools.members("p") == [B]
    assert await pools.get_pools_for_agent(A) == ["q"]
    kinds = [e.kind for e in await store.read(trace_id="p")]
    assert kinds == ["pool.created", "pool.joined", "pool.joined", "pool.left"]


async def test_allowlist_token_and_trust_admission(pools: PoolManager, store: Store) -> None:
    await pools.create_pool(
        Pool(name="a", id="allow", admission={"kind": "allowlist", "members": [A]})
    )
    await pools.create_pool(
        Pool(name="t", id="token", admission=admission_spec(token_admission("s3")))
    )
    await pools.create_pool(
        Pool(name="m", id="trusted", admission={"kind": "min_trust", "score": 0.5})
    )
    assert (await pools.join_pool(A, "allow")).admitted
    with pytest.raises(PolicyViolation, match="allowlist"):
        await pools.join_pool(B, "allow")
    with pytest.raises(PolicyViolation, match="token"):
        await pools.join_pool(B, "token")
    with pytest.raises(PolicyViolation, match="not the pool's token"):
        await pools.join_pool(B, "token", {"token": "guess"})
    assert (await pools.join_pool(B, "token", {"token": "s3"})).admitted
    assert (await pools.join_pool(A, "trusted")).admitted
    with pytest.raises(PolicyViolation, match="below"):
        await pools.join_pool(B, "trusted")
    assert len(await refused_reasons(store)) == 4
    assert await pools.members("allow") == [A]
    assert B not in await pools.members("trusted")


async def test_required_capabilities_gate_membership(pools: PoolManager) -> None:
    await pools.create_pool(Pool(name="r", id="r", required_capabilities=("render>=2",)))
    with pytest.raises(PolicyViolation, match="render>=2"):
        await pools.join_pool(A, "r", capabilities=["render@1.0.0"])
    assert (await pools.join_pool(A, "r", capabilities=["render@2.0.0"])).admitted


async def test_concurrent_joins_never_exceed_max_members(pools: PoolManager, store: Store) -> None:
    await pools.create_pool(Pool(name="small", id="small", max_members=5))
    results = await asyncio.gather(
        *(pools.join_pool(f"did:key:z6Mk{i}", "small") for i in range(20)), return_exceptions=True
    )
    admitted = [r for r in results if not isinstance(r, BaseException)]
    assert len(admitted) == 5
    assert all(isinstance(r, PolicyViolation) for r in results if isinstance(r, BaseException))
    assert len(await pools.members("small")) == 5
    await pools.leave_pool((await pools.members("small"))[0], "small")
    assert (await pools.join_pool("did:key:z6MkLate", "small")).admitted


async def test_unknown_pool_and_bad_agent_id(pools: PoolManager) -> None:
    with pytest.raises(ValidationError):
        await pools.join_pool(A, "nope")
    await pools.create_pool(Pool(name="p", id="p"))
    with pytest.raises(ValidationError):
        await pools.join_pool("a/b", "p")


async def test_disputes_follow_the_pool_governance(pools: PoolManager, store: Store) -> None:
    await pools.create_pool(Pool(name="d", id="demo"))
    await pools.create_pool(
        Pool(name="k", id="king", governance={"kind": "dictatorial", "leader": C})
    )
    await pools.create_pool(Pool(name="w", id="weighted", governance={"kind": "trust_weighted"}))
    for pool_id in ("demo", "king", "weighted"):
        for agent in (A, B, C):
            await pools.join_pool(agent, pool_id)
    votes = {A: "ship", B: "wait", C: "wait", "did:key:z6MkOutsider": "ship"}
    demo = await pools.decide_dispute("demo", "ship today?", votes)
    assert (demo.decision, demo.ignored) == ("wait", ("did:key:z6MkOutsider",))
    assert (
        await pools.decide_dispute("king", "ship today?", {A: "ship", C: "ship"})
    ).decision == "ship"
    # trust: A 0.9, B 0.2, C unknown (0.5): total 1.6, so "ship" (0.9) carries, "wait" (0.7) not
    weighted = await pools.decide_dispute("weighted", "ship today?", votes)
    assert weighted.decision == "ship"
    recorded = await store.read(kinds=["pool.dispute_decided"])
    assert [e.data["decision"] for e in recorded] == ["wait", "ship", "ship"]


async def test_task_board_claims_use_pool_membership(
    pools: PoolManager, store: Store, clock: ManualClock
) -> None:
    board = TaskManager(store, clock=clock, membership=pools)
    await pools.create_pool(Pool(name="gpu", id="gpu"))
    task = await board.submit(Task(objective="render", pool_id="gpu"))
    with pytest.raises(PolicyViolation):
        await board.claim(A, task.id)
    await pools.join_pool(A, "gpu")
    assert await board.claim(A, task.id) == 1


async def test_pools_survive_a_reopen(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "pools.db"
    async with await SQLiteStore.open(path) as store:
        pools = PoolManager(store, clock=clock)
        await pools.create_pool(Pool(name="p", id="p", max_members=2))
        await pools.join_pool(A, "p")
        await pools.join_pool(B, "p")
    async with await SQLiteStore.open(path) as store:
        pools = PoolManager(store, clock=clock)
        assert await pools.members("p") == sorted([A, B])
        with pytest.raises(PolicyViolation, match="full"):
            await pools.join_pool(C, "p")
