"""``Team``: one node done by several agents (``kind: team``).

Their results are resolved into one.

```yaml
agents:
  panel:  {kind: team, members: [a, b, c], resolution: majority_vote, key: "mod:normalise"}
  judges: {kind: team, pool: reviewers, capability: review, min_trust: 0.6, size: 5,
           resolution: trust_weighted}
```

Members are either **named** (``members``: names looked up in the agents given to the YAML
loader, then in the engine's ``Services.agents``; in Python also agents or callables given by
name in a mapping) or **picked from a pool** (``pool``: the pool's members from
``Services.pools`` whose agents ``Services.agents`` holds, by name or by an ``Agent``'s did;
``capability`` keeps those that offer it, ``min_trust`` those whose ``Services.trust`` score is
at least that, ``size`` the most trusted ones, ties by did).

Every member gets the node's inputs (and context) and runs concurrently; a member that raises
gives a failed result, which the resolution counts neither for nor against. A member's id —
what the resolution and the trust model know it by — is its did if it is an ``Agent``, else its
name (named members) or its did (pool members). The results are resolved by
``converge.coordination.resolution`` (``majority_vote``, ``trust_weighted`` — with
``Services.trust`` —, ``leader_decides`` — ``leader`` names the member —, ``fail_on_conflict``,
``fastest``); ``key`` maps free-text outputs to what is compared (``normalize_text``, or any
``module:attr``). The node's output is the chosen answer (``output="resolution"``: the whole
``Resolution`` as plain data, tallies and dissent included); the reason and the dissenting
members are also reported as the node's last ``node.progress`` message. A resolution that
fails (``ResolutionFailed``: a tie, no majority, a conflict) fails the node like any error, so
its retry and ``on_error`` policies apply. Retried or resumed, the node runs every member again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from converge.coordination.resolution import (
    AgentResult,
    ConflictStrategy,
    Key,
    Resolution,
    normalize_text,
    resolve,
)
from converge.core.agent import Agent
from converge.core.user_code import call_in_thread, is_interruption
from converge.errors import ValidationError
from converge.orchestration._agents import NodeAgent, resolve_agent
from converge.orchestration._context import NodeContext
from converge.orchestration.kinds import Kind, KindContext
from converge.orchestration.object_refs import import_object_ref
from converge.orchestration.services import Needs

__all__ = ["KIND", "Team"]

_OUTPUTS = ("answer", "resolution")
_KEYS: dict[str, Key] = {"normalize_text": normalize_text}


class Team:
    """A node done by several agents, resolved into one answer.

    Args:
        members: the members' names (looked up in ``Services.agents`` when the node runs), or
            a mapping of name to agent (an ``Agent``, a callable, or a ``module:attr``).
        pool: pick the members from this pool instead (``Services.pools``).
        capability: with ``pool``: only members that offer this capability (their ``Agent``'s
            capabilities, or ``Services.discovery``).
        min_trust: with ``pool``: only members whose trust score is at least this.
        size: with ``pool``: at most this many members, the most trusted first.
        resolution: a ``ConflictStrategy`` or its name.
        key: maps outputs to what is compared: a callable, ``"normalize_text"`` or a
            ``module:attr`` reference.
        leader: the member whose result ``leader_decides`` takes.
        output: ``"answer"`` (the chosen output) or ``"resolution"`` (the ``Resolution``).

    Raises:
        ValidationError: a bad option (its ``field`` names it).
    """

    def __init__(
        self,
        members: Sequence[str] | Mapping[str, Any] | None = None,
        *,
        pool: str | None = None,
        capability: str | None = None,
        min_trust: float | None = None,
        size: int | None = None,
        resolution: ConflictStrategy | str = ConflictStrategy.MAJORITY_VOTE,
        key: Key | str | None = None,
        leader: str | None = None,
        output: str = "answer",
    ) -> None:
        if (members is None) == (pool is None):
            raise ValidationError("a team has `members` or a `pool`, not both", field="members")
        if isinstance(members, str) or (
            members is not None
            and (not members or not all(isinstance(m, str) and m for m in members))
        ):
            raise ValidationError(
                f"members is a non-empty list of agent names, not {members!r}", field="members"
            )
        if pool is not None and (not isinstance(pool, str) or not pool):
            raise ValidationError(f"pool is a pool id, not {pool!r}", field="pool")
        if pool is None and (capability, min_trust, size) != (None, None, None):
            raise ValidationError(
                "capability, min_trust and size pick members from a `pool`", field="pool"
            )
        if capability is not None and (not isinstance(capability, str) or not capability):
            raise ValidationError(f"capability is a name, not {capability!r}", field="capability")
        if min_trust is not None and (
            not isinstance(min_trust, (int, float))
            or isinstance(min_trust, bool)
            or not 0 <= min_trust <= 1
        ):
            raise ValidationError(
                f"min_trust is a number in [0, 1], not {min_trust!r}", field="min_trust"
            )
        if size is not None and (type(size) is not int or size < 1):
            raise ValidationError(f"size is an int >= 1, not {size!r}", field="size")
        try:
            self.resolution = ConflictStrategy(resolution)
        except ValueError:
            known = ", ".join(ConflictStrategy)
            raise ValidationError(
                f"unknown resolution {resolution!r}; one of {known}", field="resolution"
            ) from None
        if output not in _OUTPUTS:
            raise ValidationError(
                f"output is one of {', '.join(_OUTPUTS)}, not {output!r}", field="output"
            )
        names = list(members) if members is not None else []
        if len(set(names)) != len(names):
            raise ValidationError(f"members named twice in {names!r}", field="members")
        if self.resolution is ConflictStrategy.LEADER_DECIDES:
            if leader is None:
                raise ValidationError("leader_decides needs a `leader`", field="leader")
            if members is not None and leader not in names:
                raise ValidationError(f"the leader {leader!r} is not a member", field="leader")
        elif leader is not None:
            raise ValidationError(
                f"`leader` is for leader_decides, not {self.resolution}", field="leader"
            )
        self.members = names
        self.agents: dict[str, Any] = dict(members) if isinstance(members, Mapping) else {}
        self.pool = pool
        self.capability = capability
        self.min_trust = None if min_trust is None else float(min_trust)
        self.size = size
        self.key = _key(key)
        self.leader = leader
        self.output = output

    async def __call__(self, inputs: dict[str, Any], ctx: NodeContext) -> Any:
        members = await self._pick(ctx) if self.pool is not None else self._named(ctx)
        results = await _run_all(members, inputs, ctx)
        trust = ctx.services.trust
        if self.resolution is ConflictStrategy.TRUST_WEIGHTED:
            trust = ctx.services.need("trust", ctx.node_id, "team")
        leader = None
        if self.leader is not None:
            leader = next((mid for mid, a in members if self.leader in (mid, a.name)), self.leader)
        resolved = await resolve(results, self.resolution, key=self.key, trust=trust, leader=leader)
        await ctx.progress(1.0, _summary(resolved))
        if self.output == "resolution":
            # As it reads back from the log (lists, not tuples), so a resumed run sees the same.
            return msgspec.msgpack.decode(msgspec.msgpack.encode(resolved))
        return resolved.output

    def _named(self, ctx: NodeContext) -> list[tuple[str, NodeAgent]]:
        out = []
        for name in self.members:
            target = self.agents.get(name) or ctx.services.agents.get(name)
            if target is None:
                raise ValidationError(
                    f"team {ctx.node_id!r}: no agent named {name!r} "
                    "(give it to the loader or in Services(agents=...))",
                    field="members",
                )
            agent = resolve_agent(name, target)
            out.append((agent.agent.did if agent.agent is not None else name, agent))
        return out

    async def _pick(self, ctx: NodeContext) -> list[tuple[str, NodeAgent]]:
        assert self.pool is not None
        pools = ctx.services.need("pools", ctx.node_id, "team")
        by_did = {
            getattr(a, "did", name): a
            for name, a in ctx.services.agents.items()
            if isinstance(a, Agent)
        }
        found: list[tuple[str, NodeAgent]] = []
        for did in await pools.members(self.pool):
            target = ctx.services.agents.get(did, by_did.get(did))
            if target is None:
                continue  # a member that does not run here
            agent = resolve_agent(did, target)
            if self.capability is None or await self._offers(did, agent, ctx):
                found.append((did, agent))
        if self.min_trust is not None or self.size is not None:
            trust = ctx.services.need("trust", ctx.node_id, "team")
            scores = {did: await trust.score(did) for did, _ in found}
            if self.min_trust is not None:
                found = [(d, a) for d, a in found if scores[d] >= self.min_trust]
            found.sort(key=lambda m: (-scores[m[0]], m[0]))
            found = found[: self.size]
        if not found:
            raise ValidationError(
                f"team {ctx.node_id!r}: no member of pool {self.pool!r} runs here and qualifies",
                field="pool",
            )
        return found

    async def _offers(self, did: str, agent: NodeAgent, ctx: NodeContext) -> bool:
        if agent.agent is not None and self.capability in agent.agent.capabilities:
            return True
        discovery = ctx.services.discovery
        if discovery is None:
            return False
        offered = await discovery.capabilities_of(did)
        return offered is not None and self.capability in offered

    def needs(self) -> Needs:
        """Pools and trust as its options use them; members that are not bound to the graph
        come from ``Services.agents`` (they run in the engine's process)."""
        services: list[str] = []
        if self.pool is not None:
            services += ["pools", "agents"]
        elif any(self.agents.get(name) is None for name in self.members):
            services.append("agents")
        weighted = self.resolution is ConflictStrategy.TRUST_WEIGHTED
        if weighted or self.min_trust is not None or self.size is not None:
            services.append("trust")
        return Needs("team", tuple(services), "members" if "agents" in services else "")

    def __repr__(self) -> str:
        who = f"pool={self.pool!r}" if self.pool is not None else f"members={self.members!r}"
        return f"Team({who}, resolution={self.resolution.value!r})"


async def _run_all(
    members: list[tuple[str, NodeAgent]], inputs: dict[str, Any], ctx: NodeContext
) -> list[AgentResult]:
    """Every member's result; one that raises gives a failed result (never a cancellation)."""

    async def one(member_id: str, agent: NodeAgent) -> AgentResult:
        started = ctx.clock.now()
        args = (inputs, ctx) if agent.takes_ctx else (inputs,)
        try:
            if agent.is_async:
                output = await agent.fn(*args)
            else:
                output = await call_in_thread(agent.fn, *args)
        except BaseException as exc:  # the member's failure is a result, not the node's
            if is_interruption(exc):
                raise
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return AgentResult(member_id, error=error, started_at=started)
        return AgentResult(member_id, output, started_at=started, finished_at=ctx.clock.now())

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(one(mid, agent)) for mid, agent in members]
    return [t.result() for t in tasks]


