"""The executor applies coordination decisions through the protocols it is given."""

from __future__ import annotations

import pytest

from converge.coordination import NegotiationProtocol, NegotiationRefused, NegotiationState
from converge.core import AcceptProposal, Agent, Propose, RejectProposal
from converge.core.clock import ManualClock
from converge.errors import PolicyViolation, ValidationError
from converge.runtime import StandardExecutor
from converge.store import Store


async def test_negotiation_decisions_run_through_the_protocol(
    store: Store, clock: ManualClock
) -> None:
    protocol = NegotiationProtocol(store, clock=clock)
    executor = StandardExecutor(negotiation_protocol=protocol, clock=clock)
    buyer, seller = Agent(name="buyer"), Agent(name="seller")
    opened = await executor.execute(
        buyer, Propose(session_id="deal-1", terms={"price": 10}, parties=(seller.did,))
    )
    assert opened.parties == (buyer.did, seller.did)
    await executor.execute(seller, Propose(session_id="deal-1", terms={"price": 14}))
    with pytest.raises(NegotiationRefused):  # one's own counter-proposal
        await executor.execute(seller, AcceptProposal(session_id="deal-1"))
    agreed = await executor.execute(buyer, AcceptProposal(session_id="deal-1"))
    assert (agreed.state, agreed.agreed_terms) == (NegotiationState.AGREED, {"price": 14})
    await executor.execute(
        buyer, Propose(session_id="deal-2", terms={"price": 1}, parties=(seller.did,))
    )
    rejected = await executor.execute(seller, RejectProposal(session_id="deal-2", reason="too low"))
    assert rejected.state is NegotiationState.REJECTED


async def test_without_the_protocol_negotiation_decisions_are_refused(store: Store) -> None:
    executor = StandardExecutor()
    with pytest.raises(PolicyViolation, match="no coordination protocol"):
        await executor.execute(Agent(), Propose(session_id="s", terms={}, parties=("x",)))


async def test_vote_decisions_are_cast_on_the_votes_store(store: Store, clock: ManualClock) -> None:
    from converge.coordination import BallotRefused, Consensus
    from converge.core import Vote

    ballots = Consensus(store, clock=clock)
    a, b, c = Agent(), Agent(), Agent()
    ballot = await ballots.open(a.did, "ship?", ("yes", "no"), (a.did, b.did, c.did))
    executor = StandardExecutor(votes_store=ballots, clock=clock)
    await executor.execute(a, Vote(ballot_id=ballot.id, choice="yes"))
    with pytest.raises(BallotRefused):  # voting twice is refused by default
        await executor.execute(a, Vote(ballot_id=ballot.id, choice="no"))
    await executor.execute(b, Vote(ballot_id=ballot.id, choice="yes"))
    result = await ballots.result(ballot.id)
    assert (result.decided, result.winner) == (True, "yes")


async def test_with_delegation_every_decision_needs_authority(
    store: Store, clock: ManualClock
) -> None:
    from converge.coordination import DelegationProtocol, OutOfScope
    from converge.core import Delegate, RevokeDelegation, SendMessage
    from converge.network import LocalNetwork

    boss, helper = Agent(name="boss"), Agent(name="helper")
    net = LocalNetwork()
    from converge.network import Inbox

    net.register(boss.did, Inbox())
    delegation = DelegationProtocol(store, clock=clock, root_scopes={boss.did: ["send_message"]})
    executor = StandardExecutor(network=net, delegation_protocol=delegation, clock=clock)
    note = SendMessage(kind="note", recipient=boss.did)
    with pytest.raises(OutOfScope):  # no authority of its own
        await executor.execute(helper, note)
    grant = await executor.execute(boss, Delegate(to=helper.did, scope=("send_message",)))
    await executor.execute(helper, note)  # now it acts under the grant
    await executor.execute(boss, RevokeDelegation(delegation_id=grant.id))
    with pytest.raises(OutOfScope):  # and not after revocation
        await executor.execute(helper, note)


async def test_submit_bid_runs_through_the_auctions_bidding_protocol(
    store: Store, clock: ManualClock
) -> None:
    from converge.coordination import BiddingProtocol, Rejection
    from converge.core import Identity, SubmitBid
    from converge.protocol import Intent, Offer

    requester = Identity.generate()
    provider = Agent(name="provider", capabilities=["translate@2.1.0"])
    protocol = BiddingProtocol(store, requester, clock=clock)
    round_ = await protocol.announce(
        Intent(goal="translate", capability="translate>=2"), providers=[provider.did]
    )
    executor = StandardExecutor(bidding_protocols={round_.id: protocol}, clock=clock)
    offer = await executor.execute(
        provider, SubmitBid(auction_id=round_.id, amount=3.0, terms={"quality": 0.9, "note": "x"})
    )
    assert isinstance(offer, Offer)
    assert (offer.provider, offer.capability, offer.cost) == (provider.did, "translate@2.1.0", 3.0)
    assert (offer.quality, offer.terms) == (0.9, {"note": "x"})
    again = await executor.execute(provider, SubmitBid(auction_id=round_.id, amount=2.0))
    assert isinstance(again, Rejection) and again.reason == "duplicate"  # refused, not raised
    with pytest.raises(PolicyViolation, match="no bidding protocol runs auction 'other'"):
        await executor.execute(provider, SubmitBid(auction_id="other", amount=1.0))
    anywhere = StandardExecutor(bidding_protocols={"*": protocol}, clock=clock)
    with pytest.raises(ValidationError, match="no auction 'other'"):
        await anywhere.execute(provider, SubmitBid(auction_id="other", amount=1.0))
