"""The signed message envelope, and the guard against replays.

The guard refuses stale and replayed messages.
"""

from __future__ import annotations

import heapq
import os
import time
from typing import Any

import msgspec

from converge.core.clock import Clock, system_clock
from converge.core.ids import new_id
from converge.core.signing import Signed
from converge.errors import ReplayedMessage, StaleMessage, ValidationError

__all__ = ["Message", "ReplayGuard"]


def _nonce() -> str:
    return os.urandom(12).hex()


class Message(Signed, frozen=True, tag="message"):
    """A message from one agent to another agent or to a topic.

    Exactly one of ``recipient`` and ``topic`` is set (checked when built and when decoded).
    ``sign(identity)`` sets ``sender`` to the identity's did and signs every other field;
    ``verify()`` checks every field's type, then the signature. Signed protocol objects travel in
    ``payload`` sealed, so a forwarded object keeps its own signature.
    """

    __signers__ = (("signature", "sender"),)

    kind: str
    """What the message is (``"intent"``, ``"offer"``, ``"chat"``…); receivers dispatch on it."""
    payload: Any = None
    """The content: any MessagePack-encodable value (no NaN)."""
    recipient: str | None = None
    """The did of the one receiving agent, or None for a topic message."""
    topic: str | None = None
    """The topic to publish on, or None for a direct message."""
    sender: str = ""
    """The did of the sending agent; set by ``sign()``."""
    id: str = msgspec.field(default_factory=new_id)
    """Unique, time-ordered id."""
    trace_id: str | None = None
    """The trace this message belongs to; every event it causes carries the same id."""
    parent_id: str | None = None
    """The message or event this one answers."""
    created_at: float = msgspec.field(default_factory=time.time)
    """Seconds since the epoch when the sender made it; receivers reject stale ones."""
    nonce: str = msgspec.field(default_factory=_nonce)
    """Random, unique per message; receivers reject a (sender, nonce) seen before."""
    signature: bytes | None = None
    """Ed25519 signature by ``sender`` over the canonical bytes of every other field."""

    def __post_init__(self) -> None:
        if (self.recipient is None) == (self.topic is None):
            raise ValidationError(
                "a message has exactly one of `recipient` and `topic`",
                field="recipient" if self.recipient is not None else "topic",
            )
        if not self.kind:
            raise ValidationError("a message needs a non-empty `kind`", field="kind")

    def reply(self, kind: str, payload: Any = None) -> Message:
        """An unsigned message back to this one's sender, in the same trace."""
        return Message(
            kind=kind,
            payload=payload,
            recipient=self.sender,
            trace_id=self.trace_id,
            parent_id=self.id,
        )


