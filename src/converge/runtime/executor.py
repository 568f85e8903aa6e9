"""The ``StandardExecutor``: applies an agent's decisions.

It applies them to the network, the pools and the board.

The executor acts *for* an agent whose identity the runtime holds: outgoing messages are signed
with that identity, claims and reports carry its did. It never decides anything itself; the
runtime has already passed every decision through ``validate_safety``.

It keeps no state of its own about the agents it acts for, so several runtimes can share one
(``converge agents run`` does): a ``ClaimTask`` returns the claim's fencing token, and the
runtime that made the claim keeps it and hands it back (``token=``) with the agent's
``ReportTask`` or ``FailTask`` of that task. The runtime passes the agent's pools as it read
them for the round too (``pool_ids=``); without them a claim reads them from ``pools``.

Coordination decisions run only when the executor is given the matching protocol (seed 001:
``negotiation_protocol`` for ``Propose``/``AcceptProposal``/``RejectProposal``, ``votes_store``
for ``Vote``, ``delegation_protocol`` for ``Delegate``/``RevokeDelegation`` and the authority
check before everything else, ``bidding_protocols`` for ``SubmitBid``); without it they are
refused with a clear reason, never silently dropped.

``votes_store`` takes seed 001's own form as well as a ``Consensus``: a plain mutable mapping
``vote id -> [(agent, option)]``, which the executor appends each ``Vote`` to (one vote per agent
and vote id: a second is refused with ``BallotRefused``, ``reason="already_voted"``, as a
``Consensus`` ballot refuses it by default). Such a vote has no electorate, options or deadline
and records no event; count it with ``majority(dict(votes[vote_id]))`` or ``plurality(...)``.
A ``Consensus`` is the form with eligible voters, rules, deadlines and events.

Several ``ClaimTask`` or ``ReportTask`` decisions in a row go to the board as one unit each
(``claim_tasks``: ``TaskManager.claim_next`` among their tasks; ``report_tasks``:
``report_many``) when the runtime asks, with the outcome of each decision kept apart. Not with a
``delegation_protocol``: its authority check stays one decision at a time.

Every argument is checked when the executor is built: a wrong type is a ``ValidationError``
naming it.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, MutableSequence, Sequence
from typing import Any, TypeVar

from converge.coordination.bidding import BiddingProtocol
from converge.coordination.consensus import Consensus
from converge.coordination.delegation import DelegationProtocol
from converge.coordination.negotiation import NegotiationProtocol
from converge.coordination.pool_manager import PoolManager
from converge.coordination.task_manager import MAX_BATCH, Report, TaskManager
from converge.core.agent import Agent
from converge.core.clock import Clock, system_clock
from converge.core.decisions import (
    AcceptProposal,
    CancelTask,
    ClaimTask,
    CreatePool,
    Decision,
    Delegate,
    FailTask,
    InvokeTool,
    JoinPool,
    LeavePool,
    Propose,
    RejectProposal,
    ReportTask,
    RevokeDelegation,
    SendMessage,
    SubmitBid,
    SubmitTask,
    Vote,
)
from converge.core.message import Message
from converge.core.pool import Pool
from converge.core.task import Task
from converge.core.tools import ToolRegistry
from converge.errors import (
    BallotRefused,
    ConvergeError,
    PolicyViolation,
    ReportsRefused,
    ValidationError,
)
from converge.network.transport import Transport
from converge.runtime._arguments import check_type, describe
from converge.runtime.tools import SafeTools

__all__ = ["StandardExecutor", "sign_and_send"]

T = TypeVar("T")

_VotesMapping = MutableMapping[str, list[tuple[str, str]]]
"""Seed 001's ``votes_store``: vote id -> the ``(agent, option)`` pairs voted so far."""

_COORDINATION = (
    SubmitBid,
    Vote,
    Propose,
    AcceptProposal,
    RejectProposal,
    Delegate,
    RevokeDelegation,
)


