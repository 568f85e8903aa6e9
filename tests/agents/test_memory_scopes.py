"""The five context scopes, their persistence, and context isolation (seed 002 §6.1, §10)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from converge.agents.memory import (
    SCOPES,
    Context,
    ContextAccessDenied,
    ContextScopes,
    Grants,
    RequestScope,
    StoredScope,
)
from converge.core import ManualClock
from converge.errors import PolicyViolation, ValidationError
from converge.store import SQLiteStore, Store

AGENT = "did:key:z6MkAgentA"
EVERYTHING = {scope: ["*"] for scope in SCOPES}


async def test_stored_scopes_survive_a_reopen_and_the_request_scope_does_not(
    tmp_path: Path,
) -> None:
    path = tmp_path / "scopes.db"
    async with await SQLiteStore.open(path) as store:
        scopes = ContextScopes(store)
        async with scopes.context(EVERYTHING, agent=AGENT, session_id="s1", run_id="r1") as ctx:
            for scope in SCOPES:
                await ctx.set(scope, "note", {"scope": scope, "n": [1, 2]})
            assert await ctx.get("request", "note") == {"scope": "request", "n": [1, 2]}
        assert await ctx.get("request", "note") is None  # gone with the request
    async with await SQLiteStore.open(path) as store:
        ctx = ContextScopes(store).context(EVERYTHING, agent=AGENT, session_id="s1", run_id="r1")
        for scope in ("session", "agent", "graph", "global"):
            assert await ctx.get(scope, "note") == {"scope": scope, "n": [1, 2]}
        assert await ctx.get("request", "note") is None


async def test_owners_do_not_share_a_scope(store: Store) -> None:
    scopes = ContextScopes(store)
    one = scopes.context(EVERYTHING, agent=AGENT, session_id="s1", run_id="r1")
    two = scopes.context(EVERYTHING, agent="did:key:z6MkB", session_id="s2", run_id="r2")
    for scope in ("session", "agent", "graph", "global"):
        await one.set(scope, "k", scope)
    assert [await two.get(s, "k") for s in ("session", "agent", "graph")] == [None] * 3
    assert await two.get("global", "k") == "global"  # the one scope everybody shares
    assert await scopes.scope("session", "s1").keys() == ["k"]
    assert await scopes.scope("session", "s10").keys() == []  # "s1" is not a prefix match


async def test_a_session_expires_after_its_ttl_and_its_keys_never_come_back(
    store: Store,
) -> None:
    clock = ManualClock()
    scopes = ContextScopes(store, session_ttl=60, clock=clock)
    session = scopes.scope("session", "s1")
    await session.set("history", ["hi"])
    clock.advance(59)
    await session.set("topic", "cats")  # a write pushes the expiry back
    clock.advance(59)
    assert await session.get("history") == ["hi"]
    clock.advance(2)
    assert await session.get("history") is None
    assert await session.keys() == []
    await session.set("topic", "dogs")
    assert await session.keys() == ["topic"]
    assert await session.get("history") is None
    assert isinstance(session, StoredScope)
    assert await session.expires_at() == clock.now() + 60
    assert await scopes.scope("agent", AGENT).get("x", "default") == "default"


async def test_an_ungranted_key_is_refused_naming_scope_and_key(store: Store) -> None:
    scopes = ContextScopes(store)
    await scopes.scope("session", "s1").set("secret", "do not read")
    ctx = scopes.context({"session": ["history"], "global": ["*"]}, agent=AGENT, session_id="s1")
    with pytest.raises(ContextAccessDenied) as err:
        await ctx.get("session", "secret")
    assert (err.value.scope, err.value.key, err.value.access) == ("session", "secret", "read")
    assert err.value.agent == AGENT
    assert isinstance(err.value, PolicyViolation)
    assert "'secret'" in str(err.value) and "session" in str(err.value)
    with pytest.raises(ContextAccessDenied) as err:
        await ctx.set("session", "secret", "overwritten")
    assert err.value.access == "write"
    assert await scopes.scope("session", "s1").get("secret") == "do not read"
    with pytest.raises(ContextAccessDenied) as err:
        await ctx.set("agent", "memo", 1)  # a scope not granted at all
    assert (err.value.scope, err.value.key) == ("agent", "memo")
    await ctx.set("session", "history", ["ok"])
    await ctx.set("global", "anything", 1)
    assert await ctx.get("session", "history") == ["ok"]


async def test_read_and_write_grants_are_separate(store: Store) -> None:
    scopes = ContextScopes(store)
    await scopes.scope("global", None).set("facts", ["water is wet"])
    grants = Grants(read={"global": ("facts",)}, write={"graph": ("out/*",)})
    ctx = scopes.context(grants, agent=AGENT, run_id="r1")
    assert await ctx.get("global", "facts") == ["water is wet"]
    with pytest.raises(ContextAccessDenied) as err:
        await ctx.set("global", "facts", [])
    assert (err.value.scope, err.value.key, err.value.access) == ("global", "facts", "write")
    await ctx.set("graph", "out/summary", "done")
    with pytest.raises(ContextAccessDenied) as err:
        await ctx.get("graph", "out/summary")  # write does not imply read
    assert err.value.access == "read"
    with pytest.raises(ContextAccessDenied):
        await ctx.update("graph", "out/summary", lambda v: v)  # update needs both
    with pytest.raises(ContextAccessDenied):
        await ctx.delete("global", "facts")
    assert ctx.can("write", "graph", "out/x") and not ctx.can("read", "graph", "out/x")


async def test_keys_lists_only_what_the_agent_may_read(store: Store) -> None:
    scopes = ContextScopes(store)
    session = scopes.scope("session", "s1")
    for key in ("history", "notes/a", "notes/b", "secret"):
        await session.set(key, 1)
    ctx = scopes.context({"session": ["history", "notes/*"]}, session_id="s1")
    assert await ctx.keys("session") == ["history", "notes/a", "notes/b"]
    with pytest.raises(ContextAccessDenied) as err:
        await ctx.keys("global")
    assert (err.value.scope, err.value.key) == ("global", "")


def test_grants_must_name_known_scopes_that_the_context_has(store: Store) -> None:
    with pytest.raises(ValidationError) as err:
        Grants.of({"sesion": ["history"]})
    assert err.value.field == "read.sesion"
    with pytest.raises(ValidationError):
        Grants.of({"session": "history"})  # type: ignore[dict-item]
    with pytest.raises(ValidationError) as err:
        ContextScopes(store).context({"graph": ["*"]}, agent=AGENT)  # no run id
    assert "graph" in str(err.value)
    with pytest.raises(ValidationError):
        StoredScope(store, "session", None)
    with pytest.raises(ValidationError):
        StoredScope(store, "agent", "a/b")


async def test_concurrent_updates_through_contexts_lose_nothing(store: Store) -> None:
    scopes = ContextScopes(store)
    contexts = [
        scopes.context({"graph": ["count"]}, agent=f"did:key:z6Mk{i}", run_id="r1")
        for i in range(5)
    ]
    n = 20
    all_read = asyncio.Barrier(n)

    def bump(first: list[bool]) -> object:
        async def change(value: int) -> int:
            if first:
                first.clear()
                await all_read.wait()  # all read the same value before anyone writes
            return value + 1

        return change

    await asyncio.gather(
        *(contexts[i % 5].update("graph", "count", bump([True]), 0) for i in range(n))
    )
    assert await contexts[0].get("graph", "count") == n


async def test_request_scopes_are_private_to_their_request(store: Store) -> None:
    scopes = ContextScopes(store)
    shared = RequestScope()
    a = scopes.context({"request": ["*"]}, request=shared)
    b = scopes.context({"request": ["*"]}, request=shared)
    c = scopes.context({"request": ["*"]})
    await a.set("request", "input", 42)
    assert await b.get("request", "input") == 42
    assert await c.get("request", "input") is None
    assert isinstance(c, Context)
    assert await store.list("context/") == []  # never written to the store
