"""Keys that index records by deadline, as one prefix range.

So "everything due by now" is one prefix range.

A key is ``<base><hex of the deadline's big-endian IEEE 754 double>/<id>``: for numbers >= 0 the
big-endian bytes sort like the numbers and hex keeps that order, so every key up to
``due_prefix(base, now)`` (in key order) is due. Negotiation sessions and ballots use it.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator

from converge.store.base import Store

__all__ = ["due_entries", "due_key", "due_prefix"]

_PAGE = 256


def due_prefix(base: str, at: float) -> str:
    """The key prefix for deadline ``at`` (negative times sort as 0)."""
    return f"{base}{struct.pack('>d', max(float(at), 0.0)).hex()}/"


def due_key(base: str, at: float, item_id: str) -> str:
    """The index key of ``item_id`` due at ``at``."""
    return f"{due_prefix(base, at)}{item_id}"


async def due_entries(store: Store, base: str, now: float) -> AsyncIterator[tuple[str, str]]:
    """Yield ``(index key, item id)`` for every item due at or before ``now``, earliest first.

    The caller settles each item (and deletes its key). A key seen again means an item that
    could not be settled now (a lost race, repeatedly): the scan stops rather than spin.
    """
    horizon = due_prefix(base, now)
    seen: set[str] = set()
    while True:
        page = await store.list(base, limit=_PAGE)
        due = [e for e in page if e.key[: len(horizon)] <= horizon]
        fresh = [e for e in due if e.key not in seen]
        for entry in fresh:
            seen.add(entry.key)
            yield entry.key, entry.value.decode()
        # A full page of due keys: more may follow.
        if len(due) < len(page) or len(page) < _PAGE or not fresh:
            return