async def sign_and_send(
    agent: Agent,
    decision: SendMessage,
    network: Transport,
    trace_id: str | None = None,
    clock: Clock = system_clock,
) -> Message:
    """Build the message a ``SendMessage`` describes, sign it as ``agent`` and send it."""
    message = Message(
        created_at=clock.now(),
        kind=decision.kind,
        payload=decision.payload,
        recipient=decision.recipient,
        topic=decision.topic,
        trace_id=decision.trace_id or trace_id,
        parent_id=decision.parent_id,
    ).sign(agent.identity)
    await network.send(message)
    return message


class StandardExecutor:
    """Applies decisions for agents.

    Args:
        network: the transport ``SendMessage`` goes out on.
        tasks: the board, for task decisions.
        pools: the pools, for pool decisions (and the claimer's memberships).
        tools: the tools ``InvokeTool`` may call. Every call goes through a ``SafeTools``
            (policy, limits, timeout, sandbox for unsafe tools, typed errors); a bare
            ``ToolRegistry`` is wrapped in one that allows everything (the runtime has already
            checked the agent's policy and limits) with the default timeout.
        negotiation_protocol: runs ``Propose``, ``AcceptProposal`` and ``RejectProposal``.
        votes_store: where ``Vote`` decisions are cast: a ``Consensus`` (its ballots), or seed
            001's plain mapping ``vote id -> [(agent, option)]`` that each vote is appended to
            (one per agent and vote id; see the module's docstring).
        delegation_protocol: runs ``Delegate``/``RevokeDelegation``; when given, every other
            decision needs the agent's authority for it (``require(did, action)``), where the
            action is the decision's tag (``invoke_tool:<tool>`` for tools).
        bidding_protocols: the ``BiddingProtocol`` running each auction, by auction id; the key
            ``"*"`` runs any auction not named. A ``SubmitBid`` becomes an ``Offer`` signed by
            the agent and submitted to it. The mapping is read at each bid, so a requester may
            add its auctions as it opens them.
        clock: the time source (message timestamps).

    Raises:
        ValidationError: an argument of the wrong type (``field`` names it); a ``votes_store``
            that is neither a ``Consensus`` nor a mutable mapping of lists of
            ``(agent, option)`` pairs.
    """

    def __init__(
        self,
        *,
        network: Transport | None = None,
        tasks: TaskManager | None = None,
        pools: PoolManager | None = None,
        tools: ToolRegistry | SafeTools | None = None,
        negotiation_protocol: NegotiationProtocol | None = None,
        votes_store: Consensus | _VotesMapping | None = None,
        delegation_protocol: DelegationProtocol | None = None,
        bidding_protocols: Mapping[str, BiddingProtocol] | None = None,
        clock: Clock = system_clock,
    ) -> None:
        check_type(network, Transport, "network")
        check_type(tasks, TaskManager, "tasks")
        check_type(pools, PoolManager, "pools")
        check_type(tools, (ToolRegistry, SafeTools), "tools")
        check_type(negotiation_protocol, NegotiationProtocol, "negotiation_protocol")
        check_type(delegation_protocol, DelegationProtocol, "delegation_protocol")
        _check_bidding(bidding_protocols)
        check_type(clock, Clock, "clock", optional=False)
        self._ballots = _ballots(votes_store)
        self.network = network
        self.bidding_protocols = bidding_protocols
        self.delegation_protocol = delegation_protocol
        self.negotiation_protocol = negotiation_protocol
        self.votes_store = votes_store
        self.clock = clock
        self.tasks = tasks
        self.pools = pools
        self.tools: SafeTools | None = (
            SafeTools(tools, clock=clock) if isinstance(tools, ToolRegistry) else tools
        )

    @property
    def batches(self) -> bool:
        """Whether ``claim_tasks`` and ``report_tasks`` apply (a board, and no delegation
        protocol, whose check is per decision)."""
        return self.tasks is not None and self.delegation_protocol is None

    async def claim_tasks(
        self,
        agent: Agent,
        decisions: Sequence[ClaimTask],
        *,
        pool_ids: Sequence[str] | None = None,
    ) -> dict[str, int]:
        """Apply ``agent``'s ``ClaimTask`` decisions in one unit of the board (per
        ``MAX_BATCH``); returns the fencing token of each task claimed, by task id.

        A task not claimed — not PENDING, not visible to the agent, taken first — is left out,
        without an error: ``execute`` of its decision alone says why.

        Raises:
            PolicyViolation: ``batches`` is false.
        """
        tasks = self._batch_board()
        did = agent.did
        if pool_ids is None:
            pool_ids = await self.pools.get_pools_for_agent(did) if self.pools else []
        ids = list(dict.fromkeys(d.task_id for d in decisions))
        tokens: dict[str, int] = {}
        for first in range(0, len(ids), MAX_BATCH):
            chunk = ids[first : first + MAX_BATCH]
            claimed = await tasks.claim_next(
                did,
                limit=len(chunk),
                pool_ids=pool_ids,
                capabilities=agent.capabilities,
                among=chunk,
            )
            tokens.update((task.id, task.attempts) for task in claimed)
        return tokens

    async def report_tasks(
        self, agent: Agent, decisions: Sequence[ReportTask], tokens: Mapping[str, int]
    ) -> list[Task | ConvergeError]:
        """Apply ``agent``'s ``ReportTask`` decisions (of distinct tasks) in one unit of the
        board (``report_many``, per ``MAX_BATCH``); returns, per decision, the completed task or
        the error that refused it (what ``execute`` of it alone would have raised).

        Args:
            agent: whose reports.
            decisions: the reports; one without a ``token`` of its own goes with ``tokens``'.
            tokens: the fencing token of each task the agent holds through the caller.

        Raises:
            PolicyViolation: ``batches`` is false.
            ValidationError: the batch as a whole cannot be written (a result no store can
                encode, a task twice): nothing was written; ``execute`` each decision instead.
        """
        tasks = self._batch_board()
        did = agent.did
        outcomes: dict[int, Task | ConvergeError] = {}
        reports: list[tuple[int, Report]] = []
        for i, decision in enumerate(decisions):
            token = tokens.get(decision.task_id) if decision.token is None else decision.token
            try:
                held = _held(did, decision.task_id, token)
            except PolicyViolation as exc:
                outcomes[i] = exc
                continue
            reports.append((i, Report(decision.task_id, decision.result, held)))
        for first in range(0, len(reports), MAX_BATCH):
            chunk = reports[first : first + MAX_BATCH]
            try:
                done = await tasks.report_many(did, [report for _, report in chunk])
                refused: dict[str, ConvergeError] = {}
            except ReportsRefused as exc:
                done, refused = list(exc.completed), exc.refused
            by_id = {task.id: task for task in done}
            for i, report in chunk:
                task = by_id.get(report.task_id)
                outcomes[i] = task if task is not None else refused[report.task_id]
        return [outcomes[i] for i in range(len(decisions))]

    def _batch_board(self) -> TaskManager:
        if self.tasks is None or self.delegation_protocol is not None:
            raise PolicyViolation(
                "this executor applies task decisions one at a time (no board, or a "
                "delegation protocol whose check is per decision)"
            )
        return self.tasks

    async def execute(
        self,
        agent: Agent,
        decision: Decision,
        *,
        trace_id: str | None = None,
        token: int | None = None,
        pool_ids: Sequence[str] | None = None,
    ) -> Any:
        """Apply ``decision`` for ``agent``; returns what it produced (a message, a claim's
        fencing token, …).

        Args:
            agent: whom the decision is for (its did acts, its identity signs).
            decision: what to do.
            trace_id: the trace the decision's messages and events belong to.
            token: for a ``ReportTask`` (without a token of its own) or a ``FailTask``: the
                fencing token the agent's ``ClaimTask`` of that task returned. Without one the
                decision is refused: the agent holds no claim the caller knows of.
            pool_ids: for a ``ClaimTask``: the agent's pools as the caller last read them
                (None: read them from ``pools``).

        Raises:
            ConvergeError: the decision was refused or failed (the runtime records it and goes
                on with the next one).
        """
        did = agent.did
        delegation = self.delegation_protocol
        if delegation is not None:
            if isinstance(decision, Delegate):
                return await delegation.delegate(
                    agent.identity, decision.to, decision.scope, expires_at=decision.expires_at
                )
            if isinstance(decision, RevokeDelegation):
                return await delegation.revoke(did, decision.delegation_id)
            await delegation.require(did, _action(decision), trace_id=trace_id)
        if isinstance(decision, SendMessage):
            network = _need(self.network, "a network")
            return await sign_and_send(agent, decision, network, trace_id, self.clock)
        if isinstance(decision, ClaimTask):
            tasks = _need(self.tasks, "a task board")
            if pool_ids is None:
                pool_ids = await self.pools.get_pools_for_agent(did) if self.pools else []
            return await tasks.claim(
                did, decision.task_id, pool_ids=pool_ids, capabilities=agent.capabilities
            )
        if isinstance(decision, ReportTask):
            tasks = _need(self.tasks, "a task board")
            held = _held(did, decision.task_id, token if decision.token is None else decision.token)
            return await tasks.report(did, decision.task_id, decision.result, held)
        if isinstance(decision, FailTask):
            tasks = _need(self.tasks, "a task board")
            held = _held(did, decision.task_id, token)
            return await tasks.fail_task(
                decision.task_id, decision.reason, agent_id=did, token=held
            )
        if isinstance(decision, SubmitTask):
            tasks = _need(self.tasks, "a task board")
            task = Task(
                objective=decision.objective,
                inputs=decision.inputs,
                pool_id=decision.pool_id,
                required_capabilities=decision.required_capabilities,
                priority=decision.priority,
                max_attempts=decision.max_attempts,
                trace_id=trace_id,
            )
            return await tasks.submit(task, actor=did)
        if isinstance(decision, CancelTask):
            tasks = _need(self.tasks, "a task board")
            target = await tasks.get(decision.task_id)
            if target is not None and target.submitted_by != did:
                raise PolicyViolation(
                    f"{did} may not cancel task {decision.task_id}: only its submitter may"
                )
            return await tasks.cancel_task(decision.task_id, decision.reason, actor=did)
        if isinstance(decision, JoinPool):
            pools = _need(self.pools, "pools")
            return await pools.join_pool(
                did, decision.pool_id, decision.credentials, capabilities=agent.capabilities
            )
        if isinstance(decision, LeavePool):
            return await _need(self.pools, "pools").leave_pool(did, decision.pool_id)
        if isinstance(decision, CreatePool):
            pools = _need(self.pools, "pools")
            fields: dict[str, Any] = {} if decision.pool_id is None else {"id": decision.pool_id}
            spec = Pool(
                name=decision.name,
                description=decision.description,
                admission=decision.admission,
                governance=decision.governance,
                required_capabilities=decision.required_capabilities,
                created_by=did,
                **fields,
            )
            return await pools.create_pool(spec, actor=did)
        if isinstance(decision, InvokeTool):
            tools = _need(self.tools, "a tool registry")
            return await tools.call(did, decision.tool, decision.arguments)
        if isinstance(decision, (Propose, AcceptProposal, RejectProposal)) and (
            self.negotiation_protocol is not None
        ):
            return await self._negotiate(self.negotiation_protocol, did, decision, trace_id)
        if isinstance(decision, SubmitBid) and self.bidding_protocols is not None:
            protocols = self.bidding_protocols
            protocol = protocols.get(decision.auction_id) or protocols.get("*")
            if protocol is None:
                raise PolicyViolation(
                    f"no bidding protocol runs auction {decision.auction_id!r} for this executor"
                )
            return await protocol.bid(agent.identity, decision, capabilities=agent.capabilities)
        if isinstance(decision, Vote) and self._ballots is not None:
            return await self._ballots.vote(did, decision.ballot_id, decision.choice)
        if isinstance(decision, _COORDINATION):
            tag = type(decision).__struct_config__.tag
            raise PolicyViolation(
                f"this executor runs no coordination protocol for {tag!r} decisions; "
                "configure one to let agents use them"
            )
        raise ValidationError(f"not a decision: {type(decision).__name__}")

    async def _negotiate(
        self,
        protocol: NegotiationProtocol,
        did: str,
        decision: Propose | AcceptProposal | RejectProposal,
        trace_id: str | None,
    ) -> Any:
        if isinstance(decision, AcceptProposal):
            return await protocol.accept(did, decision.session_id, decision.proposal_id)
        if isinstance(decision, RejectProposal):
            return await protocol.reject(
                did, decision.session_id, decision.proposal_id, decision.reason
            )
        if decision.parties and await protocol.get(decision.session_id) is None:
            return await protocol.open(
                did,
                decision.parties,
                decision.terms,
                session_id=decision.session_id,
                trace_id=trace_id,
            )
        return await protocol.propose(did, decision.session_id, decision.terms)


