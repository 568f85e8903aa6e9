"""The ``StandardExecutor``: applies an agent's decisions to the network, the pools and the board.

The executor acts *for* an agent whose identity the runtime holds: outgoing messages are signed
with that identity, claims and reports carry its did. It never decides anything itself; the
runtime has already passed every decision through ``validate_safety``.

Coordination decisions run only when the executor is given the matching protocol (seed 001:
``negotiation_protocol`` for ``Propose``/``AcceptProposal``/``RejectProposal``, ``votes_store``
for ``Vote``, ``delegation_protocol`` for ``Delegate``/``RevokeDelegation`` and the authority
check before everything else, ``bidding_protocols`` for ``SubmitBid``); without it they are
refused with a clear reason, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from converge.coordination.bidding import BiddingProtocol
from converge.coordination.consensus import Consensus
from converge.coordination.delegation import DelegationProtocol
from converge.coordination.negotiation import NegotiationProtocol
from converge.coordination.pool_manager import PoolManager
from converge.coordination.task_manager import TaskManager
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
from converge.errors import PolicyViolation, ValidationError
from converge.network.local import LocalNetwork
from converge.runtime.tools import SafeTools

__all__ = ["StandardExecutor", "sign_and_send"]

T = TypeVar("T")

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
    network: LocalNetwork,
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
        network: where ``SendMessage`` goes.
        tasks: the board, for task decisions.
        pools: the pools, for pool decisions (and the claimer's memberships).
        tools: the tools ``InvokeTool`` may call. Every call goes through a ``SafeTools``
            (policy, limits, timeout, sandbox for unsafe tools, typed errors); a bare
            ``ToolRegistry`` is wrapped in one that allows everything (the runtime has already
            checked the agent's policy and limits) with the default timeout.
        negotiation_protocol: runs ``Propose``, ``AcceptProposal`` and ``RejectProposal``.
        votes_store: the ballots ``Vote`` decisions are cast on.
        delegation_protocol: runs ``Delegate``/``RevokeDelegation``; when given, every other
            decision needs the agent's authority for it (``require(did, action)``), where the
            action is the decision's tag (``invoke_tool:<tool>`` for tools).
        bidding_protocols: the ``BiddingProtocol`` running each auction, by auction id; the key
            ``"*"`` runs any auction not named. A ``SubmitBid`` becomes an ``Offer`` signed by
            the agent and submitted to it. The mapping is read at each bid, so a requester may
            add its auctions as it opens them.
        clock: the time source (message timestamps).
    """

    def __init__(
        self,
        *,
        network: LocalNetwork | None = None,
        tasks: TaskManager | None = None,
        pools: PoolManager | None = None,
        tools: ToolRegistry | SafeTools | None = None,
        negotiation_protocol: NegotiationProtocol | None = None,
        votes_store: Consensus | None = None,
        delegation_protocol: DelegationProtocol | None = None,
        bidding_protocols: Mapping[str, BiddingProtocol] | None = None,
        clock: Clock = system_clock,
    ) -> None:
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
        self._tokens: dict[tuple[str, str], int] = {}

    def token(self, agent_id: str, task_id: str) -> int | None:
        """The fencing token of ``agent_id``'s current claim on ``task_id``, if it holds one."""
        return self._tokens.get((agent_id, task_id))

    async def execute(
        self, agent: Agent, decision: Decision, *, trace_id: str | None = None
    ) -> Any:
        """Apply ``decision`` for ``agent``; returns what it produced (a message, a token, …).

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
            pool_ids = await self.pools.get_pools_for_agent(did) if self.pools else []
            token = await tasks.claim(
                did, decision.task_id, pool_ids=pool_ids, capabilities=agent.capabilities
            )
            self._tokens[(did, decision.task_id)] = token
            return token
        if isinstance(decision, ReportTask):
            tasks = _need(self.tasks, "a task board")
            token = self._token_for(did, decision.task_id, decision.token)
            done = await tasks.report(did, decision.task_id, decision.result, token)
            self._tokens.pop((did, decision.task_id), None)
            return done
        if isinstance(decision, FailTask):
            tasks = _need(self.tasks, "a task board")
            token = self._token_for(did, decision.task_id, None)
            failed = await tasks.fail_task(
                decision.task_id, decision.reason, agent_id=did, token=token
            )
            self._tokens.pop((did, decision.task_id), None)
            return failed
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
        if isinstance(decision, Vote) and self.votes_store is not None:
            return await self.votes_store.vote(did, decision.ballot_id, decision.choice)
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

    def forget(self, agent_id: str, task_id: str) -> None:
        """Drop a remembered claim (its lease expired or another agent took over)."""
        self._tokens.pop((agent_id, task_id), None)

    def _token_for(self, did: str, task_id: str, given: int | None) -> int:
        if given is not None:
            return given
        token = self._tokens.get((did, task_id))
        if token is None:
            raise PolicyViolation(f"{did} has no claim on task {task_id} through this executor")
        return token


def _action(decision: Decision) -> str:
    """The action a decision is, as scopes name it: its tag, ``invoke_tool:<tool>`` for tools."""
    tag = str(type(decision).__struct_config__.tag)
    return f"{tag}:{decision.tool}" if isinstance(decision, InvokeTool) else tag


def _need(part: T | None, what: str) -> T:
    if part is None:
        raise PolicyViolation(f"this executor has no {what} to act on")
    return part
