"""The SQLite schema, its version table and its forward migrations.

Tables: ``schema_version(version, applied_at, description)``, ``kv(key, value, version) WITHOUT
ROWID``, ``events(seq INTEGER PRIMARY KEY, trace_id, kind, body)`` with indexes ``(trace_id,
seq)`` and ``(kind, seq)`` (what ``read()`` filters on), and from version 2 ``tasks`` (see
``MIGRATIONS``). An event's ``body`` is its MessagePack without its seq. ``MIGRATIONS`` is a list
of (version, description, statements); ``migrate`` applies the missing ones in one write
transaction, re-reading the version under the lock, so two processes opening a new file migrate
it once. A version above ``SCHEMA_VERSION`` is ``SchemaVersionError``, the file left untouched.
"""

from __future__ import annotations

import sqlite3
import time

from converge.errors import NotAStore, SchemaVersionError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "check_store", "migrate", "read_version"]

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "key-value map and event log",
        [
            """CREATE TABLE IF NOT EXISTS schema_version (
                version INTEGER PRIMARY KEY,
                applied_at REAL NOT NULL,
                description TEXT NOT NULL
            )""",
            """CREATE TABLE kv (
                key TEXT PRIMARY KEY,
                value BLOB NOT NULL,
                version INTEGER NOT NULL
            ) WITHOUT ROWID""",
            # seq is the rowid: strictly increasing; events are never deleted, so never reused.
            # body is the MessagePack of the event without its seq; trace_id and kind are copied
            # out of it for the indexes that read() uses.
            """CREATE TABLE events (
                seq INTEGER PRIMARY KEY,
                trace_id TEXT NOT NULL,
                kind TEXT NOT NULL,
                body BLOB NOT NULL
            )""",
            "CREATE INDEX events_trace ON events (trace_id, seq)",
            "CREATE INDEX events_kind ON events (kind, seq)",
        ],
    ),
    (
        2,
        "task board",
        [
            # body is the MessagePack of the whole task; the other columns are copied out of it
            # for the compare-and-set of updates (state, attempts) and for the indexes.
            """CREATE TABLE tasks (
                id TEXT PRIMARY KEY,
                state TEXT NOT NULL,
                attempts INTEGER NOT NULL,
                pool_key TEXT NOT NULL,
                index_cap TEXT NOT NULL,
                priority INTEGER NOT NULL,
                lease_expires_at REAL,
                body BLOB NOT NULL
            ) WITHOUT ROWID""",
            """CREATE INDEX tasks_pending ON tasks (pool_key, index_cap, priority DESC, id)
                WHERE state = 'pending'""",
            "CREATE INDEX tasks_pending_all ON tasks (priority DESC, id) WHERE state = 'pending'",
            """CREATE INDEX tasks_leases ON tasks (lease_expires_at, id)
                WHERE state IN ('claimed', 'running')""",
        ],
    ),
]
"""Every migration in order: (version, description, statements)."""

SCHEMA_VERSION = MIGRATIONS[-1][0]
"""The newest schema version this converge knows."""


def read_version(conn: sqlite3.Connection) -> int:
    """The schema version of an open database (0 for a new one). Reads only."""
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if row is None:
        return 0
    (version,) = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(version)


def check_version(conn: sqlite3.Connection, location: str) -> int:
    """Refuse a database from a newer converge before anything is written to it."""
    found = read_version(conn)
    if found > SCHEMA_VERSION:
        raise SchemaVersionError(location, found, SCHEMA_VERSION)
    return found


_VERSION_COLUMNS = {"version", "applied_at", "description"}


def check_store(conn: sqlite3.Connection, location: str) -> int:
    """The schema version of an existing converge store, read without writing anything.

    Raises:
        NotAStore: the database has no ``schema_version`` table of converge's, or an empty one
            (a migration writes its row with its tables, in one transaction).
        SchemaVersionError: the store is from a newer converge.
        sqlite3.DatabaseError: the file is not a SQLite database (for the caller to translate).
    """
    columns = {row[1] for row in conn.execute("PRAGMA table_info(schema_version)")}
    if not columns:
        tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()
        what = "an empty SQLite database" if not tables[0] else "a SQLite database of other tables"
        raise NotAStore(location, f"{what}, without converge's schema_version table")
    if not _VERSION_COLUMNS <= columns:
        raise NotAStore(location, "its schema_version table is not converge's")
    found = read_version(conn)
    if found == 0:
        raise NotAStore(location, "its schema_version table is empty")
    return check_version(conn, location)


def migrate(conn: sqlite3.Connection, location: str) -> int:
    """Apply every missing migration in one write transaction; returns the version reached.

    Another process may be migrating at the same moment: the version is read again under the
    write lock, so each migration is applied exactly once.
    """
    if check_version(conn, location) == SCHEMA_VERSION:
        return SCHEMA_VERSION
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = check_version(conn, location)
        for version, description, statements in MIGRATIONS:
            if version <= current:
                continue
            for sql in statements:
                conn.execute(sql)
            conn.execute(
                "INSERT INTO schema_version (version, applied_at, description) VALUES (?, ?, ?)",
                (version, time.time(), description),
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION
