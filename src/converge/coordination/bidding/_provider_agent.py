"""``Provider``: a contract-net provider made of a price and a function.

A provider has what every agent has — its own identity, a name, capabilities — and two things
of its own: what it asks (``price``: a number, or a function of the ``Intent`` that returns a
number, or None to let that intent pass) and what it does (``work``: a function of the
intent's inputs that returns the output). Its ``decide()``:

- answers each ``intent`` message whose capability requirement it meets with a signed offer
  at its price (``offer_message``: an ``offer`` message to the requester, so it needs nothing
  of the requester's in its executor), with ``terms`` (quality, latency, reliability…);
- when it wins (a ``task_start`` message), runs ``work(inputs)`` — a plain function on a
  worker thread, an ``async def`` on the loop — and sends its signed ``TaskDone`` and the
  receipt it signs (``report_done``): ``completed`` with the output, or ``failed`` with
  ``"TypeName: message"`` when ``work`` raises or returns what cannot be encoded.

A message that does not verify (an intent not signed by its sender, a forged start) is passed
over: it is the sender's fault, and the runtime has already logged what it could not check.
What ``price`` raises, or a price that is not a number >= 0, is this agent's own failure: the
runtime records ``decide.failed`` and goes on.

One job at a time: ``work`` runs inside ``decide()``, so a provider answers the next intent once
its job is done (run more providers for more at once). It runs in any ``AgentRuntime`` — a
``Market``'s, ``converge agents run``'s (``ref`` naming an instance), or beside a graph whose
``tender`` nodes put work out (``converge run --agents``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from converge.coordination.bidding._provider import (
    INTENT_KIND,
    TASK_START_KIND,
    intent_of,
    offer_message,
    report_done,
    task_start_of,
)
from converge.core.agent import Agent
from converge.core.clock import Clock, system_clock
from converge.core.decisions import Decision
from converge.core.identity import Identity
from converge.core.ids import new_id
from converge.core.message import Message
from converge.core.task import Task
from converge.core.user_code import call_in_thread, is_interruption
from converge.errors import ConvergeError, ValidationError
from converge.protocol.objects import Intent, TaskStart

__all__ = ["PriceRule", "Provider", "Work"]

PriceRule = float | Callable[[Intent], "float | None"]
"""What a provider asks: a number, or a function of the intent (None: no offer)."""
Work = Callable[[dict[str, Any]], Any]
"""What a provider does: the intent's inputs in, the output out (sync or async)."""


class Provider(Agent):
    """A contract-net provider: bids ``price`` on the intents it can do, runs ``work`` when it
    wins, and reports with a receipt it signs.

    Args:
        name: its name (in discovery, the trace, a ``Contract``).
        capabilities: what it has: ``"translate@1.0"`` or a list of them (a requirement such
            as ``"translate>=1.0"`` is a ``CapabilityError``).
        price: what it asks: a number >= 0, or a function of the ``Intent`` returning one, or
            None to let that intent pass.
        work: the job: a function of the intent's inputs (a dict) returning the output; a
            raise fails the job.
        terms: more of its offer: ``quality``, ``latency_s``, ``reliability`` (0 to 1 for
            quality and reliability), ``resource_limits``, ``currency``; other keys go to
            ``Offer.terms``.
        identity: its key pair (a new one by default).
        clock: the time its offers and reports carry.
        id_factory: makes offer ids.

    Raises:
        ValidationError: a bad argument (``field`` names it).
    """

    def __init__(
        self,
        name: str,
        capabilities: str | Iterable[str],
        *,
        price: PriceRule,
        work: Work,
        terms: Mapping[str, Any] | None = None,
        identity: Identity | None = None,
        clock: Clock = system_clock,
        id_factory: Callable[[], str] = new_id,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValidationError(f"a provider needs a name, not {name!r}", field="name")
        caps = [capabilities] if isinstance(capabilities, str) else list(capabilities)
        if not caps:
            raise ValidationError(
                f"provider {name!r} needs a capability, such as 'translate@1.0'",
                field="capabilities",
            )
        super().__init__(identity, name=name, capabilities=caps)
        if not callable(price):
            _check_price(price, name)
        if not callable(work):
            raise ValidationError(
                f"provider {name!r}: work is a function of the inputs, not {type(work).__name__}",
                field="work",
            )
        if terms is not None and not isinstance(terms, Mapping):
            raise ValidationError(
                f"provider {name!r}: terms is a mapping, not {type(terms).__name__}",
                field="terms",
            )
        self.price = price
        self.work = work
        self.terms = dict(terms or {})
        self.clock = clock
        self.id_factory = id_factory
        self.jobs = 0
        """How many jobs it has won and done (or failed)."""
        self._async = inspect.iscoroutinefunction(work) or inspect.iscoroutinefunction(
            getattr(work, "__call__", None)  # noqa: B004 - an object whose __call__ is async
        )

    async def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        out: list[Decision] = []
        for message in messages:
            if message.kind == INTENT_KIND:
                out += self._bid(message)
            elif message.kind == TASK_START_KIND:
                out += await self._do(message)
        return out

    def _bid(self, message: Message) -> list[Decision]:
        try:
            intent = intent_of(message)
        except ConvergeError:  # not a verified intent from its issuer: the sender's fault
            return []
        if not self.capabilities.satisfies(intent.capability):
            return []
        asked = self.price(intent) if callable(self.price) else self.price
        if asked is None:
            return []
        _check_price(asked, self.name)
        return [
            offer_message(
                self.identity,
                intent,
                price=float(asked),
                terms=self.terms,
                capabilities=self.capabilities,
                offer_id=self.id_factory(),
                now=self.clock.now(),
            )
        ]

    async def _do(self, message: Message) -> list[Decision]:
        try:
            start = task_start_of(message)
        except ConvergeError:  # not a verified award from its requester
            return []
        if start.executor != self.did:
            return []
        self.jobs += 1
        began = self.clock.now()
        try:
            output = await self._run(start)
        except BaseException as exc:  # the job's failure is reported, not the runtime's
            if is_interruption(exc):
                raise
            return self._failed(start, began, f"{type(exc).__name__}: {exc}")
        try:
            return [
                *report_done(
                    self.identity, start, output=output, now=self.clock.now(), started_at=began
                )
            ]
        except ConvergeError as exc:  # an output that cannot be encoded (or signed)
            return self._failed(start, began, f"the output cannot be sent: {exc}")

    async def _run(self, start: TaskStart) -> Any:
        inputs = dict(start.inputs)
        if self._async:
            return await self.work(inputs)
        return await call_in_thread(self.work, inputs)

    def _failed(self, start: TaskStart, began: float, error: str) -> list[Decision]:
        return [
            *report_done(
                self.identity,
                start,
                now=self.clock.now(),
                status="failed",
                error=error,
                started_at=began,
            )
        ]


def _check_price(price: object, name: str) -> None:
    if (
        isinstance(price, bool)
        or not isinstance(price, int | float)
        or not math.isfinite(price)
        or price < 0
    ):
        raise ValidationError(
            f"provider {name!r}: a price is a number >= 0 (or a function returning one), "
            f"not {price!r}",
            field="price",
        )