class ReplayGuard:
    """Rejects messages that are stale or whose (sender, nonce) was already accepted.

    A message is accepted when its ``created_at`` is within ``window_s`` of now (either way),
    newer than the floors below, and its (sender, nonce) is not remembered. Its nonce is then
    remembered until its timestamp leaves the window.

    Memory is bounded whatever the senders do: at most ``max_entries`` nonces, and a sender is
    tracked only while one of its nonces is. When full, a nonce is forgotten, and a *floor*
    makes sure its message can never be replayed:

    - Fair share first: the sender holding the most nonces loses its oldest, and only that
      sender's own floor rises, to that message's timestamp. A sender's floor only ever holds
      its own timestamps, so it refuses nothing that sender sends later; only its own messages
      delivered after newer ones are refused.
    - Only when every sender holds a single nonce is the oldest of all forgotten with its
      sender, and the guard's shared ``floor`` rises to its timestamp. That message was never
      dated ahead of this clock: the shared floor never rises above the receiver's clock.
    - At most ``max_ahead`` nonces dated ahead of this clock are kept; another message dated
      ahead is refused (as stale) until some fall behind the clock. This is what keeps the
      shared floor behind the clock.

    What senders can and cannot make it do (on a clock that does not go backwards):

    - One sender never evicts a nonce of a sender holding fewer than it does, and then only
      raises that sender's own floor. It raises the shared floor only as any new sender can:
      with a message sent while it holds no nonce, into a guard full of senders holding one
      each, and only to a time behind the clock. So while fewer than ``max_entries`` senders
      are in the window, one sender cannot get a message of another refused — except one
      dated ahead, while it holds ``max_ahead`` such nonces itself.
    - Many senders (identities are cheap to make) can keep the guard full of one nonce each.
      The shared floor then follows the oldest nonce remembered: a sybil sending fresh
      messages at ``R`` per second holds it about ``max_entries / R`` seconds behind the clock,
      so an honest message delivered sooner than that after it was made is still accepted, a
      slower one is refused as stale (the replay window shrinks from ``window_s`` to about that,
      for as long as the flood lasts). At 10,000 messages a second — about as many signatures
      as one core verifies — and the default 100,000 nonces, that is about 10 s.
    - Nothing makes it accept a replay of a message it accepted, nor hold more than
      ``max_entries`` nonces and as many senders (the heaps that drop forgotten nonces lazily
      are rebuilt once more than half stale).

    Before the per-sender floors and ``max_ahead``, one fresh identity sending ``max_entries +
    1`` authentic messages dated just inside the future edge raised a single shared floor past
    the clock, and every honest sender was refused for about five minutes.

    Check the signature first (``verify()``, which also checks the types), then the guard. A
    guard has a length, so an empty one is falsy: the runtime, ``BiddingProtocol`` and
    ``DiscoveryService``, which make a default guard when given none, test for ``None`` (an
    injected guard is used even while empty).

    Args:
        window_s: accepted distance between a message's ``created_at`` and now, either way.
        max_entries: the most nonces remembered at once.
        clock: the time source (wall clock by default).
        max_ahead: the most nonces remembered of messages dated ahead of the clock (default:
            a tenth of ``max_entries``, at least 1; at most ``max_entries``).

    Raises:
        ValidationError: a window, size or ``max_ahead`` out of range.
    """

    def __init__(
        self,
        window_s: float = 300.0,
        max_entries: int = 100_000,
        clock: Clock = system_clock,
        *,
        max_ahead: int | None = None,
    ) -> None:
        if window_s <= 0 or max_entries <= 0:
            raise ValidationError("ReplayGuard needs a positive window_s and max_entries")
        ahead = max(1, max_entries // 10) if max_ahead is None else max_ahead
        if isinstance(ahead, bool) or not isinstance(ahead, int) or not 1 <= ahead <= max_entries:
            raise ValidationError(
                f"max_ahead must be an int from 1 to max_entries ({max_entries}), not {ahead!r}",
                field="max_ahead",
            )
        self.window_s = window_s
        self.max_entries = max_entries
        self.max_ahead = ahead
        self._clock = clock
        self._senders: dict[str, _Sender] = {}
        self._entries = 0
        # Every remembered nonce, oldest first; and those dated ahead of the clock when
        # accepted. Both drop forgotten nonces lazily (and are rebuilt once half stale).
        self._queue: list[tuple[float, str, str]] = []
        self._ahead: list[tuple[float, str, str]] = []
        self._ahead_count = 0
        # Senders by how many nonces they hold, for the fair-share eviction.
        self._by_count: dict[int, dict[str, None]] = {}
        self._most = 0
        self._floor = float("-inf")

    def __len__(self) -> int:
        return self._entries

    @property
    def floor(self) -> float:
        """The shared floor: a message no newer is refused as stale (``-inf`` until the guard
        has had to forget a sender; never above the clock when raised)."""
        return self._floor

    @property
    def senders(self) -> int:
        """How many senders the guard tracks (those with a nonce remembered)."""
        return len(self._senders)

    def check(self, message: Message) -> None:
        """Accept ``message`` once, or raise.

        Call after ``message.verify()``: only authentic messages with fields of the right types
        should take up memory.

        Raises:
            StaleMessage: ``created_at`` is outside the window, or not newer than a floor, or
                dated ahead while the guard holds ``max_ahead`` such nonces.
            ReplayedMessage: this sender's nonce was accepted before.
        """
        self.check_values(message.sender, message.nonce, message.created_at)

    def check_values(self, sender: str, nonce: str, created_at: float) -> None:
        """``check()`` for a message's three fields.

        Raises:
            ValidationError: a field of the wrong type (``field`` names it).
        """
        _typed(sender, nonce, created_at)
        now = self._clock.now()
        self._expire(now)
        if not (now - self.window_s <= created_at <= now + self.window_s):
            raise StaleMessage(
                f"message from {sender} was made at {created_at:.3f}, "
                f"{abs(now - created_at):.1f}s from now (window {self.window_s:g}s)",
                field="created_at",
            )
        if created_at <= self._floor:
            raise StaleMessage(
                f"message from {sender} at {created_at:.3f} is older than the replay guard "
                "remembers (it is full)",
                field="created_at",
            )
        record = self._senders.get(sender)
        if record is not None:
            if created_at <= record.floor:
                raise StaleMessage(
                    f"message from {sender} at {created_at:.3f} is older than the replay guard "
                    "remembers of that sender (it is full)",
                    field="created_at",
                )
            if nonce in record.nonces:
                raise ReplayedMessage(
                    f"nonce {nonce} from {sender} was already seen", field="nonce"
                )
        ahead = created_at > now
        if ahead and self._ahead_count >= self.max_ahead:
            raise StaleMessage(
                f"message from {sender} is dated {created_at - now:.1f}s ahead of this clock and "
                f"the replay guard already holds {self.max_ahead} such messages",
                field="created_at",
            )
        if record is None:
            record = self._senders[sender] = _Sender()
        record.nonces[nonce] = created_at
        heapq.heappush(record.order, (created_at, nonce))
        self._counted(sender, len(record.nonces) - 1, len(record.nonces))
        heapq.heappush(self._queue, (created_at, sender, nonce))
        self._entries += 1
        if ahead:
            heapq.heappush(self._ahead, (created_at, sender, nonce))
            self._ahead_count += 1
        if self._entries > self.max_entries:
            self._evict(now)

    # -- internals ---------------------------------------------------------------------------------

    def _live(self, at: float, sender: str, nonce: str) -> bool:
        record = self._senders.get(sender)
        return record is not None and record.nonces.get(nonce) == at

    def _counted(self, sender: str, old: int, new: int) -> None:
        """Move ``sender`` from the senders holding ``old`` nonces to those holding ``new``."""
        by_count = self._by_count
        if old:
            bucket = by_count[old]
            del bucket[sender]
            if not bucket:
                del by_count[old]
        if new:
            by_count.setdefault(new, {})[sender] = None
            self._most = max(self._most, new)
        while self._most and self._most not in by_count:
            self._most -= 1

    def _evict(self, now: float) -> None:
        """Forget one nonce so that the guard holds ``max_entries`` again."""
        if self._most > 1:
            # The sender holding the most nonces loses its oldest; only its own floor rises.
            victim = next(iter(self._by_count[self._most]))
            record = self._senders[victim]
            at, nonce = heapq.heappop(record.order)
            del record.nonces[nonce]
            record.floor = at  # its oldest: no newer than any nonce it still holds
            self._counted(victim, len(record.nonces) + 1, len(record.nonces))
            self._entries -= 1
            if at > now:
                self._ahead_count -= 1
            if len(self._queue) > 2 * self._entries + 1024:
                self._queue = [e for e in self._queue if self._live(*e)]
                heapq.heapify(self._queue)
            if len(self._ahead) > 2 * self._ahead_count + 1024:
                self._ahead = [e for e in self._ahead if self._live(*e)]
                heapq.heapify(self._ahead)
            return
        # Every sender holds one nonce. At most max_ahead of the max_entries + 1 are dated
        # ahead of the clock, so the oldest is not: the shared floor stays behind the clock.
        queue = self._queue
        while True:
            at, sender, nonce = heapq.heappop(queue)
            if self._live(at, sender, nonce):
                break
        del self._senders[sender]
        self._counted(sender, 1, 0)
        self._entries -= 1
        self._floor = max(self._floor, at)

    def _expire(self, now: float) -> None:
        # Those no longer ahead of the clock first: one that also left the window meanwhile
        # (the clock jumped) must still be counted out.
        ahead = self._ahead
        while ahead and ahead[0][0] <= now:
            if self._live(*heapq.heappop(ahead)):
                self._ahead_count -= 1
        horizon = now - self.window_s
        queue = self._queue
        while queue and queue[0][0] < horizon:
            at, sender, nonce = heapq.heappop(queue)
            record = self._senders.get(sender)
            if record is None or record.nonces.get(nonce) != at:
                continue  # forgotten before
            # Nonces leave the queue and their sender's heap in the same order: it is the
            # sender's oldest.
            heapq.heappop(record.order)
            del record.nonces[nonce]
            held = len(record.nonces)
            self._counted(sender, held + 1, held)
            self._entries -= 1
            if not held:  # its floor is no newer than this nonce: the window refuses older
                del self._senders[sender]


class _Sender:
    """What a ``ReplayGuard`` remembers of one sender."""

    __slots__ = ("floor", "nonces", "order")

    def __init__(self) -> None:
        self.floor = float("-inf")
        """The newest timestamp of a nonce forgotten early; anything no newer is refused."""
        self.nonces: dict[str, float] = {}
        """Remembered nonces and their messages' timestamps."""
        self.order: list[tuple[float, str]] = []
        """The same, as a heap, oldest first."""


def _typed(sender: object, nonce: object, created_at: object) -> None:
    """Refuse fields of the wrong type before they are compared or hashed."""
    if not isinstance(sender, str):
        raise ValidationError(f"a sender is a str, not {type(sender).__name__}", field="sender")
    if not isinstance(nonce, str):
        raise ValidationError(f"a nonce is a str, not {type(nonce).__name__}", field="nonce")
    if isinstance(created_at, bool) or not isinstance(created_at, (int, float)):
        raise ValidationError(
            f"`created_at` is a number, not {type(created_at).__name__}", field="created_at"
        )
