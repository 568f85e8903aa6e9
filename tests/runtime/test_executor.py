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


async def test_seed_001s_plain_votes_store_is_appended_to_one_vote_per_agent(
    clock: ManualClock,
) -> None:
    """Seed 001's form: ``votes_store`` maps a vote id to the (agent, option) pairs cast."""
    from collections import defaultdict

    from converge.coordination import BallotRefused, majority, plurality
    from converge.core import Vote

    votes: dict[str, list[tuple[str, str]]] = {}
    executor = StandardExecutor(votes_store=votes, clock=clock)
    assert executor.votes_store is votes
    a, b, c = Agent(), Agent(), Agent()
    await executor.execute(a, Vote(ballot_id="ship", choice="yes"))
    await executor.execute(b, Vote(ballot_id="ship", choice="no"))
    cast = await executor.execute(c, Vote(ballot_id="ship", choice="yes"))
    assert votes == {"ship": [(a.did, "yes"), (b.did, "no"), (c.did, "yes")]}
    assert cast is votes["ship"]
    with pytest.raises(BallotRefused) as refused:  # one vote per agent, as Consensus refuses
        await executor.execute(a, Vote(ballot_id="ship", choice="no"))
    assert (refused.value.reason, refused.value.agent_id) == ("already_voted", a.did)
    assert votes["ship"][0] == (a.did, "yes") and len(votes["ship"]) == 3
    assert majority(dict(votes["ship"])) == plurality(dict(votes["ship"])) == "yes"
    await executor.execute(a, Vote(ballot_id="lunch", choice="soup"))  # another vote id
    assert votes["lunch"] == [(a.did, "soup")]

    seeded: defaultdict[str, list[tuple[str, str]]] = defaultdict(list)
    seeded["ship"].append(("did:key:earlier", "no"))  # votes cast before are kept
    await StandardExecutor(votes_store=seeded).execute(a, Vote(ballot_id="ship", choice="yes"))
    assert seeded["ship"] == [("did:key:earlier", "no"), (a.did, "yes")]


@pytest.mark.parametrize(
    ("votes_store", "field"),
    [
        ([], "votes_store"),
        ("ballots", "votes_store"),
        (frozenset(), "votes_store"),
        ({"ship": "yes"}, "votes_store['ship']"),
        ({"ship": [("did:a",)]}, "votes_store['ship']"),
        ({"ship": [("did:a", 1)]}, "votes_store['ship']"),
        ({1: []}, "votes_store[1]"),
    ],
)
def test_a_votes_store_of_another_form_is_refused_naming_consensus(
    votes_store: object, field: str
) -> None:
    with pytest.raises(ValidationError, match="Consensus") as refused:
        StandardExecutor(votes_store=votes_store)  # type: ignore[arg-type]
    assert refused.value.field == field


def test_a_read_only_mapping_is_not_a_votes_store() -> None:
    from types import MappingProxyType

    with pytest.raises(ValidationError, match="Consensus") as refused:
        StandardExecutor(votes_store=MappingProxyType({}))  # type: ignore[arg-type]
    assert refused.value.field == "votes_store"


def _wrong_executor_arguments(store: Store) -> list[tuple[str, object]]:
    from converge.coordination import Consensus, TaskManager
    from converge.network import LocalNetwork

    return [
        ("network", "local"),
        ("network", TaskManager(store)),
        ("tasks", store),
        ("pools", TaskManager(store)),
        ("tools", {"search": len}),
        ("negotiation_protocol", Consensus(store)),
        ("delegation_protocol", object()),
        ("bidding_protocols", [LocalNetwork()]),
        ("clock", 1.0),
        ("clock", None),
    ]


async def test_wrong_arguments_are_refused_at_construction_naming_them(store: Store) -> None:
    for name, value in _wrong_executor_arguments(store):
        with pytest.raises(ValidationError) as refused:
            StandardExecutor(**{name: value})  # type: ignore[arg-type]
        assert refused.value.field == name, (name, value)
        assert name in str(refused.value) and type(value).__name__ in str(refused.value)


async def test_each_bidding_protocol_is_checked_at_construction(store: Store) -> None:
    from converge.coordination import BiddingProtocol, Consensus
    from converge.core import Identity

    good = BiddingProtocol(store, Identity.generate())
    StandardExecutor(bidding_protocols={"*": good, "a-1": good})
    with pytest.raises(ValidationError) as refused:
        StandardExecutor(bidding_protocols={"*": good, "a-1": Consensus(store)})  # type: ignore[dict-item]
    assert refused.value.field == "bidding_protocols['a-1']"
    with pytest.raises(ValidationError) as refused:
        StandardExecutor(bidding_protocols={"*": None})  # type: ignore[dict-item]
    assert refused.value.field == "bidding_protocols['*']"
