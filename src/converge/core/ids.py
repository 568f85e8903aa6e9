"""Sortable, cheap ids.

An id is 128 bits: 48 bits of milliseconds since the epoch, then 80 bits that are random at the
start of each millisecond and count up within it, so ids from one factory sort in creation order.
They are written as 26 characters of Crockford base32 (``0-9A-Z`` without ``I L O U``), whose
ASCII order is the numeric order. Generation costs about half a microsecond: no ``uuid4()``, no
syscall per id.

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

__all__ = ["IdFactory", "id_timestamp", "is_id", "new_id"]

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

    __slots__ = ("_head", "_last_ms", "_last_rand", "_prefix", "_rng", "_time_ms")

    def __init__(
        self,
        time_ms: Callable[[], int] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._time_ms = time_ms or _wall_ms
        self._rng = rng or random.Random()
        self._last_ms = -1
        self._last_rand = 0
        self._prefix = ""
        self._head = ""  # the id without its last two characters, for the current rand >> 10

    def __call__(self) -> str:
        ms = self._time_ms()
        if ms <= self._last_ms:
            # Same (or an earlier) millisecond: count up so ids stay strictly increasing.
            rand = self._last_rand + 1
            if rand > _RAND_MASK:
                self._advance(self._last_ms + 1)
                rand = self._rng.getrandbits(79)
                self._encode_head(rand)
            elif not rand & 1023:
                self._encode_head(rand)  # a carry out of the last 10 bits
        else:
            self._advance(ms)
            # 79 bits leave headroom so the counter cannot overflow within one millisecond.
            rand = self._rng.getrandbits(79)
            self._encode_head(rand)
        self._last_rand = rand
        # Counting up usually changes only the last 10 bits: two characters, from the table.
        return self._head + _PAIRS[rand & 1023]

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
        t = _PAIRS
        self._prefix = (
            t[(ms >> 40) & 1023]
            + t[(ms >> 30) & 1023]
            + t[(ms >> 20) & 1023]
            + t[(ms >> 10) & 1023]
            + t[ms & 1023]
        )


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


new_id: Callable[[], str] = IdFactory()
"""The process-wide default id factory."""


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
