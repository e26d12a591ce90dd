"""Read helpers over the history, for ``pdata history``, ``pdata report`` and the placement model.

Every function takes the :class:`~pilotdata.history.models.History` first and returns plain frozen
dataclasses (no ORM objects, no open session). Time filters are epoch seconds: ``since`` is inclusive,
``until`` exclusive. ``source`` restricts results to one coordination stream (see
:func:`pilotdata.history.writer.source_id`); ``None`` means every stream stored in this database.
Results are ordered by time (then by insertion order).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from pilotdata.history.models import DrainMark, Event, History, Transfer
from pilotdata.records import MOVED_CATEGORIES
from pilotdata.states import ComputeUnitState, Kind

__all__ = [
    "BandwidthSample",
    "CUTimeline",
    "EventRecord",
    "TransferRecord",
    "bandwidth_samples",
    "completions",
    "cu_timeline",
    "events",
    "events_for",
    "sources",
    "transfers",
]


@dataclass(frozen=True)
class EventRecord:
    """One stored event (a state transition when ``to_state`` is set)."""

    id: int
    source: str
    cursor: str
    entity: str
    entity_id: str
    from_state: str | None
    to_state: str | None
    time: float
    pilot: str | None
    attempt: int
    detail: dict[str, Any]


@dataclass(frozen=True)
class TransferRecord:
    """One stored transfer record."""

    id: int
    source: str
    cursor: str
    du: str
    bytes: int
    seconds: float
    source_url: str | None
    destination_url: str | None
    pilot: str | None
    time: float
    ok: bool
    detail: dict[str, Any]
    category: str | None = None
    """The byte category (:class:`pilotdata.records.ByteCategory` value)."""
    cu: str | None = None
    """The ComputeUnit the bytes were moved for."""
    run: str | None = None

    @property
    def bytes_per_second(self) -> float | None:
        """Achieved bandwidth, ``None`` when ``seconds`` is 0."""
        return self.bytes / self.seconds if self.seconds > 0 else None


@dataclass(frozen=True)
class BandwidthSample:
    """Successful transfers between one (source, destination) pair, summed."""

    source_url: str | None
    destination_url: str | None
    bytes: int
    seconds: float
    transfers: int

    @property
    def bytes_per_second(self) -> float:
        """Aggregate bandwidth: total bytes / total seconds."""
        return self.bytes / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class CUTimeline:
    """The life of one ComputeUnit as recorded: who ran it, how often, and when it entered each state."""

    source: str
    cu_id: str
    pilot: str | None
    """The last pilot that moved it (``None`` if no pilot ever did)."""
    attempt: int
    """Its attempt counter after the last recorded transition."""
    state: str
    """The last state recorded."""
    times: dict[str, float] = field(default_factory=dict)
    """State -> time it last entered that state (a retried CU keeps its latest Pending, Running, ...)."""
    first: float = 0.0
    """Time of its first recorded event (normally its creation)."""

    @property
    def last(self) -> float:
        """Time of its last recorded transition."""
        return max(self.times.values(), default=self.first)


def _event_record(row: Event) -> EventRecord:
    return EventRecord(
        row.id, row.source, row.cursor, row.entity, row.entity_id, row.from_state, row.to_state,
        row.time, row.pilot, row.attempt, dict(row.detail or {}),
    )


def _transfer_record(row: Transfer) -> TransferRecord:
    return TransferRecord(
        row.id, row.source, row.cursor, row.du, row.bytes, row.seconds, row.source_url,
        row.destination_url, row.pilot, row.time, bool(row.ok), dict(row.detail or {}), row.category, row.cu, row.run,
    )


def events_for(
    history: History, entity: str, entity_id: str, *, source: str | None = None
) -> list[EventRecord]:
    """Every event of one entity (``entity`` is ``cu``, ``pilot``, ``du`` or a record type), oldest first."""
    query = select(Event).where(Event.entity == str(entity), Event.entity_id == entity_id)
    if source is not None:
        query = query.where(Event.source == source)
    query = query.order_by(Event.time, Event.id)
    return _fetch_events(history, query, f"read events of {entity} {entity_id}")


def events(
    history: History,
    *,
    since: float | None = None,
    until: float | None = None,
    entity: str | None = None,
    state: str | None = None,
    pilot: str | None = None,
    source: str | None = None,
    limit: int | None = None,
    newest_first: bool = False,
) -> list[EventRecord]:
    """Events matching every filter given (``state`` matches the state moved *to*).

    Oldest first, or newest first with ``newest_first``; ``limit`` keeps the first ``limit`` in that order.
    """
    query = select(Event)
    if since is not None:
        query = query.where(Event.time >= since)
    if until is not None:
        query = query.where(Event.time < until)
    if entity is not None:
        query = query.where(Event.entity == str(entity))
    if state is not None:
        query = query.where(Event.to_state == str(state))
    if pilot is not None:
        query = query.where(Event.pilot == pilot)
    if source is not None:
        query = query.where(Event.source == source)
    order = (Event.time.desc(), Event.id.desc()) if newest_first else (Event.time, Event.id)
    query = query.order_by(*order)
    if limit is not None:
        query = query.limit(limit)
    return _fetch_events(history, query, "read events")


def transfers(
    history: History,
    *,
    since: float | None = None,
    until: float | None = None,
    du: str | None = None,
    pilot: str | None = None,
    ok: bool | None = None,
    source: str | None = None,
    limit: int | None = None,
    newest_first: bool = False,
) -> list[TransferRecord]:
    """Transfer records matching every filter given, oldest first (or newest first)."""
    query = select(Transfer)
    if since is not None:
        query = query.where(Transfer.time >= since)
    if until is not None:
        query = query.where(Transfer.time < until)
    if du is not None:
        query = query.where(Transfer.du == du)
    if pilot is not None:
        query = query.where(Transfer.pilot == pilot)
    if ok is not None:
        query = query.where(Transfer.ok == ok)
    if source is not None:
        query = query.where(Transfer.source == source)
    order = (Transfer.time.desc(), Transfer.id.desc()) if newest_first else (Transfer.time, Transfer.id)
    query = query.order_by(*order)
    if limit is not None:
        query = query.limit(limit)
    with history.read("read transfers") as conn, Session(bind=conn) as session:
        return [_transfer_record(row) for row in session.scalars(query)]


def completions(history: History, cu_id: str, *, source: str | None = None) -> int:
    """How many times ComputeUnit ``cu_id`` was recorded entering Done (1 if it completed, never more)."""
    query = select(func.count(Event.id)).where(
        Event.entity == Kind.CU.value, Event.entity_id == cu_id, Event.to_state == ComputeUnitState.DONE.value
    )
    if source is not None:
        query = query.where(Event.source == source)
    with history.read(f"count completions of {cu_id}") as conn:
        return int(conn.execute(query).scalar_one())


def bandwidth_samples(
    history: History, *, since: float | None = None, source: str | None = None
) -> list[BandwidthSample]:
    """Total bytes and seconds of successful, timed transfers per (source URL, destination URL) pair.

    This is the evidence the placement bandwidth model learns from; pairs are sorted by URL. Links and
    cache hits moved no bytes over any network and are left out.
    """
    query = (
        select(
            Transfer.source_url,
            Transfer.destination_url,
            func.sum(Transfer.bytes),
            func.sum(Transfer.seconds),
            func.count(Transfer.id),
        )
        .where(Transfer.ok.is_(True), Transfer.seconds > 0,
               or_(Transfer.category.is_(None), Transfer.category.in_([c.value for c in MOVED_CATEGORIES])))
        .group_by(Transfer.source_url, Transfer.destination_url)
        .order_by(Transfer.source_url, Transfer.destination_url)
    )
    if since is not None:
        query = query.where(Transfer.time >= since)
    if source is not None:
        query = query.where(Transfer.source == source)
    with history.read("read bandwidth samples") as conn:
        return [
            BandwidthSample(src, dst, int(nbytes), float(seconds), int(count))
            for src, dst, nbytes, seconds, count in conn.execute(query)
        ]


def cu_timeline(
    history: History,
    cu_ids: Iterable[str] | None = None,
    *,
    since: float | None = None,
    until: float | None = None,
    source: str | None = None,
) -> list[CUTimeline]:
    """Per ComputeUnit: its pilot, attempt, last state and the time it entered each state.

    Built from the CU transitions recorded between ``since`` and ``until`` (all of them by default),
    for ``cu_ids`` (all CUs by default); sorted by first recorded event.
    """
    query = select(Event).where(Event.entity == Kind.CU.value, Event.to_state.is_not(None))
    ids = None if cu_ids is None else sorted(set(cu_ids))
    if ids is not None:
        if not ids:
            return []
        query = query.where(Event.entity_id.in_(ids))
    if since is not None:
        query = query.where(Event.time >= since)
    if until is not None:
        query = query.where(Event.time < until)
    if source is not None:
        query = query.where(Event.source == source)
    rows = _fetch_events(history, query.order_by(Event.time, Event.id), "read CU timelines")
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    for ev in rows:
        fresh: dict[str, Any] = {"pilot": None, "attempt": 0, "state": "", "times": {}, "first": ev.time}
        entry = acc.setdefault((ev.source, ev.entity_id), fresh)
        if ev.pilot is not None:
            entry["pilot"] = ev.pilot
        entry["attempt"] = ev.attempt
        entry["state"] = ev.to_state or entry["state"]
        if ev.to_state is not None:
            entry["times"][ev.to_state] = ev.time
    return [
        CUTimeline(src, cu, e["pilot"], e["attempt"], e["state"], e["times"], e["first"])
        for (src, cu), e in acc.items()
    ]


def sources(history: History) -> list[str]:
    """Every coordination stream (source) with something stored in this history, sorted."""
    with history.read("list sources") as conn:
        return sorted(conn.execute(select(DrainMark.source).distinct()).scalars())


# --------------------------------------------------------------------------- internals
def _fetch_events(history: History, query: Select[Any], action: str) -> list[EventRecord]:
    with history.read(action) as conn, Session(bind=conn) as session:
        return [_event_record(row) for row in session.scalars(query)]