class _MappingBallots:
    """Seed 001's plain ``votes_store``: votes appended to ``vote id -> [(agent, option)]``."""

    def __init__(self, votes: _VotesMapping) -> None:
        self.votes = votes

    async def vote(self, voter: str, ballot_id: str, option: str) -> list[tuple[str, str]]:
        """Append ``(voter, option)`` to the vote's list; returns the list.

        Raises:
            BallotRefused: ``voter`` voted on ``ballot_id`` already (``already_voted``).
        """
        cast = self.votes.setdefault(ballot_id, [])
        # No await between the check and the append: two runtimes sharing this executor cannot
        # both pass the check for one agent.
        for agent, chosen in cast:
            if agent == voter:
                raise BallotRefused(
                    f"{voter} voted on {ballot_id!r} already (for {chosen!r})",
                    ballot_id=ballot_id,
                    agent_id=voter,
                    act="vote",
                    reason="already_voted",
                )
        cast.append((voter, option))
        return cast


def _ballots(votes_store: object) -> Consensus | _MappingBallots | None:
    """What ``Vote`` decisions are cast on, from the ``votes_store`` given."""
    if votes_store is None or isinstance(votes_store, Consensus):
        return votes_store
    hint = (
        "a Consensus (converge.coordination.Consensus(store)), or a plain mutable mapping "
        "vote id -> [(agent, option)] such as {}"
    )
    if not isinstance(votes_store, MutableMapping):
        raise ValidationError(
            f"votes_store must be {hint}, not {describe(votes_store)}", field="votes_store"
        )
    for vote_id, cast in votes_store.items():
        where = f"votes_store[{vote_id!r}]"
        if not isinstance(vote_id, str):
            raise ValidationError(
                f"votes_store's vote ids must be strings, not {describe(vote_id)}; votes_store "
                f"is {hint}",
                field=where,
            )
        if not isinstance(cast, MutableSequence) or not all(_is_pair(v) for v in cast):
            raise ValidationError(
                f"{where} must be a list of (agent, option) pairs of strings, not "
                f"{describe(cast)}; votes_store is {hint}",
                field=where,
            )
    return _MappingBallots(votes_store)


