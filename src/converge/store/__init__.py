"""Stores: one async ``Store`` protocol and its backends.

The protocol: a key-value map, an event log, units of work.

``MemoryStore`` keeps everything in memory; ``SQLiteStore`` is the embedded default, one file on
disk. Every backend passes the same conformance suite.
"""

from __future__ import annotations

from converge.store.base import Entry, Store, TaskWrite, Transaction
from converge.store.memory import MemoryStore
from converge.store.sqlite import SQLiteStore

__all__ = ["Entry", "MemoryStore", "SQLiteStore", "Store", "TaskWrite", "Transaction"]
