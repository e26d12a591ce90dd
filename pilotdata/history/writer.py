"""The history writer: drains the coordination event stream into the SQL history, idempotently.

:class:`HistoryWriter` reads :meth:`Coordination.events_after` from where this *source* (coordination
namespace + redacted backend URL, :func:`source_id`) last stopped, converts each event into a row of
:class:`~pilotdata.history.models.Event` or, for ``entity == "transfer"``, of
:class:`~pilotdata.history.models.Transfer`, and inserts each batch in one transaction with
``INSERT ... ON CONFLICT (source, cursor) DO NOTHING``. The same transaction appends a
:class:`~pilotdata.history.models.DrainMark` (the batch's last cursor) when the batch added rows.

Why this is idempotent and restart-safe:

* The unique constraint makes a second insert of an event a no-op, so running :meth:`HistoryWriter.drain`
  twice, or two writers at once, stores every event exactly once.
* A batch is a contiguous run of the stream that starts right after a stored mark and commits as a
  whole, so the stored events of a source always form a prefix of its stream. Resuming after any mark
  therefore never skips an event, and only a batch that added rows writes a mark, so the newest mark
  is the furthest point stored. Cursors are opaque: they are never compared, in SQL or here.
* ``trim=True`` trims the coordination stream only up to a cursor that is stored. Trim only when this
  history is the stream's sole consumer.

The same transaction folds the batch's new events into the index tables (:mod:`pilotdata.history.index`),
reading what events do not carry (a CU's run and name, a pilot's labels) from coordination; writers
take :meth:`History.lock` so folds apply in stream order. Transfer rows get their byte ``category``
(:func:`pilotdata.records.transfer_category`), the ``cu`` they were made for and its ``run``.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Insert, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from pilotdata.coordination.base import Coordination, now
from pilotdata.coordination.base import Event as CoordinationEvent
from pilotdata.errors import CoordinationError, HistoryError
from pilotdata.history.index import INDEX_VERSION as _INDEX_VERSION
from pilotdata.history.index import CoordinationLookup, CURow, IndexMark, ensure_index, fold
from pilotdata.history.models import DrainMark, Event, History, Transfer
from pilotdata.records import TRANSFER_EVENT, transfer_category
from pilotdata.redaction import redact_url

__all__ = ["TRANSFER_ENTITY", "HistoryWriter", "source_id"]

log = logging.getLogger(__name__)

TRANSFER_ENTITY = TRANSFER_EVENT
"""Events with this ``entity`` are transfer records and go to the transfers table."""
_TRANSFER_KEYS = frozenset({"du", "bytes", "seconds", "source", "destination", "ok", "category", "cu", "run"})
DEFAULT_BATCH_SIZE = 2000
_EVENT_COLUMNS = ("source", "cursor", "entity", "entity_id", "from_state", "to_state", "time", "pilot", "attempt",
                  "detail")
"""The columns :meth:`HistoryWriter._insert_events` writes (``detail`` last: JSON)."""


def source_id(coordination: Coordination) -> str:
    """The stable identity of a coordination stream: ``"<namespace>@<backend URL, password hidden>"``."""
    return f"{coordination.namespace}@{redact_url(coordination.url)}"


class HistoryWriter:
    """Drains one coordination namespace's event stream into a :class:`History`.

    Any number of writers (threads or processes) may drain the same stream into the same history:
    each event is stored once. ``batch_size`` events are read and stored per transaction.
    """

    def __init__(
        self,
        coordination: Coordination,
        history: History | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.coordination = coordination
        self.history = history if history is not None else History()
        self.batch_size = batch_size
        self.source: str = source_id(coordination)
        """This stream's ``source`` value in every row the writer stores."""
        self._lookup = CoordinationLookup(coordination)
        self._index_ready = False

    def ensure_index(self) -> bool:
        """Build this source's index tables from the stored events if they are missing or outdated
        (a history written by an older pilot-data); True if they were rebuilt."""
        if self._index_ready:
            return False
        query = select(IndexMark.version).where(IndexMark.source == self.source)
        with self.history.read("read the index version") as conn:
            ready = conn.execute(query).scalar_one_or_none() == _INDEX_VERSION
        rebuilt = False
        if not ready:
            with self.history.write(f"rebuild the index of {self.source}") as conn:
                self.history.lock(conn)
                rebuilt = ensure_index(conn, self.source, self._lookup)
        self._index_ready = True
        return rebuilt

    def stored_cursor(self) -> str | None:
        """The cursor up to which this source's events are stored (``None``: nothing stored yet)."""
        query = (
            select(DrainMark.cursor)
            .where(DrainMark.source == self.source)
            .order_by(DrainMark.id.desc())
            .limit(1)
        )
        with self.history.read("read the last stored cursor") as conn:
            return conn.execute(query).scalar_one_or_none()

    def drain(self, limit: int | None = None, *, trim: bool = False) -> int:
        """Store the events not stored yet (at most ``limit`` of them); return how many rows are new.

        Resumes after :meth:`stored_cursor`, so a new writer (after a restart) continues where the last
        one stopped. With ``trim``, the coordination stream is then trimmed up to what is stored.
        Raises :class:`CoordinationError` / :class:`HistoryError` if either side fails; what was
        committed before the failure stays, and the next drain continues from there.
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        self.ensure_index()
        cursor = self.stored_cursor()
        new = seen = 0
        while limit is None or seen < limit:
            want = self.batch_size if limit is None else min(self.batch_size, limit - seen)
            events = self.coordination.events_after(cursor, limit=want)
            if not events:
                break
            new += self.store(events)
            cursor = events[-1].cursor
            seen += len(events)
            if len(events) < want:
                break
        if trim and cursor is not None:
            self.coordination.trim_events(cursor)
        return new

    def run(
        self, stop_event: threading.Event, interval: float = 1.0, *, trim: bool = False, batch_window: float = 0.1
    ) -> int:
        """Drain continuously until ``stop_event`` is set; return the number of new rows stored.

        Waits for new events with the backend's blocking read (``events_after(block=interval)``);
        ``interval`` bounds how long a stop request waits. After a small batch it lets ``batch_window``
        seconds of events gather before the next read, so a busy stream is written in a few large
        transactions rather than one commit per handful of events. A failing backend or database is
        logged and retried every ``interval`` seconds. After the stop request, whatever is left in the
        stream is drained once more.
        """
        total = 0
        cursor: str | None = None
        resume = True
        while not stop_event.is_set():
            try:
                if resume:
                    self.ensure_index()
                    cursor = self.stored_cursor()
                    resume = False
                events = self.coordination.events_after(cursor, limit=self.batch_size, block=interval)
                if events:
                    total += self.store(events)
                    cursor = events[-1].cursor
                    if trim:
                        self.coordination.trim_events(cursor)
                    if len(events) < self.batch_size:
                        stop_event.wait(batch_window)
            except (CoordinationError, HistoryError) as exc:
                log.warning("history writer for %s: %s; retrying in %.1f s", self.source, exc, interval)
                resume = True
                stop_event.wait(interval)
        try:
            total += self.drain(trim=trim)
        except (CoordinationError, HistoryError) as exc:
            log.warning("history writer for %s: final drain failed: %s", self.source, exc)
        return total

    def store(self, events: Sequence[CoordinationEvent]) -> int:
        """Insert ``events`` in one transaction; return how many rows were new (stored ones are skipped).

        ``events`` must be a contiguous run of this source's stream, in stream order, that starts no
        later than the event right after :meth:`stored_cursor` (what ``events_after`` returns from a
        stored cursor): this keeps the stored events a prefix of the stream, which resuming relies on.
        """
        if not events:
            return 0
        event_rows: list[dict[str, Any]] = []
        transfer_rows: list[dict[str, Any]] = []
        for ev in events:
            row = self._transfer_row(ev) if ev.entity == TRANSFER_ENTITY else None
            if row is not None:
                transfer_rows.append(row)
            else:
                event_rows.append(self._event_row(ev))
        with self.history.write(f"store {len(events)} events of {self.source}") as conn:
            self.history.lock(conn)
            if not self._index_ready:
                ensure_index(conn, self.source, self._lookup)
                self._index_ready = True
            new = 0
            if event_rows:
                if self._none_stored(conn, events):  # the usual case: one plain executemany
                    self._insert_events(conn, event_rows)
                    fresh = event_rows
                else:  # a batch drained before (in part): learn which rows are new
                    stmt = self._insert_ignore(Event).returning(Event.cursor)
                    columns = [{k: v for k, v in r.items() if k != "detail_text"} for r in event_rows]
                    stored = set(conn.execute(stmt, columns).scalars())
                    fresh = [r for r in event_rows if r["cursor"] in stored]
                new += len(fresh)
                fold(conn, self.source, fresh, self._lookup)
            if transfer_rows:
                self._fill_runs(conn, transfer_rows)
                stmt = self._insert_ignore(Transfer).returning(Transfer.id)
                new += len(conn.execute(stmt, transfer_rows).all())
            if new:
                mark = {"source": self.source, "cursor": events[-1].cursor, "time": now(), "rows": new}
                conn.execute(insert(DrainMark).values(**mark))
        return new

    # ----------------------------------------------------------------- rows
    def _none_stored(self, conn: Any, events: Sequence[CoordinationEvent]) -> bool:
        """Whether no event of this batch is stored yet: neither its first nor its last one is.

        That is enough: the stored events of a source are a prefix of its stream and a batch starts no
        later than right after it (:meth:`store`), so a batch whose first event is not stored has none
        stored; the last one is asked too, as a guard. Two index lookups instead of a RETURNING of every row.
        """
        cursors = list({events[0].cursor, events[-1].cursor})
        for table in (Event, Transfer):
            query = select(table.id).where(table.source == self.source, table.cursor.in_(cursors)).limit(1)
            if conn.execute(query).first() is not None:
                return False
        return True

    def _insert_events(self, conn: Any, rows: list[dict[str, Any]]) -> None:
        """Insert event rows straight through the DB-API (no per-row SQLAlchemy processing); a row whose
        (source, cursor) is stored already is skipped, as in :meth:`_insert_ignore`."""
        quote = conn.dialect.identifier_preparer.quote
        postgres = self.history.dialect == "postgresql"
        mark = "%s" if postgres else "?"
        marks = [mark] * len(_EVENT_COLUMNS)
        marks[-1] = f"CAST({mark} AS JSONB)" if postgres else mark
        sql = (f"INSERT INTO {quote(Event.__tablename__)} ({', '.join(quote(c) for c in _EVENT_COLUMNS)}) "
               f"VALUES ({', '.join(marks)}) ON CONFLICT ({quote('source')}, {quote('cursor')}) DO NOTHING")
        dumps = json.dumps
        conn.exec_driver_sql(sql, [(r["source"], r["cursor"], r["entity"], r["entity_id"], r["from_state"],
                                    r["to_state"], r["time"], r["pilot"], r["attempt"],
                                    r["detail_text"] if r["detail_text"] is not None else dumps(r["detail"]))
                                   for r in rows])

    def _fill_runs(self, conn: Any, rows: list[dict[str, Any]]) -> None:
        """Give transfer rows made for a CU the CU's run, as the index knows it (folded just before)."""
        cus = sorted({r["cu"] for r in rows if r["cu"] and not r["run"]})
        if not cus:
            return
        runs: dict[str, str | None] = {}
        for start in range(0, len(cus), 500):
            query = select(CURow.cu_id, CURow.run).where(CURow.source == self.source,
                                                         CURow.cu_id.in_(cus[start:start + 500]))
            runs.update({cu: run for cu, run in conn.execute(query)})
        for row in rows:
            if row["cu"] and not row["run"]:
                row["run"] = runs.get(row["cu"])

    def _insert_ignore(self, table: type[Event] | type[Transfer]) -> Insert:
        """``INSERT ... ON CONFLICT (source, cursor) DO NOTHING`` in the history's dialect."""
        if self.history.dialect == "postgresql":
            return pg_insert(table).on_conflict_do_nothing(index_elements=["source", "cursor"])
        return sqlite_insert(table).on_conflict_do_nothing(index_elements=["source", "cursor"])

    def _event_row(self, ev: CoordinationEvent) -> dict[str, Any]:
        return {
            "source": self.source,
            "cursor": ev.cursor,
            "entity": ev.entity,
            "entity_id": ev.id,
            "from_state": ev.from_state,
            "to_state": ev.to_state,
            "time": ev.time,
            "pilot": ev.pilot,
            "attempt": ev.attempt,
            "detail": dict(ev.detail),
            "detail_text": ev.detail_text,  # stored as the stream holds it: no second encoding
        }

    def _transfer_row(self, ev: CoordinationEvent) -> dict[str, Any] | None:
        """The transfers-table row of a transfer record, or ``None`` if it is malformed.

        A malformed record (no numeric ``bytes``/``seconds``) is stored as an ordinary event instead,
        so that it is neither lost nor able to stop the writer.
        """
        detail: Mapping[str, Any] = ev.detail
        try:
            nbytes = int(detail["bytes"])
            seconds = float(detail["seconds"])
        except (KeyError, TypeError, ValueError):
            nbytes, seconds = -1, math.nan
        if nbytes < 0 or not math.isfinite(seconds) or seconds < 0:
            log.warning(
                "history writer for %s: transfer record at cursor %s has no valid bytes/seconds; "
                "stored as an event", self.source, ev.cursor,
            )
            return None
        source_url, destination_url = _url_or_none(detail.get("source")), _url_or_none(detail.get("destination"))
        category = transfer_category(dict(detail), source_url or "", destination_url or "")
        return {
            "source": self.source,
            "cursor": ev.cursor,
            "du": str(detail.get("du") or ev.id),
            "bytes": nbytes,
            "seconds": seconds,
            "source_url": source_url,
            "destination_url": destination_url,
            "pilot": ev.pilot,
            "time": ev.time,
            "ok": bool(detail.get("ok", True)),
            "category": category.value,
            "cu": _str_or_none(detail.get("cu")),
            "run": _str_or_none(detail.get("run")),
            "detail": {k: v for k, v in detail.items() if k not in _TRANSFER_KEYS},
        }


def _str_or_none(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def _url_or_none(value: object) -> str | None:
    return None if value is None else redact_url(str(value))
