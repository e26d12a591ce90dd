"""The embedded SQLite backend's schema: its tables, version and the statements shared across calls.

Tables (key columns first); every table carries the namespace ``ns`` in its key, so namespaces
sharing a file see nothing of each other::

    entities (ns, kind, id | state, attempt, pilot, created, updated, times JSON, detail JSON, data JSON)
    queue    (ns, qname, pos | cu_id)            qname '' is the shared queue; claim order = pos
    claims   (ns, pilot, pos | cu_id)            in-progress lists, claim order = pos
    live     (ns, pilot | expires_at)            live set + heartbeat (alive while expires_at > now)
    events   (seq AUTOINCREMENT | ns, entity, id, from_state, to_state, time, pilot, attempt, detail JSON)
    unbound  (ns, cu_id | binder)               CUs recorded but not yet bound; rowid = creation order
    leases   (ns, binder | expires_at)          binders' leases on their unbound CUs

The file is in WAL mode (readers never block the writer); :data:`SCHEMA_VERSION` is kept in
``PRAGMA user_version``; a version 1 file gains the tables of version 2 (``unbound``, ``leases``) when
it is opened, and a file of any other version is refused.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pilotdata.errors import CoordinationError

__all__ = [
    "DDL", "EVENTS_INSERT", "EVENT_INSERT", "IDS", "MIN_SQLITE", "MOVES", "MOVES_PATCHING_DATA",
    "MOVES_WITH_DATA", "SCHEMA_VERSION", "check_library", "create_or_check",
]

SCHEMA_VERSION = 2
"""Stored in ``PRAGMA user_version``; version 1 is upgraded in place, any other version is refused."""

DDL = """
CREATE TABLE IF NOT EXISTS entities (
    ns TEXT NOT NULL, kind TEXT NOT NULL, id TEXT NOT NULL,
    state TEXT NOT NULL, attempt INTEGER NOT NULL, pilot TEXT,
    created REAL NOT NULL, updated REAL NOT NULL,
    times TEXT NOT NULL, detail TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (ns, kind, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queue (
    ns TEXT NOT NULL, qname TEXT NOT NULL, pos INTEGER NOT NULL, cu_id TEXT NOT NULL,
    PRIMARY KEY (ns, qname, pos)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS queue_cu ON queue (ns, cu_id);
CREATE TABLE IF NOT EXISTS claims (
    ns TEXT NOT NULL, pilot TEXT NOT NULL, pos INTEGER NOT NULL, cu_id TEXT NOT NULL,
    PRIMARY KEY (ns, pilot, pos)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS live (
    ns TEXT NOT NULL, pilot TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (ns, pilot)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, ns TEXT NOT NULL, entity TEXT NOT NULL, id TEXT NOT NULL,
    from_state TEXT, to_state TEXT, time REAL NOT NULL, pilot TEXT, attempt INTEGER NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ns ON events (ns, seq);
""" + """
CREATE TABLE IF NOT EXISTS unbound (
    ns TEXT NOT NULL, cu_id TEXT NOT NULL, binder TEXT NOT NULL,
    PRIMARY KEY (ns, cu_id)
);
CREATE INDEX IF NOT EXISTS unbound_binder ON unbound (ns, binder);
CREATE TABLE IF NOT EXISTS leases (
    ns TEXT NOT NULL, binder TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (ns, binder)
) WITHOUT ROWID;
"""
"""The tables and indexes (idempotent)."""

EVENT_INSERT = (
    "INSERT INTO events (ns, entity, id, from_state, to_state, time, pilot, attempt, detail)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
"""Appends one event (namespace first, then the :class:`~pilotdata.coordination.base.Event` fields)."""


def _at(k: int) -> str:
    """Field ``k`` of the current row of ``json_each`` over an array of arrays."""
    return f"json_extract(value, '$[{k}]')"


IDS = "(SELECT value FROM json_each(?))"
"""An ``IN`` operand: the strings of one JSON array parameter.

The batch statements below take a whole batch as one JSON text and read it with ``json_each``: one
statement step for any number of rows. Python's :mod:`sqlite3` gives up the interpreter lock at every
step (every row of an ``executemany``, every row fetched), and in a busy process each step waits to win
it back, with SQLite's write lock held; see docs/benchmarks.md."""

EVENTS_INSERT = (
    "INSERT INTO events (ns, entity, id, from_state, to_state, time, pilot, attempt, detail)"
    f" SELECT ?, ?, {_at(0)}, {_at(1)}, {_at(2)}, ?, {_at(3)}, {_at(4)}, {_at(5)} FROM json_each(?) ORDER BY key"
)
"""Appends events of one entity kind and one time, in array order: parameters ``ns, entity, time`` and
``[[id, from_state, to_state, pilot, attempt, detail], ...]`` as JSON."""

_MOVE = (
    "INSERT INTO entities (ns, kind, id, state, attempt, pilot, created, updated, times, detail, data)"
    f" SELECT ?, ?, {_at(0)}, {_at(1)}, {_at(2)}, {_at(3)}, 0, ?, {_at(4)}, {_at(5)}, {{data}} FROM json_each(?)"
    " WHERE true ON CONFLICT (ns, kind, id) DO UPDATE SET state = excluded.state, attempt = excluded.attempt,"
    " pilot = excluded.pilot, times = excluded.times, detail = excluded.detail, updated = excluded.updated"
)
MOVES = _MOVE.format(data="'{}'")
"""Moves existing entities (an upsert that always updates: the caller read every row in its transaction):
parameters ``ns, kind, updated`` and ``[[id, state, attempt, pilot, times, detail], ...]`` as JSON (times and
detail as JSON texts)."""

MOVES_WITH_DATA = _MOVE.format(data=_at(6)) + ", data = excluded.data"
""":data:`MOVES` with each row's new data (a seventh field, a JSON text)."""

MOVES_PATCHING_DATA = _MOVE.format(data=_at(6)) + ", data = json_patch(entities.data, excluded.data)"
""":data:`MOVES` with a patch of each row's data (a seventh field, a JSON text of an object), applied by SQLite
as a JSON merge patch: a key with ``null`` is deleted, any other value replaces the key's value. That is the
data-patch rule for values that are not objects (an object would be merged into the stored one, not put in
its place), so the backend uses it only for patches without objects among their values; the data is then
neither read into Python nor encoded again."""



def create_or_check(conn: sqlite3.Connection, path: Path) -> None:
    """Create the schema in a new file (WAL mode, version stamped) or check an existing file's version.

    Also checks the SQLite library: upserts need 3.24, the batch statements its JSON functions (built in
    since 3.38, and compiled into most earlier builds)."""
    check_library(conn)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == 0:
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(f"BEGIN IMMEDIATE; {DDL} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
    elif version == 1:  # version 2 only adds tables
        conn.executescript(f"BEGIN IMMEDIATE; {DDL} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
    elif version != SCHEMA_VERSION:
        raise CoordinationError(
            f"SQLite coordination at {path} has schema version {version}; this pilot-data "
            f"expects {SCHEMA_VERSION} (use a new file or the matching release)"
        )


MIN_SQLITE = (3, 24, 0)
"""The oldest SQLite library the backend runs on (``INSERT ... ON CONFLICT DO UPDATE``)."""


def check_library(conn: sqlite3.Connection) -> None:
    """Refuse, with the reason, an SQLite library too old or built without its JSON functions."""
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        raise CoordinationError(
            f"the SQLite library is {sqlite3.sqlite_version}; the embedded coordination needs "
            f"{'.'.join(map(str, MIN_SQLITE))} or later (or use a Redis URL)"
        )
    try:
        conn.execute("SELECT json_extract(value, '$[0]') FROM json_each('[[1]]')").fetchall()
    except sqlite3.OperationalError as exc:
        raise CoordinationError(
            f"the SQLite library {sqlite3.sqlite_version} was built without its JSON functions ({exc}); "
            "the embedded coordination needs them (SQLite 3.38 or later has them built in; or use a Redis URL)"
        ) from exc
