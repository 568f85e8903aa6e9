"""Keys that index records by a deadline, so "everything due by now" is one prefix range.

A key is ``<base><hex of the deadline's big-endian IEEE 754 double>/<id>``: for numbers >= 0 the
big-endian bytes sort like the numbers and hex keeps that order, so every key up to
``due_prefix(base, now)`` (in key order) is due. Negotiation sessions and ballots use it.
"""

from __future__ import annotations

import struct

__all__ = ["due_key", "due_prefix"]


def due_prefix(base: str, at: float) -> str:
    """The key prefix for deadline ``at`` (negative times sort as 0)."""
    return f"{base}{struct.pack('>d', max(float(at), 0.0)).hex()}/"


def due_key(base: str, at: float, item_id: str) -> str:
    """The index key of ``item_id`` due at ``at``."""
    return f"{due_prefix(base, at)}{item_id}"
