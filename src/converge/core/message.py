"""The signed message envelope agents exchange, and the guard against stale and replayed ones."""

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

    Exactly one of ``recipient`` and ``topic`` is set. ``sign(identity)`` sets ``sender`` to the
    identity's did and signs every other field; ``verify()`` checks the signature.
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

    Memory is bounded: a nonce is kept only while its message is inside the time window, and at
    most ``max_entries`` at once. When full, the oldest entry is forgotten and the guard raises its
    floor to that entry's timestamp: anything no newer than the floor is then rejected as stale,
    so forgetting a nonce never lets its message be replayed.

    Args:
        window_s: accepted distance between a message's ``created_at`` and now, either way.
        max_entries: the most nonces remembered at once.
        clock: the time source (wall clock by default).
    """

    def __init__(
        self, window_s: float = 300.0, max_entries: int = 100_000, clock: Clock = system_clock
    ) -> None:
        if window_s <= 0 or max_entries <= 0:
            raise ValidationError("ReplayGuard needs a positive window_s and max_entries")
        self.window_s = window_s
        self.max_entries = max_entries
        self._clock = clock
        self._seen: set[tuple[str, str]] = set()
        self._expiry: list[tuple[float, str, str]] = []
        self._floor = float("-inf")

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, message: Message) -> None:
        """Accept ``message`` once, or raise.

        Call after ``message.verify()``: only authentic messages should take up memory.

        Raises:
            StaleMessage: ``created_at`` is outside the window (or older than the guard remembers).
            ReplayedMessage: this sender's nonce was accepted before.
        """
        self.check_values(message.sender, message.nonce, message.created_at)

    def check_values(self, sender: str, nonce: str, created_at: float) -> None:
        """``check()`` for a message's three fields."""
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
        key = (sender, nonce)
        if key in self._seen:
            raise ReplayedMessage(f"nonce {nonce} from {sender} was already seen", field="nonce")
        self._seen.add(key)
        heapq.heappush(self._expiry, (created_at, sender, nonce))
        if len(self._seen) > self.max_entries:
            at, s, n = heapq.heappop(self._expiry)
            self._seen.discard((s, n))
            self._floor = max(self._floor, at)

    def _expire(self, now: float) -> None:
        horizon = now - self.window_s
        expiry = self._expiry
        while expiry and expiry[0][0] < horizon:
            _, s, n = heapq.heappop(expiry)
            self._seen.discard((s, n))
