"""Contract-net and auctions: ``BiddingProtocol`` and its rounds.

``BiddingProtocol`` runs a requester's rounds end to end.

A round (seed 003): the requester's signed ``Intent`` goes as a signed message to the providers
that discovery finds and the pool admits; they answer from their own runtimes with signed
``Offer``s (a ``SubmitBid`` decision, or an ``offer`` message) within the bid window; each
offer's signature is verified on arrival and the offer checked; at close the named strategy
picks the winner, who gets a signed ``TaskStart``; its ``TaskProgress`` and ``TaskDone``
follow, then a ``Receipt`` it signs, which the requester checks and countersigns; the winner's
trust is updated from the outcome. One trace id (the intent's) links it all.

The package, one concept per module:

- ``_round``: the round's state machine, pure — the ``Auction`` and the ``ContractRound``
  holding it, their transition tables, the checks on offers and on the winner's reports, each
  change as a step, and the events (their data are listed there);
- ``_award``: award selection, pure — the strategies, scores, tie-breaks and prices;
- ``_provider``: the provider's side, pure — reading the requester's messages, turning a
  ``SubmitBid`` into an ``Offer``, signing the reports;
- ``_requester``: ``BiddingProtocol``, the requester's side over the store and the network.

``converge.coordination.bidding`` is a public path (named by the seeds): its names are
re-exported here.
"""

from __future__ import annotations

from converge.coordination.bidding._award import CRITERIA, Award, Strategy
from converge.coordination.bidding._provider import (
    INTENT_KIND,
    OFFER_KIND,
    RECEIPT_KIND,
    TASK_DONE_KIND,
    TASK_PROGRESS_KIND,
    TASK_START_KIND,
    intent_of,
    report_done,
    report_progress,
    task_start_of,
)
from converge.coordination.bidding._requester import BiddingProtocol, OutputCheck
from converge.coordination.bidding._round import (
    Auction,
    ContractRound,
    ProgressNote,
    Rejection,
    RejectReason,
    RoundRefusal,
    RoundStage,
)
from converge.errors import AuctionClosed, BidWindowOpen

__all__ = [
    "CRITERIA",
    "INTENT_KIND",
    "OFFER_KIND",
    "RECEIPT_KIND",
    "TASK_DONE_KIND",
    "TASK_PROGRESS_KIND",
    "TASK_START_KIND",
    "Auction",
    "AuctionClosed",
    "Award",
    "BidWindowOpen",
    "BiddingProtocol",
    "ContractRound",
    "OutputCheck",
    "ProgressNote",
    "RejectReason",
    "Rejection",
    "RoundRefusal",
    "RoundStage",
    "Strategy",
    "intent_of",
    "report_done",
    "report_progress",
    "task_start_of",
]
