"""``ConsensusGate``: a vote on the node's input gates what follows.

What follows runs only if it passes (``kind: consensus``, seed 003's consensus-based coordination).

```yaml
agents:
  approve: {kind: consensus, pool: council, rule: majority, timeout: 300}
```

The node opens a ballot (``Services.consensus``) among the members of ``pool``
(``Services.pools``) or the named ``voters`` (dids), opened by the engine's identity
(``Services.identity``), and asks each voter with a signed message on ``Services.network``:
kind ``ConsensusGate.REQUEST`` (``"ballot.request"``), payload ``{"ballot_id", "question",
"options", "proposal"}``. The voters are agents running in their own ``AgentRuntime``s: they
answer with a ``Vote`` decision, which their ``StandardExecutor`` casts on its ``votes_store``
(the same ballots). The gate waits on the store's event log — no polling — until the ballot
closes: when a vote settles it, or at ``timeout`` seconds after opening (then the gate, its
opener, closes it with the votes it has). A voter that is not on the network, or never
answers, is an absent voter, which under ``majority`` counts against.

The proposal is the node's input (its only input's value; with several, the dict of them). The
node's output is the ballot's final result as plain data (``passed``, ``proposal``,
``ballot_id``, ``winner``, ``reason``, ``tallies`` per option, ``voted``, ``eligible``, …), so
a dependent reads what passed as ``<gate>.output.proposal``. It **passes** when
the ballot decided for the ``passes`` option (``"yes"`` of ``yes``/``no`` by default); if not,
the node returns ``Halt(output)``: its output is recorded, and none of its edges is taken.

The ballot's id is ``gate/<idempotency key>`` (``gate/run/node/iteration``): a node retried,
or resumed after a crash, finds the ballot it opened instead of opening a second one, and asks
only the voters who have not voted yet; a ballot that closed meanwhile is read, not re-run.
Its events — opened, each vote, each refusal, closed — are logged under the run's trace id
(``ctx.trace_id``; the ballot id is their ``subject``), so ``converge trace RUN`` and
``Engine.trace`` show the ballot and its votes under the node. (A ballot opened before this
was so has its own id as trace id; a gate resumed on it goes on in that trace.) A vote that
comes after the ballot closed is refused as ``BallotClosed``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, get_args

import msgspec

from converge.coordination.consensus import Ballot, Rule
from converge.core.message import Message
from converge.errors import ConflictError, TransportError, ValidationError
from converge.network.transport import Transport
from converge.orchestration._context import NodeContext
from converge.orchestration._refs import MISSING, Halt
from converge.orchestration.kinds import Kind, KindContext
from converge.orchestration.services import Needs

__all__ = ["KIND", "ConsensusGate"]

_RULES: tuple[str, ...] = get_args(Rule)


class ConsensusGate:
    """A gate that opens if a vote passes.

    Args:
        pool: the pool whose members vote (``Services.pools``).
        voters: or the voters' dids.
        rule: ``majority`` (of the eligible voters), ``plurality``, ``trust_weighted``,
            ``quorum`` or ``unanimity``.
        question: what the voters are asked (default: whether to pass the node's proposal).
        options: the options, in order.
        passes: the option that opens the gate.
        timeout: seconds after opening at which the ballot closes with the votes it has;
            None: only when a vote settles it (a node ``timeout`` still bounds the wait).
        quorum: the fewest voters for a result to count.
        tie_break: ``"first_option"``, or None: a tie decides nothing.

    Raises:
        ValidationError: a bad option (its ``field`` names it).
    """

    REQUEST = "ballot.request"
    """The kind of the message that asks a voter for its vote."""

    def __init__(
        self,
        pool: str | None = None,
        *,
        voters: Collection[str] | None = None,
        rule: str = "majority",
        question: str | None = None,
        options: Sequence[str] = ("yes", "no"),
        passes: str = "yes",
        timeout: float | None = None,
        quorum: int | None = None,
        tie_break: str | None = None,
    ) -> None:
        if (pool is None) == (voters is None):
            raise ValidationError("a consensus gate has a `pool` or `voters`", field="pool")
        if pool is not None and (not isinstance(pool, str) or not pool):
            raise ValidationError(f"pool is a pool id, not {pool!r}", field="pool")
        if voters is not None and (
            isinstance(voters, str)
            or not voters
            or not all(isinstance(v, str) and v for v in voters)
        ):
            raise ValidationError(f"voters is a list of dids, not {voters!r}", field="voters")
        if rule not in _RULES:
            known = ", ".join(_RULES)
            raise ValidationError(f"unknown rule {rule!r}; one of {known}", field="rule")
        if question is not None and (not isinstance(question, str) or not question):
            raise ValidationError(f"question is a text, not {question!r}", field="question")
        if (
            isinstance(options, str)
            or not isinstance(options, Sequence)
            or len(options) < 2
            or not all(isinstance(o, str) and o for o in options)
        ):
            raise ValidationError(
                f"options is a list of at least two names, not {options!r}", field="options"
            )
        if passes not in options:
            raise ValidationError(
                f"passes is one of the options {list(options)}, not {passes!r}", field="passes"
            )
        if timeout is not None and (
            not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0
        ):
            raise ValidationError(f"timeout is seconds > 0, not {timeout!r}", field="timeout")
        if quorum is not None and (type(quorum) is not int or quorum < 1):
            raise ValidationError(f"quorum is an int >= 1, not {quorum!r}", field="quorum")
        if tie_break not in (None, "first_option"):
            raise ValidationError(
                f"tie_break is first_option or absent, not {tie_break!r}", field="tie_break"
            )
        self.pool = pool
        self.voters = tuple(voters) if voters is not None else None
        self.rule = rule
        self.question = question
        self.options = tuple(options)
        self.passes = passes
        self.timeout = None if timeout is None else float(timeout)
        self.quorum = quorum
        self.tie_break = tie_break

    async def __call__(self, inputs: dict[str, Any], ctx: NodeContext) -> Any:
        services = ctx.services
        consensus = services.need("consensus", ctx.node_id, "consensus")
        identity = services.need("identity", ctx.node_id, "consensus")
        network = services.need("network", ctx.node_id, "consensus")
        ballot_id = f"gate/{ctx.idempotency_key}"
        proposal = _proposal(inputs)
        ballot = await consensus.get(ballot_id)
        if ballot is None:
            now = consensus.clock.now()
            try:
                ballot = await consensus.open(
                    identity.did,
                    self.question or f"{ctx.node_id}: pass the proposal?",
                    self.options,
                    await self._voters(ctx),
                    rule=self.rule,
                    deadline=None if self.timeout is None else now + self.timeout,
                    quorum=self.quorum,
                    tie_break=self.tie_break,
                    ballot_id=ballot_id,
                    trace_id=ctx.trace_id,
                )
            except ConflictError:  # an earlier try opened it a moment ago
                ballot = await consensus.get(ballot_id)
                assert ballot is not None
        if not ballot.is_closed:
            await self._ask(ballot, proposal, network, identity)
            ballot = await self._wait(ballot, consensus, identity.did)
        assert ballot.result is not None
        result = msgspec.msgpack.decode(msgspec.msgpack.encode(ballot.result))
        passed = ballot.result.decided and ballot.result.winner == self.passes
        output = {"passed": passed, "proposal": proposal, **result}
        await ctx.progress(1.0, f"ballot {ballot.id}: {ballot.result.reason}")
        return output if passed else Halt(output)

    async def _voters(self, ctx: NodeContext) -> tuple[str, ...]:
        if self.voters is not None:
            return self.voters
        assert self.pool is not None
        pools = ctx.services.need("pools", ctx.node_id, "consensus")
        members = tuple(await pools.members(self.pool))
        if not members:
            raise ValidationError(
                f"consensus {ctx.node_id!r}: pool {self.pool!r} has no members to vote",
                field="pool",
            )
        return members

    async def _ask(self, ballot: Ballot, proposal: Any, network: Transport, identity: Any) -> None:
        """Ask every voter who has not voted yet (a resumed gate asks only those)."""
        payload = {
            "ballot_id": ballot.id,
            "question": ballot.question,
            "options": list(ballot.options),
            "proposal": proposal,
        }
        voted = ballot.choices()
        for voter in ballot.voters:
            if voter in voted:
                continue
            message = Message(
                kind=self.REQUEST, payload=payload, recipient=voter, trace_id=ballot.trace_id
            )
            try:
                await network.send(message.sign(identity))
            except TransportError:
                continue  # not on this network: an absent voter

    async def _wait(self, ballot: Ballot, consensus: Any, opener: str) -> Ballot:
        """The ballot once closed: by a vote that settles it, or by the gate at its deadline."""
        store = consensus.store
        while True:
            seen = await store.last_seq()
            current = await consensus.get(ballot.id)
            assert current is not None
            if current.is_closed:
                return current  # type: ignore[no-any-return]
            left = None
            if current.deadline is not None:
                left = current.deadline - consensus.clock.now()
                if left <= 0:
                    await consensus.close(ballot.id, actor=opener)
                    continue
            # Every vote is an event: wake on the next one (or at the deadline) and look again.
            await store.wait_for_events(seen, timeout=left)

    def needs(self) -> Needs:
        """Ballots, the engine's identity and network (and pools to find the voters); voters
        are asked by message, so they run in the engine's process (until messages cross
        processes)."""
        pools = ("pools",) if self.pool is not None else ()
        return Needs("consensus", ("consensus", "identity", "network", *pools), "voters")

    def __repr__(self) -> str:
        who = f"pool={self.pool!r}" if self.pool is not None else f"voters={self.voters!r}"
        return f"ConsensusGate({who}, rule={self.rule!r})"


def _proposal(inputs: Mapping[str, Any]) -> Any:
    """The node's input as voters see it: its only input's value, or the dict of them."""
    plain = {k: (None if v is MISSING else v) for k, v in inputs.items()}
    return next(iter(plain.values())) if len(plain) == 1 else plain


_OPTIONS = {
    "pool": "The pool whose members vote.",
    "voters": "Or the voters' dids.",
    "rule": "``majority`` (default, of the eligible voters), ``plurality``, "
    "``trust_weighted``, ``quorum`` or ``unanimity``.",
    "question": "What the voters are asked (default: whether to pass the node's proposal).",
    "options": "The options, in order (default ``[yes, no]``).",
    "passes": "The option that opens the gate (default ``yes``).",
    "timeout": "Seconds after which the ballot closes with the votes it has.",
    "quorum": "The fewest voters for a result to count.",
    "tie_break": "``first_option``, or unset: a tie decides nothing.",
}


def _read(options: Mapping[str, Any], ctx: KindContext) -> ConsensusGate:
    found = ctx.options(options, _OPTIONS)
    try:
        return ConsensusGate(**found)
    except ValidationError as exc:
        message = str(exc).removesuffix(f" (field `{exc.field}`)")
        raise ctx.fail(message, exc.field or None) from None


KIND = Kind(
    "consensus",
    _read,
    options=_OPTIONS,
    doc="Puts the node's input to a vote; a vote that fails halts the branch.",
)