def _summary(resolved: Resolution) -> str:
    dissent = f"; dissent: {', '.join(resolved.dissent)}" if resolved.dissent else ""
    failed = f"; failed: {', '.join(resolved.failed)}" if resolved.failed else ""
    return f"{resolved.strategy}: {resolved.reason}{dissent}{failed}"


def _key(key: Key | str | None) -> Key | None:
    if key is None or callable(key):
        return key
    if not isinstance(key, str) or not key:
        raise ValidationError(f"key is a callable or 'module:attr', not {key!r}", field="key")
    if key in _KEYS:
        return _KEYS[key]
    found = import_object_ref(key, field="key")
    if not callable(found):
        raise ValidationError(
            f"key {key!r} is a {type(found).__name__}, not a callable", field="key"
        )
    return found  # type: ignore[no-any-return]


_OPTIONS = {
    "members": "The members' agent names (looked up in the graph's agents, then "
    "``Services.agents``).",
    "pool": "Pick the members from this pool instead.",
    "capability": "With ``pool``: only members offering this capability.",
    "min_trust": "With ``pool``: only members whose trust is at least this.",
    "size": "With ``pool``: at most this many members, the most trusted first.",
    "resolution": "``majority_vote`` (default), ``trust_weighted``, ``leader_decides``, "
    "``fail_on_conflict`` or ``fastest``.",
    "key": "What answers are compared on: ``normalize_text`` or a ``module:attr`` callable.",
    "leader": "The member whose result ``leader_decides`` takes.",
    "output": "``answer`` (default: the chosen output) or ``resolution`` (the whole "
    "``Resolution``).",
}


def _read(options: Mapping[str, Any], ctx: KindContext) -> Team:
    found = ctx.options(options, _OPTIONS)
    members = found.pop("members", None)
    if isinstance(members, list) and all(isinstance(m, str) for m in members):
        # Members the loader was given are bound now; the rest are looked up when the node runs.
        members = {m: ctx.agents.get(m) for m in members}
    try:
        return Team(members, **found)
    except ValidationError as exc:
        message = str(exc).removesuffix(f" (field `{exc.field}`)")
        raise ctx.fail(message, exc.field or None) from None


KIND = Kind(
    "team",
    _read,
    options=_OPTIONS,
    doc="One node done by several agents at once; their results are resolved into one answer.",
)
