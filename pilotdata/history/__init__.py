"""The SQL history: an append-only record of every state transition and transfer.

The coordination backends keep only a bounded event stream; :class:`HistoryWriter` drains it into SQL
(SQLite file by default, PostgreSQL by URL) so that ``pdata history``, ``pdata report`` and the placement
bandwidth model can learn from the past. See ``docs/history.md``.

* :mod:`.models`: the schema (:class:`Event`, :class:`Transfer`, :class:`DrainMark`) and :class:`History`.
* :mod:`.writer`: :class:`HistoryWriter`, the idempotent drain.
* :mod:`.queries`: read helpers returning plain dataclasses.

Typical use::

    from pilotdata.coordination import connect
    from pilotdata.history import History, HistoryWriter, queries

    history = History()                      # PDATA_HISTORY_URL or the SQLite file
    HistoryWriter(connect(), history).drain()
    queries.completions(history, "cu-1")
"""

from __future__ import annotations

from pilotdata.history import queries
from pilotdata.history.models import DrainMark, Event, History, Transfer
from pilotdata.history.queries import (
    BandwidthSample,
    CUTimeline,
    EventRecord,
    TransferRecord,
    bandwidth_samples,
    completions,
    cu_timeline,
    events,
    events_for,
    sources,
    transfers,
)
from pilotdata.history.writer import TRANSFER_ENTITY, HistoryWriter, source_id
from pilotdata.redaction import redact_url

__all__ = [
    "TRANSFER_ENTITY",
    "BandwidthSample",
    "CUTimeline",
    "DrainMark",
    "Event",
    "EventRecord",
    "History",
    "HistoryWriter",
    "Transfer",
    "TransferRecord",
    "bandwidth_samples",
    "completions",
    "cu_timeline",
    "events",
    "events_for",
    "queries",
    "redact_url",
    "source_id",
    "sources",
    "transfers",
]
