"""Sortable, cheap ids.

An id is 128 bits: 48 bits of milliseconds since the epoch, then 80 bits that are random at the
start of each millisecond and count up within it, so ids from one factory sort in creation order.
They are written as 26 characters of Crockford base32 (``0-9A-Z`` without ``I L O U``), whose
ASCII order is the numeric order. Generation costs about a quarter of a microsecond: no
``uuid4()``, no syscall per id, and within one millisecond only the last two characters are
looked up (the clock is ``time.time_ns`` itself, and ``new_id`` the factory's bound method).

A factory is monotonic even within one millisecond: the random start uses 79 bits, so counting
up cannot overflow inside a millisecond (were it to, the factory moves on to the next one).
Encoding is 13 lookups in a table of the 1,024 two-character strings (``base64.b32encode`` is
pure Python and cost 4 µs per id), and the encoding of all but the last two characters is kept
while the counter changes only its low 10 bits.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable

from converge.core.clip import clip
from converge.errors import ValidationError

__all__ = ["IdFactory", "id_timestamp", "is_id", "new_id", "new_ids"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_VALUE = {c: i for i, c in enumerate(_CROCKFORD)}
# Every 10-bit value as two base32 characters: an id is 13 table lookups.
_PAIRS = tuple(a + b for a in _CROCKFORD for b in _CROCKFORD)
_ID_RE = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")
_RAND_MASK = (1 << 80) - 1


class IdFactory:
    """Makes monotonic, time-ordered 26-character ids (the ULID layout).

    Args:
        time_ms: the millisecond clock (injected for tests); ``time.time_ns() // 1e6`` by default.
        rng: the source of the 80 low bits; a ``random.Random`` seeded from the OS by default.
    """

    __slots__ = ("_clock_ns", "_head", "_last_ms", "_last_rand", "_next_ns", "_prefix", "_rng")

    def __init__(
        self,
        time_ms: Callable[[], int] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        # The clock is read in nanoseconds, so the default one is ``time.time_ns`` itself: no
        # Python call between the factory and the clock.
        self._clock_ns: Callable[[], int] = (
            time.time_ns if time_ms is None else (lambda: time_ms() * 1_000_000)
        )
        self._rng = rng or random.Random()
        self._last_ms = -1
        self._next_ns = 0  # the first nanosecond after ``_last_ms``
        self._last_rand = 0
        self._prefix = ""
        self._head = ""  # the id without its last two characters, for the current rand >> 10

    def __call__(self) -> str:
        now = self._clock_ns()
        if now < self._next_ns:
            # The last id's millisecond (or an earlier one): count up so ids stay strictly
            # increasing. Usually only the last 10 bits change: two characters, from the table.
            rand = self._last_rand + 1
            if rand & 1023:
                self._last_rand = rand
                return self._head + _PAIRS[rand & 1023]
            if rand > _RAND_MASK:
                self._advance(self._last_ms + 1)
                rand = self._rng.getrandbits(79)
            self._encode_head(rand)  # a carry out of the last 10 bits
        else:
            self._advance(now // 1_000_000)
            # 79 bits leave headroom so the counter cannot overflow within one millisecond.
            rand = self._rng.getrandbits(79)
            self._encode_head(rand)
        self._last_rand = rand
        return self._head + _PAIRS[rand & 1023]

    def take(self, n: int) -> list[str]:
        """``n`` ids, as ``n`` calls would make them but for a fraction of the cost: after the
        first, each is the next count of the same millisecond (a batch is made at one time).

        Raises:
            ValidationError: ``n`` is not an int >= 0.
        """
        if type(n) is not int or n < 0:
            raise ValidationError(f"n must be an int >= 0, not {n!r}", field="n")
        out: list[str] = []
        pairs = _PAIRS
        while len(out) < n:
            out.append(self())
            rand = self._last_rand
            low = rand & 1023
            more = min(n - len(out), 1023 - low)  # counts left before the head changes
            if more:
                head = self._head
                out += [head + pairs[i] for i in range(low + 1, low + 1 + more)]
                self._last_rand = rand + more
        return out

    def _encode_head(self, rand: int) -> None:
        t = _PAIRS
        self._head = (
            self._prefix
            + t[rand >> 70]
            + t[(rand >> 60) & 1023]
            + t[(rand >> 50) & 1023]
            + t[(rand >> 40) & 1023]
            + t[(rand >> 30) & 1023]
            + t[(rand >> 20) & 1023]
            + t[(rand >> 10) & 1023]
        )

    def _advance(self, ms: int) -> None:
        self._last_ms = ms
        self._next_ns = (ms + 1) * 1_000_000
        t = _PAIRS
        self._prefix = (
            t[(ms >> 40) & 1023]
            + t[(ms >> 30) & 1023]
            + t[(ms >> 20) & 1023]
            + t[(ms >> 10) & 1023]
            + t[ms & 1023]
        )


_default = IdFactory()
new_id: Callable[[], str] = _default.__call__
"""The process-wide default id factory (its bound ``__call__``: one call less per id)."""
new_ids: Callable[[int], list[str]] = _default.take
"""``n`` ids of the default factory at once (``IdFactory.take``), for a batch."""


def is_id(value: str) -> bool:
    """Whether ``value`` has the shape of a converge id."""
    return bool(_ID_RE.match(value))


def id_timestamp(value: str) -> float:
    """The creation time (seconds since the epoch) encoded in an id."""
    if not is_id(value):
        raise ValidationError(f"not a converge id: {clip(value)!r}", field="id")
    ms = 0
    for ch in value[:10]:
        ms = (ms << 5) | _VALUE[ch]
    return ms / 1000.0
