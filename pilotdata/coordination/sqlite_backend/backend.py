"""The embedded SQLite backend class: :class:`SQLiteCoordination` (connections and transactions).

What it owns: the pool of connections to one SQLite file (one machine, many processes, no server) and
the transactions that keep it consistent. Standard-library :mod:`sqlite3` only (no ORM, for speed).
The tables are in :mod:`.schema`.

* ``synchronous=NORMAL``, a busy timeout, and a pool of connections shared by the threads of a
  process (a forked child opens its own).
* Every read-check-write runs in a ``BEGIN IMMEDIATE`` transaction, so the write lock is taken up
  front and two processes never interleave a check and its write.
* SQLite has no blocking primitive: a blocking :meth:`SQLiteCoordination.claim` or
  :meth:`SQLiteCoordination.events_after` polls with a cheap read (no write lock) and a back-off
  growing from 5 ms to 50 ms.
* :meth:`SQLiteCoordination.requeue_lost` applies :func:`pilotdata.coordination.requeue.plan_requeue`
  in one transaction.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pilotdata.coordination._codec import (
    adopted_detail,
    check_binder,
    check_namespace,
    check_queued,
    check_unbound_kind,
    creation_detail,
    dumps,
    initial_state,
    kind_name,
    loads_many,
    rules,
)
from pilotdata.coordination.base import (
    Coordination,
    EntityRecord,
    Event,
    RequeueResult,
    TransitionRequest,
    TransitionResult,
)
from pilotdata.coordination.requeue import ClaimedCU, plan_requeue
from pilotdata.coordination.sqlite_backend.schema import (
    EVENT_INSERT,
    EVENTS_INSERT,
    IDS,
    MOVES,
    MOVES_PATCHING_DATA,
    MOVES_WITH_DATA,
    create_or_check,
)
from pilotdata.errors import (
    AlreadyExistsError,
    CoordinationError,
    CoordinationUnavailableError,
    DescriptionError,
    NotFoundError,
)
from pilotdata.states import ComputeUnitState, Kind

__all__ = ["BUSY_TIMEOUT", "SQLiteCoordination"]

BUSY_TIMEOUT = 30.0
"""Seconds a statement waits for another process's write lock before failing."""

_POLL_START, _POLL_MAX = 0.005, 0.05
_BEGIN_PAUSE_START, _BEGIN_PAUSE_MAX = 0.0001, 0.002
"""Pauses between tries of ``BEGIN IMMEDIATE`` while another process writes (see :meth:`SQLiteCoordination._write`)."""


def _path_of(url: str) -> Path:
    prefix = "sqlite:///"
    if not url.lower().startswith(prefix) or len(url) == len(prefix):
        raise DescriptionError(
            f"SQLite coordination URL {url!r}: expected sqlite:///relative/path or sqlite:////absolute/path",
            field="url",
            value=url,
        )
    return Path(url[len(prefix) :].split("?", 1)[0]).expanduser()


_WRITE_LOCKS: dict[str, threading.Lock] = {}
"""One mutex per SQLite file for the write transactions of this process's threads."""
_WRITE_LOCKS_GUARD = threading.Lock()
_HELD = threading.local()
"""The files whose write mutex the current thread holds (a nested write transaction is a bug, not a wait)."""


def _reset_write_locks() -> None:
    """In a forked child: no thread of the parent holds anything here."""
    global _WRITE_LOCKS_GUARD
    _WRITE_LOCKS.clear()
    _WRITE_LOCKS_GUARD = threading.Lock()
    _HELD.__dict__.clear()


os.register_at_fork(after_in_child=_reset_write_locks)


@contextmanager
def _write_lock(key: str) -> Iterator[None]:
    """Hold this process's write mutex of one SQLite file (at most :data:`BUSY_TIMEOUT` seconds' wait).

    Threads of one process take turns here, woken as soon as the previous transaction ends, rather than
    in SQLite's busy handler, which sleeps 1, 2, 5, 10, 15, 20, 25 ... ms between tries whatever the
    transaction it waits for takes. An agent's claims (main thread) and transitions (recorder thread) wait
    for each other a few hundred times a second.
    """
    held: set[str] = _HELD.__dict__.setdefault("keys", set())
    if key in held:
        raise CoordinationError(f"SQLite coordination at {key}: a write transaction inside another one")
    with _WRITE_LOCKS_GUARD:
        lock = _WRITE_LOCKS.setdefault(key, threading.Lock())
    if not lock.acquire(timeout=BUSY_TIMEOUT):
        raise sqlite3.OperationalError(f"database is locked (by another thread of this process for {BUSY_TIMEOUT:g} s)")
    held.add(key)
    try:
        yield
    finally:
        held.discard(key)
        lock.release()


