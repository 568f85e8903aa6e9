"""Result resolution: several agents did the same work; pick one answer.

``resolve(results, strategy, *, key, trust, leader, choose)`` applies a ``ConflictStrategy``, each
also a function with the same keywords (``resolve`` ignores those its strategy does not use):

- ``majority_vote``: the answer of more than half of the **successful** results (failed results
  count neither for nor against); a tie or no majority fails.
- ``trust_weighted``: an answer weighs its agents' summed trust (each clamped to [0, 1]; exact
  ``math.fsum``); the heaviest wins; a tie, or no answer with any trust, fails.
- ``leader_decides``: the leader's own result by default; with ``choose`` (sync or async, e.g. a
  critic), the result it returns from all of them (sorted by agent), or None for none.
- ``fail_on_conflict``: every successful answer must be the same one.
- ``fastest``: the successful result with the earliest ``finished_at`` (a tie: the smaller did).

Answers are the same when their outputs' canonical MessagePack (``canonical_encode``: sorted map
keys, exact float64, NaN refused) is: ``{"a": 1, "b": 2}`` equals ``{"b": 2, "a": 1}`` and a list
a tuple; ``1``, ``1.0`` and ``True`` differ. A ``key`` (sync or async) maps outputs to what is
compared instead (``normalize_text``, a critic's verdict). A ``digest`` is sha256 of those bytes
(``output_digest(output)`` without a key). One result per agent; the order of the results never
changes the outcome (a voting strategy returns the output of the winner with the smallest did).
``normalize_text`` is NFKC, case-folded, whitespace collapsed. The result is a ``Resolution``
(output, ``chosen``, ``winners``, support, one ``AnswerTally`` per distinct answer, reason,
``dissent``, ``failed``), or ``ResolutionFailed`` (strategy, reason, the answers with their agents,
the failed results).
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import inspect
import math
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple, TypeAlias

import msgspec

from converge.coordination.pool_manager import TrustSource
from converge.core.signing import canonical_encode
from converge.errors import ResolutionFailed, ValidationError

__all__ = [
    "AgentResult",
    "AnswerTally",
    "Choose",
    "ConflictStrategy",
    "Key",
    "Resolution",
    "ResolutionFailed",
    "Tally",
    "fail_on_conflict",
    "fastest",
    "leader_decides",
    "majority_vote",
    "normalize_text",
    "resolve",
    "trust_weighted",
]


class ConflictStrategy(enum.StrEnum):
    """How to pick one result among several (seed 004's four strategies, plus ``fastest``)."""

    TRUST_WEIGHTED = "trust_weighted"
    MAJORITY_VOTE = "majority_vote"
    LEADER_DECIDES = "leader_decides"
    FAIL_ON_CONFLICT = "fail_on_conflict"
    FASTEST = "fastest"


class AgentResult(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One agent's attempt at the work."""

    agent: str
    """The did of the agent that did it."""
    output: Any = None
    """What it produced (ignored when ``error`` is set)."""
    error: str | None = None
    """Why the attempt failed; None for a successful one."""
    started_at: float | None = None
    """When the attempt started (seconds since the epoch)."""
    finished_at: float | None = None
    """When it finished; ``fastest`` needs it on every successful result."""
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    """The caller's own data, never read here (e.g. ``task_id``, ``trace_id``, ``usage``)."""

    def __post_init__(self) -> None:
        start, end = self.started_at, self.finished_at
        for ok, field, text in (
            (isinstance(self.agent, str) and self.agent, "agent", "a result needs its agent's did"),
            (self.error != "", "error", "`error` must say what failed (None means success)"),
            (start is None or math.isfinite(start), "started_at", "`started_at` must be finite"),
            (end is None or math.isfinite(end), "finished_at", "`finished_at` must be finite"),
            (start is None or end is None or start <= end, "finished_at", "finished before start"),
        ):
            if not ok:
                raise ValidationError(text, field=field)


class AnswerTally(msgspec.Struct, frozen=True):
    """One distinct answer and what stands behind it."""

    label: str
    """The answer as compared, as short JSON (cut with ``…``), for people."""
    digest: str
    """sha256 (hex) of the answer's canonical bytes: its identity."""
    support: float
    """How many agents gave it (``trust_weighted``: the sum of their trust)."""
    agents: tuple[str, ...]
    """The dids that gave it, sorted."""


Tally = AnswerTally
"""The old name of ``AnswerTally``, kept so imports of it work (a ballot's ``Tally``, in
``converge.coordination.consensus``, is another thing: the support of one option)."""


class Resolution(msgspec.Struct, frozen=True):
    """The answer picked, and why."""

    output: Any
    """The chosen result's output."""
    chosen: str
    """The did whose result's output this is."""
    winners: tuple[str, ...]
    """Every did that gave the chosen answer, sorted."""
    strategy: ConflictStrategy
    """The strategy that picked it."""
    support: float
    """The chosen answer's support (a count; ``trust_weighted``: a weight)."""
    tallies: tuple[AnswerTally, ...]
    """Every distinct successful answer, by support (highest first), then digest."""
    reason: str
    """Why this answer, in words."""
    dissent: tuple[str, ...]
    """The dids whose successful answers lost, sorted."""
    failed: tuple[str, ...] = ()
    """The dids whose attempts failed, sorted."""


Key: TypeAlias = Callable[[Any], Any]
"""Maps an output to what is compared; may return an awaitable (an async critic)."""
Choose: TypeAlias = Callable[
    [tuple[AgentResult, ...]], AgentResult | Awaitable[AgentResult | None] | None
]
"""Given every result (sorted by agent), returns the chosen one, or None for none."""


def normalize_text(value: Any) -> Any:
    """A ``key`` for free text: NFKC, case-folded, whitespace collapsed; non-text unchanged."""
    if not isinstance(value, str):
        return value
    return " ".join(unicodedata.normalize("NFKC", value).casefold().split())


class _Entry(NamedTuple):
    result: AgentResult
    digest: str
    data: bytes


def _check(results: Sequence[AgentResult]) -> list[tuple[int, AgentResult]]:
    seen: set[str] = set()
    for i, r in enumerate(results):
        if not isinstance(r, AgentResult):
            raise ValidationError(f"not an AgentResult: {type(r).__name__}", field=f"results[{i}]")
        if r.agent in seen:
            raise ValidationError(f"a second result from {r.agent}", field=f"results[{i}].agent")
        seen.add(r.agent)
    return sorted(enumerate(results), key=lambda ir: ir[1].agent)


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


async def _map(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """``fn`` over ``items``; awaitable returns are awaited concurrently in one task group."""
    values: list[Any] = []
    try:
        async with asyncio.TaskGroup() as group:
            for item in items:
                value = fn(item)
                if inspect.isawaitable(value):
                    value = group.create_task(_awaited(value))
                values.append(value)
    except ExceptionGroup as errors:
        # The callables are the caller's (keys, trust sources): hand back their own error.
        raise errors.exceptions[0] from None
    return [v.result() if isinstance(v, asyncio.Task) else v for v in values]


def _encode(value: Any, where: str) -> bytes:
    try:
        return canonical_encode(value)
    except ValidationError as exc:
        suffix = (exc.field or "$").removeprefix("$")
        raise ValidationError(f"{where} cannot be compared: {exc}", field=where + suffix) from exc


def _label(data: bytes) -> str:
    try:
        text = msgspec.json.encode(msgspec.msgpack.decode(data)).decode()
    except (TypeError, msgspec.EncodeError):  # a MessagePack extension, which JSON cannot show
        text = f"<msgpack {data[:20].hex()}>"
    return text if len(text) <= 40 else text[:39] + "…"


class _Round:
    """The successful results, grouped by answer; every list sorted by did."""

    def __init__(self, strategy: ConflictStrategy, entries: list[_Entry], failed: tuple[str, ...]):
        self.strategy, self.entries, self.failed = strategy, entries, failed
        self.groups: dict[str, list[_Entry]] = {}
        for e in entries:
            self.groups.setdefault(e.digest, []).append(e)
        self.tallies = self.tally()

    def tally(self, weigh: Callable[[list[_Entry]], float] = len) -> tuple[AnswerTally, ...]:
        out = [
            AnswerTally(_label(g[0].data), d, weigh(g), tuple(e.result.agent for e in g))
            for d, g in self.groups.items()
        ]
        self.tallies = tuple(sorted(out, key=lambda t: (-t.support, t.digest)))
        return self.tallies

    def fail(self, reason: str) -> ResolutionFailed:
        return ResolutionFailed(self.strategy, reason, self.tallies, self.failed)

    def pick(self, chosen: _Entry, reason: str) -> Resolution:
        tally = next(t for t in self.tallies if t.digest == chosen.digest)
        return Resolution(
            output=chosen.result.output,
            chosen=chosen.result.agent,
            winners=tally.agents,
            strategy=self.strategy,
            support=tally.support,
            tallies=self.tallies,
            reason=reason,
            dissent=tuple(e.result.agent for e in self.entries if e.digest != chosen.digest),
            failed=self.failed,
        )


async def _round(
    strategy: ConflictStrategy, checked: list[tuple[int, AgentResult]], key: Key | None
) -> _Round:
    ok = [(i, r) for i, r in checked if r.error is None]
    failed = tuple(r.agent for _, r in checked if r.error is not None)
    if not ok:
        raise ResolutionFailed(strategy, f"no result succeeded ({len(failed)} failed)", (), failed)
    outputs = [r.output for _, r in ok]
    values = outputs if key is None else await _map(key, outputs)
    where = "results[{}].output" if key is None else "key(results[{}].output)"
    entries = []
    for (i, r), value in zip(ok, values, strict=True):
        data = _encode(value, where.format(i))
        entries.append(_Entry(r, hashlib.sha256(data).hexdigest(), data))
    return _Round(strategy, entries, failed)


async def majority_vote(results: Sequence[AgentResult], *, key: Key | None = None) -> Resolution:
    """The answer of more than half of the successful results (else ``ResolutionFailed``)."""
    rnd = await _round(ConflictStrategy.MAJORITY_VOTE, _check(results), key)
    top, n = rnd.tallies[0], len(rnd.entries)
    if 2 * top.support > n:
        return rnd.pick(rnd.groups[top.digest][0], f"{top.support} of {n} successful results agree")
    if rnd.tallies[1].support == top.support:  # a lone answer would have been a majority
        raise rnd.fail(f"tie: the top answers have {top.support} of {n} results each")
    raise rnd.fail(f"no majority: the top answer has {top.support} of {n} results")


async def trust_weighted(
    results: Sequence[AgentResult], *, trust: TrustSource | None = None, key: Key | None = None
) -> Resolution:
    """The answer whose agents' trust scores sum highest.

    Raises:
        ResolutionFailed: a tie, no answer with any trust, or no successful result.
        ValidationError: no ``trust`` source, a score that is not a number, or bad results.
    """
    if trust is None:
        raise ValidationError("trust_weighted needs a trust source", field="trust")
    rnd = await _round(ConflictStrategy.TRUST_WEIGHTED, _check(results), key)
    agents = [e.result.agent for e in rnd.entries]
    weights: dict[str, float] = {}
    for agent, score in zip(agents, await _map(trust.score, agents), strict=True):
        if not isinstance(score, (int, float)) or math.isnan(score):
            raise ValidationError(f"the trust score of {agent} is {score!r}", field="trust")
        weights[agent] = min(1.0, max(0.0, float(score)))
    tallies = rnd.tally(lambda g: math.fsum(weights[e.result.agent] for e in g))
    top = tallies[0]
    if top.support <= 0:
        raise rnd.fail("no answer carries any trust")
    if len(tallies) > 1 and tallies[1].support == top.support:
        raise rnd.fail(f"tie: the top answers weigh {top.support:g} each")
    why = f"weighs {top.support:g} of {math.fsum(weights.values()):g} total trust, the most"
    return rnd.pick(rnd.groups[top.digest][0], why)


async def leader_decides(
    results: Sequence[AgentResult],
    *,
    leader: str | None = None,
    choose: Choose | None = None,
    key: Key | None = None,
) -> Resolution:
    """The leader's own result, or the one ``choose`` returns (for the leader, if named).

    Raises:
        ResolutionFailed: the choice is None or a failed attempt, or no result succeeded.
        ValidationError: neither ``leader`` nor ``choose``, a ``leader`` without a result, or
            ``choose`` returned something else than one of the results.
    """
    checked = _check(results)
    by_agent = {r.agent: r for _, r in checked}
    if leader is None and choose is None:
        raise ValidationError("leader_decides needs a `leader` or a `choose`", field="leader")
    if leader is not None and leader not in by_agent:
        raise ValidationError(f"the leader {leader} gave no result", field="leader")
    rnd = await _round(ConflictStrategy.LEADER_DECIDES, checked, key)
    if choose is None:
        who, picked = f"the leader {leader}", by_agent[leader or ""]
    else:
        made = choose(tuple(r for _, r in checked))
        got = await made if inspect.isawaitable(made) else made
        who = "`choose`" + (f" for the leader {leader}" if leader else "")
        if got is None:
            raise rnd.fail(f"{who} chose none of the results")
        if not isinstance(got, AgentResult) or by_agent.get(got.agent) != got:
            raise ValidationError(f"not one of the results: {got!r}", field="choose")
        picked = got
    whose = "its own" if picked.agent == leader else f"{picked.agent}'s"
    if picked.error is not None:
        raise rnd.fail(f"{who} chose {whose} failed attempt: {picked.error}")
    entry = next(e for e in rnd.entries if e.result.agent == picked.agent)
    return rnd.pick(entry, f"{who} chose {whose} result")


async def fail_on_conflict(results: Sequence[AgentResult], *, key: Key | None = None) -> Resolution:
    """The one answer of every successful result; else ``ResolutionFailed`` naming them all."""
    rnd = await _round(ConflictStrategy.FAIL_ON_CONFLICT, _check(results), key)
    if len(rnd.groups) > 1:
        raise rnd.fail(f"{len(rnd.groups)} distinct answers among {len(rnd.entries)} results")
    return rnd.pick(rnd.entries[0], f"all {len(rnd.entries)} successful results agree")


async def fastest(results: Sequence[AgentResult], *, key: Key | None = None) -> Resolution:
    """The successful result that finished first (on a tie, the smaller did)."""
    checked = _check(results)
    for i, r in checked:
        if r.error is None and r.finished_at is None:
            raise ValidationError("`fastest` needs it", field=f"results[{i}].finished_at")
    rnd = await _round(ConflictStrategy.FASTEST, checked, key)
    first = min(rnd.entries, key=lambda e: (e.result.finished_at or 0.0, e.result.agent))
    return rnd.pick(first, f"finished first, at {first.result.finished_at}")


async def resolve(
    results: Sequence[AgentResult],
    strategy: ConflictStrategy | str,
    *,
    key: Key | None = None,
    trust: TrustSource | None = None,
    leader: str | None = None,
    choose: Choose | None = None,
) -> Resolution:
    """Pick one result by ``strategy`` (an enum member or its value), ignoring unused keywords."""
    try:
        chosen = ConflictStrategy(strategy)
    except ValueError:
        names = ", ".join(ConflictStrategy)
        raise ValidationError(f"unknown {strategy!r}; one of {names}", field="strategy") from None
    if chosen is ConflictStrategy.TRUST_WEIGHTED:
        return await trust_weighted(results, trust=trust, key=key)
    if chosen is ConflictStrategy.LEADER_DECIDES:
        return await leader_decides(results, leader=leader, choose=choose, key=key)
    return await _KEY_ONLY[chosen](results, key=key)


_KEY_ONLY = {
    ConflictStrategy.MAJORITY_VOTE: majority_vote,
    ConflictStrategy.FAIL_ON_CONFLICT: fail_on_conflict,
    ConflictStrategy.FASTEST: fastest,
}