def _is_pair(vote: object) -> bool:
    return (
        isinstance(vote, tuple)
        and len(vote) == 2
        and isinstance(vote[0], str)
        and isinstance(vote[1], str)
    )


def _check_bidding(protocols: object) -> None:
    if protocols is None:
        return
    if not isinstance(protocols, Mapping):
        raise ValidationError(
            'bidding_protocols must be a mapping auction id -> BiddingProtocol ("*": any '
            f"auction), not {describe(protocols)}",
            field="bidding_protocols",
        )
    for auction_id, protocol in protocols.items():
        where = f"bidding_protocols[{auction_id!r}]"
        if not isinstance(auction_id, str):
            raise ValidationError(
                f"bidding_protocols' auction ids must be strings, not {describe(auction_id)}",
                field=where,
            )
        check_type(protocol, BiddingProtocol, where, optional=False)


def _action(decision: Decision) -> str:
    """The action a decision is, as scopes name it: its tag, ``invoke_tool:<tool>`` for tools."""
    tag = str(type(decision).__struct_config__.tag)
    return f"{tag}:{decision.tool}" if isinstance(decision, InvokeTool) else tag


def _held(did: str, task_id: str, token: int | None) -> int:
    """The fencing token a report or failure of ``task_id`` goes with; refused without one."""
    if token is None:
        raise PolicyViolation(
            f"{did} holds no claim on task {task_id} that its runtime knows of: a report or "
            "a failure needs the fencing token its claim returned"
        )
    return token


def _need(part: T | None, what: str) -> T:
    if part is None:
        raise PolicyViolation(f"this executor has no {what} to act on")
    return part