def _transient(exc: sqlite3.OperationalError) -> bool:
    """Whether an error is the file being busy or out of reach (worth retrying), not a bad statement."""
    text = str(exc).lower()
    return _busy(exc) or "unable to open" in text or "disk i/o" in text


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Whether an error is another connection holding the lock (SQLITE_BUSY), worth another try."""
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _json(items: Sequence[Any]) -> str:
    """A batch as one JSON parameter of the batch statements (see :data:`.schema.IDS`)."""
    return json.dumps(items)


def _aggregate(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> Any:
    """The decoded JSON value of a query that aggregates its rows into one (``json_group_array`` ...)."""
    return json.loads(conn.execute(sql, params).fetchone()[0])


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _cursor(seq: int) -> str:
    return f"{seq:020d}"  # zero-padded: string order is stream order


def _seq(cursor: str) -> int:
    try:
        return int(cursor)
    except (TypeError, ValueError):
        raise ValueError(f"bad event cursor {cursor!r}: expected a cursor returned by this backend") from None


class SQLiteCoordination(Coordination):
    """Coordination in one SQLite file, shared by every process on the machine."""

    def __init__(self, url: str, namespace: str = "default") -> None:
        self.namespace = check_namespace(namespace)  # the same rule as Redis: the backends agree
        self._url = url
        self.path = _path_of(url)
        self._lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []  # every open connection of this process
        self._idle: list[sqlite3.Connection] = []  # the ones not in use right now
        self._writer: sqlite3.Connection | None = None  # the write transactions' (see _write)
        self._key = str(self.path.absolute())
        self._pid = os.getpid()
        self._ready = False
        self._closed = False

    def __repr__(self) -> str:
        return f"SQLiteCoordination(url={self._url!r}, namespace={self.namespace!r})"

    # ----------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        """The ``sqlite:///`` URL (it holds no secret)."""
        return self._url

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            kind = CoordinationUnavailableError if _transient(exc) else CoordinationError
            raise kind(f"{what}: SQLite coordination at {self.path}: {exc}") from exc
        except sqlite3.Error as exc:
            raise CoordinationError(f"{what}: SQLite coordination at {self.path}: {exc}") from exc
        except OSError as exc:
            raise CoordinationUnavailableError(f"{what}: SQLite coordination at {self.path}: {exc}") from exc

    def _acquire(self) -> sqlite3.Connection:
        """An idle pooled connection, or a new one (opened, and the schema created, on first use).

        A pool rather than one connection per thread: agents run a short-lived thread per CU, and
        per-thread connections would pile up open files. A forked child starts a pool of its own.
        """
        with self._lock:
            if self._closed:
                raise CoordinationError(f"SQLite coordination at {self.path} is closed")
            if self._pid != os.getpid():  # never use the parent's connections after a fork
                self._pid, self._conns, self._idle, self._writer = os.getpid(), [], [], None
            if self._idle:
                return self._idle.pop()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            if not self._ready:
                self._init_schema(conn)
        except BaseException:
            conn.close()
            raise
        with self._lock:
            self._conns.append(conn)
        return conn

    def _put_back(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            if self._closed or self._pid != os.getpid():
                conn.close()
            else:
                self._idle.append(conn)

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        conn = self._acquire()
        try:
            yield conn
        finally:
            self._put_back(conn)

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        create_or_check(conn, self.path)
        self._ready = True

    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on any error.

        The threads of this process take turns on a mutex (:func:`_write_lock`) and use one connection,
        in which SQLite does not wait: while another process holds the file's write lock, ``BEGIN
        IMMEDIATE`` is tried again after 0.1, 0.2, 0.4 ... 2 ms (SQLite's own busy handler sleeps 1, 2,
        5, 10 ... ms), for up to :data:`BUSY_TIMEOUT` seconds.
        """
        with self._errors(what), _write_lock(self._key):
            conn = self._writer_connection()
            self._begin(conn)
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _writer_connection(self) -> sqlite3.Connection:
        """The connection of the write transactions (called with the file's write mutex held, which is
        all the first look needs: the pool's lock is wanted by every read of every thread)."""
        conn = self._writer
        if conn is not None and self._pid == os.getpid():
            return conn
        conn = self._acquire()  # a pooled one (the schema made), kept apart from now on
        conn.execute("PRAGMA busy_timeout = 0")
        with self._lock:
            self._writer = conn
        return conn

    @staticmethod
    def _begin(conn: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE``, tried again while another process writes (see :meth:`_write`)."""
        if conn.in_transaction:  # a failed ROLLBACK left one open
            conn.execute("ROLLBACK")
        deadline = time.monotonic() + BUSY_TIMEOUT
        pause = _BEGIN_PAUSE_START
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, _BEGIN_PAUSE_MAX)

    @contextmanager
    def _auto(self, what: str) -> Iterator[sqlite3.Connection]:
        """A pooled connection in autocommit mode: each statement is its own transaction."""
        with self._errors(what), self._connection() as conn:
            yield conn

    def ping(self) -> None:
        """Open the file (creating it and its schema if needed) and run a trivial query."""
        with self._auto("ping") as conn:
            conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        """Close every connection this object opened (in any thread)."""
        with self._lock:
            self._closed = True
            conns, self._conns, self._idle, self._writer = self._conns, [], [], None
        for conn in conns:
            conn.close()

    # ------------------------------------------------------------------ entities
    def _data_json(self, kind: str, entity_id: str, data: Mapping[str, Any]) -> str:
        parts = []
        for key, value in data.items():
            if not isinstance(key, str):
                raise DescriptionError(f"{kind} {entity_id!r}: data key {key!r} is not a str", field="data")
            if value is not None:
                parts.append(f"{json.dumps(key)}:{dumps(value, f'{kind} {entity_id!r}', f'data.{key}')}")
        return "{" + ",".join(parts) + "}"

    def create_many(
        self, kind: Kind | str, items: Sequence[tuple[str, Mapping[str, Any]]], *, binder: str | None = None,
        queue: str | None = None, detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Create many entities in one transaction: all of them, or none if any id is taken.

        With ``binder`` (CUs) they also enter the binder's unbound set in that transaction; with
        ``queue`` they move on to Pending at the back of that queue in it.
        """
        k = kind_name(kind)
        if not items:
            return
        if binder is not None:
            check_unbound_kind(k)
            check_binder(binder)
        if queue is not None:
            check_queued(k, binder)
        now = time.time()
        initial = initial_state(k)
        state, times, moved = initial, json.dumps({initial: now}), "{}"
        if queue is not None:  # created as a create and its move New -> Pending would leave them
            state = ComputeUnitState.PENDING.value
            times = json.dumps({initial: now, state: now})
            moved = dumps(dict(detail), f"{k} create", "detail") if detail else "{}"
        ns = self.namespace
        rows = [[i, self._data_json(k, i, d)] for i, d in items]
        ids = [i for i, _ in items]
        seen: set[str] = set()
        for entity_id in ids:
            if entity_id in seen:
                raise AlreadyExistsError(f"{k} {entity_id!r} appears twice in one create_many")
            seen.add(entity_id)
        created = _json([[i, None, initial, None, 0, creation_detail(k, d)] for i, d in items])
        listed = _json(ids)
        with self._write(f"create {k}") as conn:
            sql = f"SELECT json_group_array(id) FROM entities WHERE ns = ? AND kind = ? AND id IN {IDS}"
            taken = set(_aggregate(conn, sql, (ns, k, listed)))
            if taken:
                raise AlreadyExistsError(f"{k} {next(i for i in ids if i in taken)!r} already exists")
            conn.execute(
                "INSERT INTO entities (ns, kind, id, state, attempt, pilot, created, updated, times, detail, data)"
                " SELECT ?, ?, json_extract(value, '$[0]'), ?, 0, NULL, ?, ?, ?, ?, json_extract(value, '$[1]')"
                " FROM json_each(?)",
                (ns, k, state, now, now, times, moved, _json(rows)),
            )
            conn.execute(EVENTS_INSERT, (ns, k, now, created))
            if binder is not None:
                conn.execute("INSERT INTO unbound (ns, cu_id, binder) SELECT ?, value, ? FROM json_each(?)"
                             " ORDER BY key", (ns, binder, listed))
            if queue is not None:
                conn.execute(EVENTS_INSERT, (ns, k, now, _json([[i, initial, state, None, 0, moved] for i in ids])))
                self._push(conn, queue, ids, False)

    def _fetch(self, conn: sqlite3.Connection, kind: str, ids: Sequence[str]) -> dict[str, EntityRecord]:
        # one row of JSON for all of them (see schema.IDS); quote() renders a REAL so that it reads back
        # exactly (JSON's numbers would keep 15 digits)
        sql = (
            "SELECT json_group_array(json_array(id, state, attempt, pilot, quote(created), quote(updated),"
            f" json(times), json(detail), json(data))) FROM entities WHERE ns = ? AND kind = ? AND id IN {IDS}"
        )
        rows = _aggregate(conn, sql, (self.namespace, kind, _json(ids)))
        return {
            i: EntityRecord(kind, i, state, attempt, pilot, data, float(created), float(updated), times, detail)
            for i, state, attempt, pilot, created, updated, times, detail, data in rows
        }

    def get(self, kind: Kind | str, entity_id: str) -> EntityRecord:
        """One entity, or :class:`NotFoundError`."""
        record = self.get_many(kind, [entity_id])[0]
        if record is None:
            raise NotFoundError(f"{kind_name(kind)} {entity_id!r} does not exist")
        return record

    def get_many(self, kind: Kind | str, entity_ids: Sequence[str]) -> list[EntityRecord | None]:
        """Entities in the order asked; ``None`` where missing."""
        k = kind_name(kind)
        with self._auto(f"get {k}") as conn:
            found = self._fetch(conn, k, entity_ids)
        return [found.get(i) for i in entity_ids]

    def states(self, kind: Kind | str, entity_ids: Sequence[str]) -> list[str | None]:
        """States in the order asked (the state column only); ``None`` where missing."""
        k = kind_name(kind)
        sql = f"SELECT json_group_object(id, state) FROM entities WHERE ns = ? AND kind = ? AND id IN {IDS}"
        with self._auto(f"get {k} states") as conn:
            found: dict[str, str] = _aggregate(conn, sql, (self.namespace, k, _json(entity_ids)))
        return [found.get(i) for i in entity_ids]

    def list_ids(self, kind: Kind | str) -> list[str]:
        """All ids of ``kind``, sorted."""
        k = kind_name(kind)
        with self._auto(f"list {k}") as conn:
            rows = conn.execute(
                "SELECT id FROM entities WHERE ns = ? AND kind = ? ORDER BY id", (self.namespace, k)
            ).fetchall()
        return [r[0] for r in rows]

    def update_data(self, kind: Kind | str, entity_id: str, patch: Mapping[str, Any]) -> None:
        """Set / delete (``None``) top-level data keys in one transaction."""
        k = kind_name(kind)
        self._data_json(k, entity_id, patch)  # validates keys and values before taking the lock
        with self._write(f"update {k} {entity_id!r}") as conn:
            where = (self.namespace, k, entity_id)
            sql = "SELECT data FROM entities WHERE ns = ? AND kind = ? AND id = ?"
            row = conn.execute(sql, where).fetchone()
            if row is None:
                raise NotFoundError(f"{k} {entity_id!r} does not exist")
            data = json.loads(row[0])
            _apply_patch(data, patch)
            conn.execute(
                "UPDATE entities SET data = ?, updated = ? WHERE ns = ? AND kind = ? AND id = ?",
                (dumps(data, f"{k} {entity_id!r}", "data"), time.time(), *where),
            )

    def delete(self, kind: Kind | str, entity_id: str) -> None:
        """Remove the entity (events stay)."""
        k = kind_name(kind)
        with self._write(f"delete {k} {entity_id!r}") as conn:
            key = (self.namespace, k, entity_id)
            conn.execute("DELETE FROM entities WHERE ns = ? AND kind = ? AND id = ?", key)
            if k == Kind.CU.value:
                conn.execute("DELETE FROM unbound WHERE ns = ? AND cu_id = ?", (self.namespace, entity_id))

    # ---------------------------------------------------------------- transitions
    def _states(self, conn: sqlite3.Connection, kind: str, ids: Sequence[str]) -> dict[str, list[Any]]:
        """id -> [state, attempt, pilot, times, detail] (mutable: :meth:`_apply` works on it)."""
        sql = (
            "SELECT json_group_array(json_array(id, state, attempt, pilot, json(times))) FROM entities"
            f" WHERE ns = ? AND kind = ? AND id IN {IDS}"
        )
        rows = _aggregate(conn, sql, (self.namespace, kind, _json(ids)))
        return {i: [state, attempt, pilot, times, "{}"] for i, state, attempt, pilot, times in rows}

    def _apply(
        self, conn: sqlite3.Connection, kind: str, requests: Sequence[TransitionRequest], now: float
    ) -> list[TransitionResult]:
        """Check and apply transitions inside the caller's write transaction (batched statements)."""
        live = self._states(conn, kind, [r.id for r in requests])
        owned = self._owned(conn, requests)
        initial = initial_state(kind)
        table: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
        results: list[TransitionResult] = []
        events: list[list[Any]] = []
        left_initial: list[str] = []
        pushes: dict[tuple[str, bool], list[str]] = {}
        for req in requests:
            to = str(req.to)
            if to not in table:
                table[to] = rules(kind, to)
            allowed, retry = table[to]
            entity = live.get(req.id)
            if entity is None:
                results.append(TransitionResult(kind, req.id, False, None, to, 0, now))
                continue
            state, attempt = entity[0], entity[1]
            if (req.expected and state != str(req.expected)) or state not in allowed or (
                req.owner and req.id not in owned.get(req.owner, ())
            ):
                results.append(TransitionResult(kind, req.id, False, state, to, attempt, now))
                continue
            if state == initial:
                left_initial.append(req.id)
            if req.release and req.pilot and req.pilot in owned:
                owned[req.pilot].discard(req.id)  # a later request of this batch sees it released
            if req.queue is not None:
                pushes.setdefault((req.queue, req.front), []).append(req.id)
            detail = dumps(dict(req.detail or {}), f"{kind} {req.id!r}", "detail")
            attempt += 1 if state in retry else 0
            entity[0], entity[1], entity[4] = to, attempt, detail
            entity[2] = req.pilot or entity[2]
            entity[3][to] = now
            events.append([req.id, state, to, req.pilot, attempt, detail])
            results.append(TransitionResult(kind, req.id, True, state, to, attempt, now))
        if events:
            ns = self.namespace
            moved = {e[0] for e in events}
            # the data patches of the moves that succeeded, in request order, written with the move itself:
            # one row write per entity (a second one for its data cost another write of the same row)
            # (the flat patches, the usual case, are applied by SQLite; the others here)
            flat, nested = self._split_patches(kind, [(r.id, r.data) for r, res in zip(requests, results)
                                                      if res.ok and r.data])
            datas = self._patched_data(conn, kind, nested)
            plain = [[i, s, a, p, json.dumps(t), d] for i, (s, a, p, t, d) in live.items()
                     if i in moved and i not in datas and i not in flat]
            if plain:
                conn.execute(MOVES, (ns, kind, now, _json(plain)))
            if flat:
                conn.execute(MOVES_PATCHING_DATA, (ns, kind, now, _json(
                    [[i, s, a, p, json.dumps(t), d, flat[i]] for i, (s, a, p, t, d) in live.items() if i in flat])))
            if datas:
                # the stored part and the patch are checked (string keys, no top-level None left), so one
                # call of the encoder gives the text _data_json would, without its dumps per key
                conn.execute(MOVES_WITH_DATA, (ns, kind, now, _json(
                    [[i, s, a, p, json.dumps(t), d, dumps(datas[i], f"{kind} {i!r}", "data")]
                     for i, (s, a, p, t, d) in live.items() if i in datas])))
            conn.execute(EVENTS_INSERT, (ns, kind, now, _json(events)))
            released: dict[str, list[str]] = {}
            for r, res in zip(requests, results):
                if res.ok and r.release and r.pilot:
                    released.setdefault(r.pilot, []).append(r.id)
            for pilot, ids in released.items():
                conn.execute(f"DELETE FROM claims WHERE ns = ? AND pilot = ? AND cu_id IN {IDS}",
                             (ns, pilot, _json(ids)))
            if left_initial and kind == Kind.CU.value:
                conn.execute(f"DELETE FROM unbound WHERE ns = ? AND cu_id IN {IDS}", (ns, _json(left_initial)))
            for (qname, front), ids in pushes.items():
                self._push(conn, qname, ids, front)
        return results

    def _owned(self, conn: sqlite3.Connection, requests: Sequence[TransitionRequest]) -> dict[str, set[str]]:
        """``{owner: ids of the requests in that owner's in-progress list}`` for requests with an owner."""
        asked: dict[str, list[str]] = {}
        for req in requests:
            if req.owner:
                asked.setdefault(req.owner, []).append(req.id)
        owned: dict[str, set[str]] = {}
        sql = f"SELECT json_group_array(cu_id) FROM claims WHERE ns = ? AND pilot = ? AND cu_id IN {IDS}"
        for owner, ids in asked.items():
            owned[owner] = set(_aggregate(conn, sql, (self.namespace, owner, _json(ids))))
        return owned

    def _split_patches(
        self, kind: str, patches: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> tuple[dict[str, str], list[tuple[str, Mapping[str, Any]]]]:
        """Sort data patches (in request order) by who applies them: ``({id: merged patch as JSON text},
        [(id, patch), ...])``.

        An entity none of whose patches holds an object value gets its patches merged into one (a later
        key wins; ``None`` deletes), which SQLite applies as a JSON merge patch (:data:`MOVES_PATCHING_DATA`):
        for such values that is the data-patch rule, and the stored data is neither read into Python nor
        encoded again. Every patch of any other entity is applied in Python (:meth:`_patched_data`). The
        merged patches are checked as :meth:`_data_json` checks data (string keys, JSON values).
        """
        merged: dict[str, dict[str, Any]] = {}
        nested: set[str] = set()
        for entity_id, patch in patches:
            if entity_id in nested:
                continue
            if any(isinstance(value, dict) for value in patch.values()):
                nested.add(entity_id)
                merged.pop(entity_id, None)
            else:
                merged.setdefault(entity_id, {}).update(patch)
        texts: dict[str, str] = {}
        for entity_id, patch in merged.items():
            what = f"{kind} {entity_id!r}"
            if all(isinstance(key, str) for key in patch):
                try:
                    texts[entity_id] = dumps(patch, what, "data")
                    continue
                except DescriptionError:
                    pass
            self._data_json(kind, entity_id, patch)  # raises the error that names the key or the value
            texts[entity_id] = dumps(patch, what, "data")
        return texts, [(i, p) for i, p in patches if i in nested]

    def _patched_data(
        self, conn: sqlite3.Connection, kind: str, patches: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> dict[str, dict[str, Any]]:
        """The data of the patched entities with their patches applied (in request order), read inside the
        caller's transaction; the caller writes them."""
        if not patches:
            return {}
        sql = f"SELECT json_group_object(id, json(data)) FROM entities WHERE ns = ? AND kind = ? AND id IN {IDS}"
        datas: dict[str, dict[str, Any]] = _aggregate(conn, sql, (self.namespace, kind, _json([i for i, _ in patches])))
        for entity_id, patch in patches:
            self._data_json(kind, entity_id, patch)  # validates keys and values
            _apply_patch(datas[entity_id], patch)
        return datas

    def transition_many(
        self, kind: Kind | str, requests: Sequence[TransitionRequest]
    ) -> list[TransitionResult]:
        """Checked transitions in one transaction (each request succeeds or fails on its own)."""
        k = kind_name(kind)
        if not requests:
            return []
        with self._write(f"transition {k}") as conn:
            return self._apply(conn, k, requests, time.time())

    # -------------------------------------------------------------------- queues
    def _push(self, conn: sqlite3.Connection, qname: str, cu_ids: Sequence[str], front: bool) -> None:
        # one end of the queue, alone in its query: SQLite reads a lone min() or max() off the index,
        # but min() and max() together scan the whole queue (88 ms per push at a million queued CUs)
        end = "min" if front else "max"
        edge = conn.execute(
            f"SELECT {end}(pos) FROM queue WHERE ns = ? AND qname = ?", (self.namespace, qname)
        ).fetchone()[0]
        start = ((edge if edge is not None else 0) - len(cu_ids)) if front else (edge if edge is not None else 0) + 1
        conn.execute(
            "INSERT INTO queue (ns, qname, pos, cu_id) SELECT ?, ?, ? + key, value FROM json_each(?)",
            (self.namespace, qname, start, _json(cu_ids)),
        )

    def enqueue(self, cu_ids: Sequence[str], pilot: str | None = None, *, front: bool = False) -> None:
        """Append ids to a queue (``front``: so that the next claims take them first, in order)."""
        if not cu_ids:
            return
        with self._write("enqueue") as conn:
            self._push(conn, pilot or "", cu_ids, front)

    def _claim_now(self, pilot: str, limit: int) -> list[str]:
        ns = self.namespace
        with self._write(f"claim for pilot {pilot!r}") as conn:
            ids: list[str] = []
            for qname in (pilot, ""):
                if len(ids) >= limit:
                    break
                rows = _aggregate(
                    conn,
                    "SELECT json_group_array(json_array(pos, cu_id)) FROM"
                    " (SELECT pos, cu_id FROM queue WHERE ns = ? AND qname = ? ORDER BY pos LIMIT ?)",
                    (ns, qname, limit - len(ids)),
                )
                if rows:
                    rows.sort()  # claim order (the aggregate's order is not promised)
                    conn.execute(f"DELETE FROM queue WHERE ns = ? AND qname = ? AND pos IN {IDS}",
                                 (ns, qname, _json([pos for pos, _ in rows])))
                    ids += [cu_id for _, cu_id in rows]
            if ids:
                self._add_claims(conn, pilot, ids)
        return ids

    def _add_claims(self, conn: sqlite3.Connection, pilot: str, cu_ids: Sequence[str]) -> None:
        top = conn.execute(
            "SELECT coalesce(max(pos), 0) FROM claims WHERE ns = ? AND pilot = ?", (self.namespace, pilot)
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO claims (ns, pilot, pos, cu_id) SELECT ?, ?, ? + key, value FROM json_each(?)",
            (self.namespace, pilot, top + 1, _json(cu_ids)),
        )

    def claim(self, pilot: str, *, limit: int = 1, timeout: float = 0.0) -> list[str]:
        """Reliable claim, own queue first; polls (5 -> 50 ms back-off) up to ``timeout`` while empty."""
        if not pilot:
            raise ValueError("claim needs a pilot id")
        if limit < 1:
            return []
        deadline = time.monotonic() + timeout
        pause = _POLL_START
        while True:
            with self._auto(f"claim for pilot {pilot!r}") as conn:  # cheap check, no write lock
                waiting = conn.execute(
                    "SELECT 1 FROM queue WHERE ns = ? AND qname IN (?, '') LIMIT 1", (self.namespace, pilot)
                ).fetchone()
            if waiting:
                got = self._claim_now(pilot, limit)
                if got:
                    return got
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, _POLL_MAX)

    def claimed(self, pilot: str) -> list[str]:
        """The pilot's in-progress list, in claim order."""
        with self._auto(f"claimed of pilot {pilot!r}") as conn:
            rows = conn.execute(
                "SELECT cu_id FROM claims WHERE ns = ? AND pilot = ? ORDER BY pos", (self.namespace, pilot)
            ).fetchall()
        return [r[0] for r in rows]

    def release(self, pilot: str, cu_ids: Sequence[str]) -> None:
        """Remove finished ids from the pilot's in-progress list."""
        if not cu_ids:
            return
        with self._write(f"release for pilot {pilot!r}") as conn:
            conn.executemany(
                "DELETE FROM claims WHERE ns = ? AND pilot = ? AND cu_id = ?",
                [(self.namespace, pilot, cu_id) for cu_id in cu_ids],
            )

    def unclaim(self, pilot: str, cu_ids: Sequence[str], *, to_pilot: str | None = None) -> None:
        """Move claimed ids back to the front of a queue (ids not claimed by ``pilot`` are ignored)."""
        if not cu_ids:
            return
        ns = self.namespace
        with self._write(f"unclaim for pilot {pilot!r}") as conn:
            moved: list[str] = []
            for cu_id in cu_ids:
                row = conn.execute(
                    "SELECT pos FROM claims WHERE ns = ? AND pilot = ? AND cu_id = ? ORDER BY pos LIMIT 1",
                    (ns, pilot, cu_id),
                ).fetchone()
                if row is not None:
                    key = (ns, pilot, row[0])
                    conn.execute("DELETE FROM claims WHERE ns = ? AND pilot = ? AND pos = ?", key)
                    moved.append(cu_id)
            if moved:
                self._push(conn, to_pilot or "", moved, front=True)

    def queued(self, pilot: str | None = None) -> list[str]:
        """The ids waiting in a queue, in claim order."""
        with self._auto("queued") as conn:
            sql = "SELECT cu_id FROM queue WHERE ns = ? AND qname = ? ORDER BY pos"
            rows = conn.execute(sql, (self.namespace, pilot or "")).fetchall()
        return [r[0] for r in rows]

    def queue_lengths(self, pilots: Iterable[str]) -> dict[str, int]:
        """Queue length per pilot (``""``: the shared queue), one query."""
        names = list(pilots)
        if not names:
            return {}
        with self._auto("queue lengths") as conn:
            counts = dict(
                conn.execute(
                    f"SELECT qname, count(*) FROM queue WHERE ns = ? AND qname IN ({_marks(len(names))})"
                    " GROUP BY qname",
                    (self.namespace, *names),
                ).fetchall()
            )
        return {name: int(counts.get(name, 0)) for name in names}

    def dequeue(self, cu_id: str) -> bool:
        """Remove a queued id (shared queue first) from whichever queue holds it."""
        with self._write(f"dequeue {cu_id!r}") as conn:
            row = conn.execute(
                "SELECT qname, pos FROM queue WHERE ns = ? AND cu_id = ? ORDER BY qname != '', pos LIMIT 1",
                (self.namespace, cu_id),
            ).fetchone()
            if row is None:
                return False
            conn.execute("DELETE FROM queue WHERE ns = ? AND qname = ? AND pos = ?", (self.namespace, *row))
        return True

    # ------------------------------------------------------------------ liveness
    def heartbeat(self, pilot: str, ttl: float) -> None:
        """Set the pilot's expiry to now + ``ttl`` (joining the live set)."""
        with self._auto(f"heartbeat of pilot {pilot!r}") as conn:
            conn.execute(
                "INSERT INTO live (ns, pilot, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (ns, pilot) DO UPDATE SET expires_at = excluded.expires_at",
                (self.namespace, pilot, time.time() + ttl),
            )

    def is_alive(self, pilot: str) -> bool:
        """Whether the pilot's heartbeat has not expired."""
        with self._auto(f"liveness of pilot {pilot!r}") as conn:
            row = conn.execute(
                "SELECT expires_at FROM live WHERE ns = ? AND pilot = ?", (self.namespace, pilot)
            ).fetchone()
        return row is not None and row[0] > time.time()

    def expired_pilots(self) -> list[str]:
        """Live-set pilots whose heartbeat has expired, sorted."""
        with self._auto("expired pilots") as conn:
            rows = conn.execute(
                "SELECT pilot FROM live WHERE ns = ? AND expires_at <= ? ORDER BY pilot",
                (self.namespace, time.time()),
            ).fetchall()
        return [r[0] for r in rows]

    def retire(self, pilot: str) -> None:
        """Leave the live set."""
        with self._auto(f"retire pilot {pilot!r}") as conn:
            conn.execute("DELETE FROM live WHERE ns = ? AND pilot = ?", (self.namespace, pilot))

    def requeue_lost(self, pilot: str, max_reassign: int, *, force: bool = False) -> RequeueResult:
        """One transaction: check lost, leave the live set, requeue / fail / drop each claimed CU.

        The lost pilot's own (unclaimed) queue goes back to the shared queue too, so nothing placed
        on a dead pilot is stranded; those ids are reported in ``requeued``.
        """
        ns, cu = self.namespace, Kind.CU.value
        with self._write(f"requeue work of pilot {pilot!r}") as conn:
            now = time.time()
            key = (ns, pilot)
            row = conn.execute("SELECT expires_at FROM live WHERE ns = ? AND pilot = ?", key).fetchone()
            if not force and (row is None or row[0] > now):
                return RequeueResult(pilot, [], [], [])
            conn.execute("DELETE FROM live WHERE ns = ? AND pilot = ?", key)
            ids = [r[0] for r in conn.execute(
                "SELECT cu_id FROM claims WHERE ns = ? AND pilot = ? ORDER BY pos", key
            )]
            conn.execute("DELETE FROM claims WHERE ns = ? AND pilot = ?", key)
            own = [r[0] for r in conn.execute(
                "SELECT cu_id FROM queue WHERE ns = ? AND qname = ? ORDER BY pos", key
            )]
            conn.execute("DELETE FROM queue WHERE ns = ? AND qname = ?", key)
            found = self._states(conn, cu, ids)
            claimed = [ClaimedCU(i, *found[i][:2]) if i in found else ClaimedCU(i, None) for i in ids]
            plan = plan_requeue(pilot, claimed, own, max_reassign)
            results = self._apply(conn, cu, plan.moves, now)
            plan = plan.without([r.id for r in results if not r.ok])
            if plan.requeued:
                self._push(conn, "", plan.requeued, front=True)
        return plan.result()

    # ------------------------------------------------------------------ unbound
    def hold_unbound(self, binder: str, ttl: float) -> None:
        """Set the binder's lease to expire ``ttl`` seconds from now (delete it for ``ttl`` <= 0)."""
        check_binder(binder)
        with self._auto(f"lease of binder {binder!r}") as conn:
            if ttl <= 0:
                conn.execute("DELETE FROM leases WHERE ns = ? AND binder = ?", (self.namespace, binder))
                return
            conn.execute(
                "INSERT INTO leases (ns, binder, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (ns, binder) DO UPDATE SET expires_at = excluded.expires_at",
                (self.namespace, binder, time.time() + ttl),
            )

    def unbound(self, binder: str | None = None) -> list[str]:
        """One binder's unbound CUs (or every binder's, binders sorted), in creation order."""
        with self._auto("unbound CUs") as conn:
            if binder is not None:
                rows = conn.execute("SELECT cu_id FROM unbound WHERE ns = ? AND binder = ? ORDER BY rowid",
                                    (self.namespace, check_binder(binder))).fetchall()
            else:
                rows = conn.execute("SELECT cu_id FROM unbound WHERE ns = ? ORDER BY binder, rowid",
                                    (self.namespace,)).fetchall()
        return [r[0] for r in rows]

    def adopt_unbound(self) -> list[str]:
        """One transaction: the unbound CUs of binders whose lease lapsed go Pending onto the shared queue."""
        ns, cu = self.namespace, Kind.CU.value
        with self._auto("adopt unbound CUs") as conn:  # cheap look first: nothing to adopt, no write lock
            due = conn.execute(
                "SELECT 1 FROM unbound u LEFT JOIN leases l ON l.ns = u.ns AND l.binder = u.binder"
                " WHERE u.ns = ? AND (l.expires_at IS NULL OR l.expires_at <= ?) LIMIT 1", (ns, time.time()),
            ).fetchone()
        if not due:
            return []
        adopted: list[str] = []
        with self._write("adopt unbound CUs") as conn:
            now = time.time()
            rows = conn.execute(
                "SELECT u.binder, u.cu_id FROM unbound u LEFT JOIN leases l ON l.ns = u.ns AND l.binder = u.binder"
                " WHERE u.ns = ? AND (l.expires_at IS NULL OR l.expires_at <= ?) ORDER BY u.binder, u.rowid",
                (ns, now),
            ).fetchall()
            pending = ComputeUnitState.PENDING.value
            requests = [TransitionRequest(i, pending, initial_state(cu), detail=adopted_detail(b)) for b, i in rows]
            for req, res in zip(requests, self._apply(conn, cu, requests, now)):
                if res.ok:
                    adopted.append(req.id)
            conn.executemany("DELETE FROM unbound WHERE ns = ? AND cu_id = ?", [(ns, i) for _, i in rows])
            if adopted:
                self._push(conn, "", adopted, front=False)
        return adopted

    # -------------------------------------------------------------------- events
    def record_event(
        self,
        entity: str,
        entity_id: str,
        detail: Mapping[str, Any],
        *,
        pilot: str | None = None,
    ) -> None:
        """Append a non-transition event."""
        encoded = dumps(dict(detail), f"{entity} {entity_id!r}", "detail")
        with self._auto(f"record {entity} event") as conn:
            conn.execute(
                EVENT_INSERT, (self.namespace, entity, entity_id, None, None, time.time(), pilot, 0, encoded)
            )

    def events_after(self, cursor: str | None, *, limit: int = 1000, block: float = 0.0) -> list[Event]:
        """Events after ``cursor``; with ``block`` > 0 polls (5 -> 50 ms back-off) until one arrives."""
        after = _seq(cursor) if cursor is not None else 0
        deadline = time.monotonic() + block
        pause = _POLL_START
        while True:
            with self._auto("read events") as conn:
                rows = conn.execute(
                    "SELECT seq, entity, id, from_state, to_state, time, pilot, attempt, detail FROM events"
                    " WHERE ns = ? AND seq > ? ORDER BY seq LIMIT ?",
                    (self.namespace, after, max(1, limit)),
                ).fetchall()
            remaining = deadline - time.monotonic()
            if rows or remaining <= 0:
                details = loads_many([row[8] for row in rows])
                return [
                    Event(_cursor(seq), e, i, f, t, tm, p, a, detail, text)
                    for (seq, e, i, f, t, tm, p, a, text), detail in zip(rows, details, strict=True)
                ]
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, _POLL_MAX)

    def last_cursor(self) -> str | None:
        """Cursor of the newest event of this namespace."""
        with self._auto("last event") as conn:
            seq = conn.execute("SELECT max(seq) FROM events WHERE ns = ?", (self.namespace,)).fetchone()[0]
        return None if seq is None else _cursor(seq)

    def trim_events(self, upto: str) -> int:
        """Delete this namespace's events at or before ``upto``."""
        seq = _seq(upto)
        with self._auto("trim events") as conn:
            cur = conn.execute("DELETE FROM events WHERE ns = ? AND seq <= ?", (self.namespace, seq))
            return cur.rowcount


def _apply_patch(data: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """Set ``patch``'s keys in ``data``; a ``None`` value deletes the key (the data-patch rule of the API)."""
    for key, value in patch.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
