"""The history's index: the current view of every ComputeUnit, pilot and run, folded from its events.

The event and transfer tables (:mod:`.models`) are the record; these tables are derived from them so
that listing, filtering and counting stay index-backed SQL at 100,000 ComputeUnits (never a walk
over every CU or every event). :class:`~pilotdata.history.HistoryWriter` folds each batch of new
events into them in the same transaction that stores the batch (:func:`fold`), so the index always
matches the stored events; writers are serialised (:meth:`History.lock`), so folds apply in stream
order. An index that is missing or of an older :data:`INDEX_VERSION` is rebuilt from the stored
events of its source (:func:`ensure_index`).

``history_cus`` (:class:`CURow`), one row per ComputeUnit:

* ``state``, ``attempt``, the time it last entered each state (``t_pending`` ... ``t_end``),
  ``exit_code`` and ``reason`` of its last ending or retry, the ``host`` it ran on;
* ``place``: where it is or was: the pilot whose queue it waits on or that runs or ran it, ``""`` for
  the shared queue, ``None`` while it was never bound. A Pending CU is placed by its bind (the
  detail's ``pilot``; none: the shared queue); a requeue or retry puts it on the shared queue; a pilot
  that ends sends the Pending CUs still placed on it to the shared queue (which is where
  ``requeue_lost`` and the agent's shutdown put them). A move by a pilot (claim, run, end) places it on
  that pilot. ``site`` is that pilot's site (``datacenter/machine`` labels);
* ``run``, ``name`` and ``slots``, from the CU's creation event (which carries them), or for an older
  stream whose creation events do not, read from the CU's coordination record when the index first
  sees it (``None`` if the record was already gone).

``history_pilots`` (:class:`PilotRow`) and ``history_runs`` (:class:`RunRow`) likewise; pilots carry
their labels, site, slots, resource and the times of their states (their lifetime), runs who started
them and when they were closed or removed (``pdata gc``).

Counters kept by the same fold, so that what a refreshing view asks costs a read of a few rows:
``history_cu_counts`` (:class:`CountRow`: CUs per run, place and state), ``history_cu_ends``
(:class:`EndRow`: CUs that ended per run, minute and state) and ``history_run_stats``
(:class:`RunStatsRow`: per run the first submission, first start, last end, and the sums behind the
mean queue wait, the mean run time and the busy slot-seconds). ``history_index_marks``
(:class:`IndexMark`) records the index version of each source.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Protocol

from sqlalchemy import JSON, Connection, Double, Index, Integer, String, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, mapped_column

from pilotdata.coordination import Coordination
from pilotdata.coordination.base import now
from pilotdata.descriptions import site_of
from pilotdata.history.models import Base, Event, Transfer
from pilotdata.records import DESCRIPTION, RUN
from pilotdata.states import FINAL_STATES, ComputeUnitState, Kind, PilotState, is_final

__all__ = ["INDEX_VERSION", "UNBOUND", "CURow", "CoordinationLookup", "CountRow", "EndRow", "IndexMark", "Lookup",
           "PilotRow", "RunRow", "RunStatsRow", "ensure_index", "fold", "rebuild", "site_text"]

INDEX_VERSION = 2
"""Bumped when the fold changes; an index of another version is rebuilt from the stored events."""
UNBOUND = "(unbound)"
"""The ``place`` of the counters for CUs never bound (New, or failed at binding)."""

_JSON = JSON().with_variant(JSONB(), "postgresql")
_S = ComputeUnitState
_STATE_TIME = {_S.PENDING.value: "t_pending", _S.STAGING_INPUT.value: "t_staging_input",
               _S.RUNNING.value: "t_running", _S.STAGING_OUTPUT.value: "t_staging_output"}
_REBUILD_CHUNK = 5000
_CREATION_FACTS = frozenset({"run", "name", "slots"})
"""The keys of a CU's creation event detail (:meth:`Coordination.create_many`)."""
_ACTIVE = frozenset({_S.STAGING_INPUT.value, _S.RUNNING.value, _S.STAGING_OUTPUT.value})
# the enum values the fold compares with for every event, looked up once (an enum's .value is a descriptor call)
_CU, _PILOT, _RUN = Kind.CU.value, Kind.PILOT.value, Kind.RUN.value
_FOLDED = frozenset({_CU, _PILOT, _RUN})
_PENDING, _DONE = _S.PENDING.value, _S.DONE.value
_LEFT_QUEUE = frozenset({_S.STAGING_INPUT.value, _S.RUNNING.value})
_FINAL = frozenset(FINAL_STATES)


class CURow(Base):
    """The current view of one ComputeUnit (see the module docstring)."""

    __tablename__ = "history_cus"
    __table_args__ = (
        Index("ix_history_cus_run", "source", "run", "state", "place", "site"),
        Index("ix_history_cus_state", "source", "state", "place", "site"),
        Index("ix_history_cus_run_created", "source", "run", "created"),
        Index("ix_history_cus_created", "source", "created"),
        Index("ix_history_cus_name", "source", "name"),
        Index("ix_history_cus_run_end", "source", "run", "t_end"),
    )

    source: Mapped[str] = mapped_column(String, primary_key=True)
    cu_id: Mapped[str] = mapped_column(String, primary_key=True)
    run: Mapped[str | None] = mapped_column(String, nullable=True)
    name: Mapped[str | None] = mapped_column(String, nullable=True)
    state: Mapped[str] = mapped_column(String)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    place: Mapped[str | None] = mapped_column(String, nullable=True)
    """Pilot id it waits on / runs / ran on; ``""`` the shared queue; ``None`` never bound."""
    pilot: Mapped[str | None] = mapped_column(String, nullable=True)
    """The last pilot that moved it (claimed, ran, ended it)."""
    site: Mapped[str | None] = mapped_column(String, nullable=True)
    """The site of ``place`` (``datacenter/machine``), when ``place`` is a pilot with labels."""
    created: Mapped[float] = mapped_column(Double)
    updated: Mapped[float] = mapped_column(Double)
    t_pending: Mapped[float | None] = mapped_column(Double, nullable=True)
    t_staging_input: Mapped[float | None] = mapped_column(Double, nullable=True)
    t_running: Mapped[float | None] = mapped_column(Double, nullable=True)
    t_staging_output: Mapped[float | None] = mapped_column(Double, nullable=True)
    t_end: Mapped[float | None] = mapped_column(Double, nullable=True)
    """When it entered its final state."""
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str | None] = mapped_column(String, nullable=True)
    host: Mapped[str | None] = mapped_column(String, nullable=True)
    slots: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Slots it takes (``number_of_processes``)."""


class PilotRow(Base):
    """The current view of one pilot: state, site, slots and the times of its states."""

    __tablename__ = "history_pilots"

    source: Mapped[str] = mapped_column(String, primary_key=True)
    pilot_id: Mapped[str] = mapped_column(String, primary_key=True)
    state: Mapped[str] = mapped_column(String)
    site: Mapped[str | None] = mapped_column(String, nullable=True)
    labels: Mapped[dict[str, Any]] = mapped_column(_JSON, default=dict)
    slots: Mapped[int | None] = mapped_column(Integer, nullable=True)
    resource: Mapped[str | None] = mapped_column(String, nullable=True)
    walltime: Mapped[float | None] = mapped_column(Double, nullable=True)
    """Minutes, as described."""
    created: Mapped[float] = mapped_column(Double)
    t_pending: Mapped[float | None] = mapped_column(Double, nullable=True)
    t_running: Mapped[float | None] = mapped_column(Double, nullable=True)
    t_end: Mapped[float | None] = mapped_column(Double, nullable=True)
    reason: Mapped[str | None] = mapped_column(String, nullable=True)


class RunRow(Base):
    """One run: who started it, when, and when it was closed or removed."""

    __tablename__ = "history_runs"

    source: Mapped[str] = mapped_column(String, primary_key=True)
    run_id: Mapped[str] = mapped_column(String, primary_key=True)
    origin: Mapped[str | None] = mapped_column(String, nullable=True)
    cds: Mapped[str | None] = mapped_column(String, nullable=True)
    parent: Mapped[str | None] = mapped_column(String, nullable=True)
    created: Mapped[float] = mapped_column(Double)
    closed: Mapped[float | None] = mapped_column(Double, nullable=True)
    removed: Mapped[float | None] = mapped_column(Double, nullable=True)


class CountRow(Base):
    """How many ComputeUnits of a run are in a state at a place: the counters behind ``pdata status``.

    Kept by the fold with every CU it moves (one decrement, one increment), so counting is one read of
    a few rows however many CUs there are. ``run`` is ``""`` for CUs of no run; ``place`` is a pilot
    id, ``""`` (the shared queue) or :data:`UNBOUND`.
    """

    __tablename__ = "history_cu_counts"

    source: Mapped[str] = mapped_column(String, primary_key=True)
    run: Mapped[str] = mapped_column(String, primary_key=True)
    place: Mapped[str] = mapped_column(String, primary_key=True)
    state: Mapped[str] = mapped_column(String, primary_key=True)
    n: Mapped[int] = mapped_column(Integer)


class EndRow(Base):
    """How many ComputeUnits of a run ended in a state during one minute (the throughput over time)."""

    __tablename__ = "history_cu_ends"

    source: Mapped[str] = mapped_column(String, primary_key=True)
    run: Mapped[str] = mapped_column(String, primary_key=True)
    minute: Mapped[int] = mapped_column(Integer, primary_key=True)
    """``floor(end time / 60)``."""
    state: Mapped[str] = mapped_column(String, primary_key=True)
    n: Mapped[int] = mapped_column(Integer)


class RunStatsRow(Base):
    """Running aggregates of a run's ComputeUnits, kept by the fold (``run`` ``""``: CUs of no run)."""

    __tablename__ = "history_run_stats"

    source: Mapped[str] = mapped_column(String, primary_key=True)
    run: Mapped[str] = mapped_column(String, primary_key=True)
    first_submit: Mapped[float | None] = mapped_column(Double, nullable=True)
    first_start: Mapped[float | None] = mapped_column(Double, nullable=True)
    last_end: Mapped[float | None] = mapped_column(Double, nullable=True)
    last_update: Mapped[float | None] = mapped_column(Double, nullable=True)
    starts: Mapped[int] = mapped_column(Integer, default=0)
    """Attempts that left the queue (their waits are summed in ``wait_sum``)."""
    wait_sum: Mapped[float] = mapped_column(Double, default=0.0)
    runs: Mapped[int] = mapped_column(Integer, default=0)
    """Attempts that started and ended (their durations are summed in ``run_sum``)."""
    run_sum: Mapped[float] = mapped_column(Double, default=0.0)
    busy_sum: Mapped[float] = mapped_column(Double, default=0.0)
    """Slot-seconds: the durations of ended attempts times their slots (1 when unknown)."""


class IndexMark(Base):
    """The index version folded for one source."""

    __tablename__ = "history_index_marks"

    source: Mapped[str] = mapped_column(String, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    time: Mapped[float] = mapped_column(Double)


def site_text(labels: Mapping[str, Any] | None) -> str | None:
    """``"site-a/node-1"`` from affinity labels (``None`` without any)."""
    path = site_of(dict(labels or {}))
    return "/".join(path) if path else None


# ------------------------------------------------------------------ static facts from coordination
class Lookup(Protocol):
    """Where the fold reads what events do not carry (a CU's run and name, a pilot's labels)."""

    def cus(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """``{cu id: {"run", "name", "slots"}}`` for the CUs that still exist."""

    def pilots(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """``{pilot id: {"labels", "slots", "resource", "walltime"}}``."""

    def runs(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """``{run id: {"origin", "cds", "parent", "closed"}}``."""


class CoordinationLookup:
    """:class:`Lookup` by batch reads of one coordination namespace."""

    def __init__(self, coord: Coordination) -> None:
        self.coord = coord

    def cus(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Run, name and slots of each CU that still exists."""
        out: dict[str, dict[str, Any]] = {}
        for rec in self.coord.get_many(Kind.CU, list(ids)):
            if rec is not None:
                desc = rec.data.get(DESCRIPTION)
                desc = desc if isinstance(desc, dict) else {}
                out[rec.id] = {"run": rec.data.get(RUN), "name": desc.get("name"),
                               "slots": desc.get("number_of_processes")}
        return out

    def pilots(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Labels, slots, resource and walltime of each pilot that still exists."""
        out: dict[str, dict[str, Any]] = {}
        for rec in self.coord.get_many(Kind.PILOT, list(ids)):
            if rec is not None:
                desc = rec.data.get(DESCRIPTION) or {}
                labels = rec.data.get("labels") or desc.get("labels") or {}
                out[rec.id] = {"labels": dict(labels), "slots": rec.data.get("slots") or desc.get(
                    "number_of_processes"), "resource": desc.get("service_url"), "walltime": desc.get("walltime")}
        return out

    def runs(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Origin, CDS, parent and closing time of each run that still exists."""
        return {rec.id: dict(rec.data) for rec in self.coord.get_many(Kind.RUN, list(ids)) if rec is not None}


class _NoLookup:
    def cus(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {}

    def pilots(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {}

    def runs(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {}


_CU_COLUMNS = tuple(c.name for c in CURow.__table__.columns)
"""The CU table's columns, in table order (the order of :attr:`_Fold.stored`'s tuples)."""
_CU_VALUES = itemgetter(*_CU_COLUMNS)
"""A CU row's values in table order."""


# ------------------------------------------------------------------ the fold
_Key = tuple[str, str, str]  # (run or "", place or UNBOUND, state): one counter


def _key(row: Mapping[str, Any]) -> _Key:
    place = row["place"]
    return (row["run"] or "", UNBOUND if place is None else place, row["state"])


@dataclass
class _Fold:
    conn: Connection
    source: str
    lookup: Lookup
    dialect: str

    def __post_init__(self) -> None:
        self.cus: dict[str, dict[str, Any]] = {}
        self.before: dict[str, _Key | None] = {}
        """CU id -> its counter key as stored before this fold touched it (``None``: a new CU)."""
        self.stored: dict[str, tuple[Any, ...]] = {}
        """CU id -> its row as it is in the table now (columns in table order), for CUs read from it or
        written by this fold: :meth:`flush` updates only the columns that changed."""
        self.pilots: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.stats: dict[str, dict[str, Any]] = {}
        self.ends: dict[tuple[str, int, str], int] = {}
        self.dirty_cus: set[str] = set()
        self.dirty_pilots: set[str] = set()
        self.dirty_runs: set[str] = set()
        self.static: dict[str, dict[str, Any]] = {}
        """Run, name and slots of CUs the index sees for the first time (from the lookup)."""
        self.pilot_facts: dict[str, dict[str, Any]] = {}
        """Labels, slots, ... of pilots the index sees for the first time (from the lookup)."""

    # ------------------------------------------------------------ loading
    def load(self, events: Sequence[Mapping[str, Any]]) -> None:
        first: dict[str, bool] = {}  # CU id -> whether its first event here is its creation
        for e in events:
            if e["entity"] == _CU and e["entity_id"] not in first:
                first[e["entity_id"]] = e["from_state"] is None and e["to_state"] is not None
        cu_ids = sorted(first)
        created_here = {i for i in cu_ids if first[i]}  # new to the index: nothing to read
        pilot_ids = {e["entity_id"] for e in events if e["entity"] == _PILOT}
        pilot_ids |= {e["pilot"] for e in events if e["pilot"]}
        pilot_ids |= {str(e["detail"].get("pilot")) for e in events
                      if e["entity"] == _CU and e["detail"].get("pilot")}
        run_ids = sorted({e["entity_id"] for e in events if e["entity"] == _RUN})
        self._load_cus([i for i in cu_ids if i not in created_here])
        self._load_pilots(sorted(pilot_ids))
        for chunk in _chunks(run_ids):
            for row in self.conn.execute(select(RunRow.__table__).where(
                    RunRow.source == self.source, RunRow.run_id.in_(chunk))).mappings():
                self.runs[row["run_id"]] = dict(row)
        for e in events:  # a creation event carries the CU's run, name and slots (streams since 2026-12)
            if (e["entity"] == _CU and e["from_state"] is None and e["entity_id"] in created_here
                    and e["detail"].keys() >= _CREATION_FACTS):
                detail = e["detail"]
                self.static[e["entity_id"]] = {"run": detail["run"], "name": detail["name"], "slots": detail["slots"]}
        missing = [i for i in cu_ids if i not in self.cus and i not in self.static]
        if missing:  # older streams: read them from the CUs' records
            self.static.update(self.lookup.cus(missing))

    def _load_cus(self, ids: Sequence[str]) -> None:
        """The stored rows of these CUs, read straight through the DB-API (the CU table has no JSON column;
        this is most of the fold's reading, and skips SQLAlchemy's per-row processing)."""
        if not ids:
            return
        quote = self.conn.dialect.identifier_preparer.quote
        mark = "?" if self.conn.dialect.paramstyle == "qmark" else "%s"
        names = [c.name for c in CURow.__table__.columns]
        head = (f"SELECT {', '.join(quote(n) for n in names)} FROM {quote(CURow.__tablename__)} "
                f"WHERE {quote('source')} = {mark} AND {quote('cu_id')} IN ")
        for chunk in _chunks(ids):
            sql = head + f"({', '.join(mark for _ in chunk)})"
            for values in self.conn.exec_driver_sql(sql, (self.source, *chunk)):
                row = dict(zip(names, values, strict=True))
                self.cus[row["cu_id"]] = row
                self.before[row["cu_id"]] = _key(row)
                self.stored[row["cu_id"]] = tuple(values)

    def _load_pilots(self, ids: Sequence[str]) -> None:
        for chunk in _chunks(ids):
            for row in self.conn.execute(select(PilotRow.__table__).where(
                    PilotRow.source == self.source, PilotRow.pilot_id.in_(chunk))).mappings():
                self.pilots[row["pilot_id"]] = dict(row)
        unknown = [i for i in ids if i not in self.pilots]
        self.pilot_facts = self.lookup.pilots(unknown) if unknown else {}

    def site_of_pilot(self, pilot: str | None) -> str | None:
        if not pilot:
            return None
        row = self.pilots.get(pilot)
        if row is not None:
            return row.get("site")
        facts = self.pilot_facts.get(pilot)
        return site_text(facts.get("labels")) if facts else None

    def stats_of(self, run: str | None) -> dict[str, Any]:
        key = run or ""
        found = self.stats.get(key)
        if found is None:
            row = self.conn.execute(select(RunStatsRow.__table__).where(
                RunStatsRow.source == self.source, RunStatsRow.run == key)).mappings().first()
            found = dict(row) if row is not None else {
                "source": self.source, "run": key, "first_submit": None, "first_start": None, "last_end": None,
                "last_update": None, "starts": 0, "wait_sum": 0.0, "runs": 0, "run_sum": 0.0, "busy_sum": 0.0}
            self.stats[key] = found
        return found

    # ------------------------------------------------------------ applying
    def apply(self, ev: Mapping[str, Any]) -> None:
        entity = ev["entity"]
        if entity == _CU:
            self._cu(ev)
        elif entity == _PILOT:
            self._pilot(ev)
        elif entity == _RUN:
            self._run(ev)

    def _cu(self, ev: Mapping[str, Any]) -> None:
        cu_id, to, at = ev["entity_id"], ev["to_state"], ev["time"]
        if to is None:
            return
        row = self.cus.get(cu_id)
        if row is None:
            facts = self.static.get(cu_id, {})
            row = {"source": self.source, "cu_id": cu_id, "run": facts.get("run"), "name": facts.get("name"),
                   "state": to, "attempt": 0, "place": None, "pilot": None, "site": None, "created": at,
                   "updated": at, "t_pending": None, "t_staging_input": None, "t_running": None,
                   "t_staging_output": None, "t_end": None, "exit_code": None, "reason": None, "host": None,
                   "slots": _int(facts.get("slots"))}
            self.cus[cu_id] = row
            self.before[cu_id] = None
        self.dirty_cus.add(cu_id)
        stats = self.stats_of(row["run"])
        stats["last_update"] = _max(stats["last_update"], at)
        detail = ev["detail"] or {}
        if ev["from_state"] is None:  # creation
            row["created"] = at
            stats["first_submit"] = _min(stats["first_submit"], at)
            return
        previous = row["state"]
        row["state"], row["updated"], row["attempt"] = to, at, int(ev["attempt"] or 0)
        if to == _PENDING:
            row["place"] = str(detail.get("pilot") or "")
            row["site"] = self.site_of_pilot(row["place"])
        elif ev["pilot"]:
            row["place"] = row["pilot"] = ev["pilot"]
            row["site"] = self.site_of_pilot(ev["pilot"])
        if previous == _PENDING and to in _LEFT_QUEUE:
            stats["starts"] += 1
            stats["wait_sum"] += max(0.0, at - row["t_pending"]) if row["t_pending"] is not None else 0.0
            stats["first_start"] = _min(stats["first_start"], at)
        if previous in _ACTIVE and (to == _PENDING or to in _FINAL):
            started = _start_of(row)  # of the attempt ending now (before its times are overwritten)
            if started is not None:
                stats["runs"] += 1
                stats["run_sum"] += max(0.0, at - started)
                stats["busy_sum"] += max(0.0, at - started) * (row["slots"] or 1)
        column = _STATE_TIME.get(to)
        if column is not None:
            row[column] = at
        if to in _FINAL:
            row["t_end"] = at
            stats["last_end"] = _max(stats["last_end"], at)
            end = (row["run"] or "", int(at // 60), to)
            self.ends[end] = self.ends.get(end, 0) + 1
        if "exit_code" in detail and detail["exit_code"] is not None:
            try:
                row["exit_code"] = int(detail["exit_code"])
            except (TypeError, ValueError):
                pass
        if to == _DONE:
            row["reason"] = None
        elif detail.get("reason"):
            row["reason"] = str(detail["reason"])
        if detail.get("host"):
            row["host"] = str(detail["host"])
        if detail.get("slots"):
            row["slots"] = _int(detail["slots"])

    def _pilot(self, ev: Mapping[str, Any]) -> None:
        pilot_id, to = ev["entity_id"], ev["to_state"]
        row = self.pilots.get(pilot_id)
        if row is None:
            facts = self.pilot_facts.get(pilot_id) or {}
            row = {"source": self.source, "pilot_id": pilot_id, "state": to or "", "labels": facts.get("labels") or {},
                   "site": site_text(facts.get("labels")), "slots": _int(facts.get("slots")),
                   "resource": facts.get("resource"), "walltime": _float(facts.get("walltime")),
                   "created": ev["time"], "t_pending": None, "t_running": None, "t_end": None, "reason": None}
            self.pilots[pilot_id] = row
        if to is None:
            return
        self.dirty_pilots.add(pilot_id)
        if ev["from_state"] is None:
            row["created"] = ev["time"]
        row["state"] = to
        for state, column in ((PilotState.PENDING.value, "t_pending"), (PilotState.RUNNING.value, "t_running")):
            if to == state and row[column] is None:
                row[column] = ev["time"]
        if is_final(to):
            row["t_end"] = ev["time"]
            reason = (ev["detail"] or {}).get("reason")
            row["reason"] = str(reason) if reason else None
            self._pilot_ended(pilot_id)

    def _pilot_ended(self, pilot_id: str) -> None:
        """Pending CUs placed on an ended pilot are on the shared queue now (see the module docstring).

        What this fold holds is written first, so the stored rows and counters agree; then the stored
        rows move (with their counters) and the held rows follow.
        """
        self.flush()
        pending = _S.PENDING.value
        where = (CURow.source == self.source, CURow.place == pilot_id, CURow.state == pending)
        moved = self.conn.execute(select(CURow.run, func.count()).where(*where).group_by(CURow.run)).all()
        if moved:
            self.conn.execute(update(CURow).where(*where).values(place="", site=None))
            deltas: dict[_Key, int] = {}
            for run, n in moved:
                deltas[(run or "", pilot_id, pending)] = -int(n)
                deltas[(run or "", "", pending)] = int(n)
            self._add_counts(deltas)
        values = _CU_VALUES
        for cu_id, row in self.cus.items():
            if row["state"] == pending and row["place"] == pilot_id:
                row["place"], row["site"] = "", None
                self.before[cu_id] = _key(row)
                self.stored[cu_id] = values(row)  # flushed above, then moved by the UPDATE: as stored

    def _run(self, ev: Mapping[str, Any]) -> None:
        run_id = ev["entity_id"]
        row = self.runs.get(run_id)
        if row is None:
            facts = self.lookup.runs([run_id]).get(run_id, {})
            row = {"source": self.source, "run_id": run_id, "origin": facts.get("origin"), "cds": facts.get("cds"),
                   "parent": facts.get("parent"), "created": ev["time"], "closed": _float(facts.get("closed")),
                   "removed": None}
            self.runs[run_id] = row
        self.dirty_runs.add(run_id)
        detail = ev["detail"] or {}
        if ev["from_state"] is None and ev["to_state"] is not None:
            row["created"] = ev["time"]
        for key in ("closed", "removed"):
            if detail.get(key) is not None:
                row[key] = _float(detail[key])

    # ------------------------------------------------------------ writing
    def flush(self) -> None:
        deltas: dict[_Key, int] = {}
        for cu_id in sorted(self.dirty_cus):
            now_key = _key(self.cus[cu_id])
            was = self.before.get(cu_id)
            if was == now_key:
                continue
            if was is not None:
                deltas[was] = deltas.get(was, 0) - 1
            deltas[now_key] = deltas.get(now_key, 0) + 1
            self.before[cu_id] = now_key
        self._write_cus(sorted(self.dirty_cus))
        self._add_counts(deltas)
        self._add(EndRow, ["source", "run", "minute", "state"],
                  [{"source": self.source, "run": r, "minute": m, "state": st, "n": n}
                   for (r, m, st), n in sorted(self.ends.items())])
        self._upsert_plain(RunStatsRow, ["source", "run"], [self.stats[k] for k in sorted(self.stats)])
        self._upsert(PilotRow, ["source", "pilot_id"], [self.pilots[i] for i in sorted(self.dirty_pilots)])
        self._upsert(RunRow, ["source", "run_id"], [self.runs[i] for i in sorted(self.dirty_runs)])
        self.dirty_cus.clear()
        self.dirty_pilots.clear()
        self.dirty_runs.clear()
        self.ends.clear()

    def _write_cus(self, ids: Sequence[str]) -> None:
        """Write these CUs' rows: new ones with an upsert of every column, stored ones with an UPDATE of
        only the columns that changed since they were read or last written.

        Rows of a transition (one UPDATE statement per set of changed columns, a handful per batch)
        then touch only the indexes holding those columns: an upsert that sets every column rewrites
        every index of the table, which cost SQLite 2.5 times as much per CU.
        """
        values = _CU_VALUES
        fresh: list[dict[str, Any]] = []
        changes: dict[tuple[int, ...], list[tuple[Any, ...]]] = {}
        for cu_id in ids:
            row = self.cus[cu_id]
            now_values = values(row)
            was = self.stored.get(cu_id)
            self.stored[cu_id] = now_values
            if was is None:
                fresh.append(row)
                continue
            changed = tuple(i for i, (a, b) in enumerate(zip(now_values, was, strict=True)) if a != b)
            if changed:
                changes.setdefault(changed, []).append(
                    (*(now_values[i] for i in changed), row["source"], cu_id))
        self._upsert_plain(CURow, ["source", "cu_id"], fresh)
        if not changes:
            return
        quote = self.conn.dialect.identifier_preparer.quote
        mark = "?" if self.conn.dialect.paramstyle == "qmark" else "%s"
        for changed, params in changes.items():
            assignments = ", ".join(f"{quote(_CU_COLUMNS[i])} = {mark}" for i in changed)
            sql = (f"UPDATE {quote(CURow.__tablename__)} SET {assignments} "
                   f"WHERE {quote('source')} = {mark} AND {quote('cu_id')} = {mark}")
            self.conn.exec_driver_sql(sql, params)

    def _add_counts(self, deltas: Mapping[_Key, int]) -> None:
        self._add(CountRow, ["source", "run", "place", "state"],
                  [{"source": self.source, "run": r, "place": p, "state": st, "n": n}
                   for (r, p, st), n in sorted(deltas.items()) if n])

    def _statement(self, table: type[Base], keys: list[str], assignments: str) -> tuple[str, list[str]]:
        names = [c.name for c in table.__table__.columns]
        mark = "?" if self.conn.dialect.paramstyle == "qmark" else "%s"
        quote = self.conn.dialect.identifier_preparer.quote
        sql = (f"INSERT INTO {quote(table.__tablename__)} ({', '.join(quote(n) for n in names)}) "
               f"VALUES ({', '.join(mark for _ in names)}) ON CONFLICT ({', '.join(quote(k) for k in keys)}) "
               f"DO UPDATE SET {assignments}")
        return sql, names

    def _upsert_plain(self, table: type[Base], keys: list[str], rows: list[dict[str, Any]]) -> None:
        """Upsert rows of a table without JSON columns straight through the DB-API (the CU table takes
        most of the writes; this skips SQLAlchemy's per-row parameter processing)."""
        if not rows:
            return
        quote = self.conn.dialect.identifier_preparer.quote
        columns = [c.name for c in table.__table__.columns if c.name not in keys]
        sql, names = self._statement(table, keys, ", ".join(f"{quote(n)} = excluded.{quote(n)}" for n in columns))
        self.conn.exec_driver_sql(sql, list(map(itemgetter(*names), rows)))

    def _add(self, table: type[Base], keys: list[str], rows: list[dict[str, Any]]) -> None:
        """Add each row's ``n`` to the counter with its key (created at ``n`` when missing)."""
        if not rows:
            return
        quote = self.conn.dialect.identifier_preparer.quote
        name = quote(table.__tablename__)
        sql, names = self._statement(table, keys, f"n = {name}.n + excluded.n")
        self.conn.exec_driver_sql(sql, list(map(itemgetter(*names), rows)))

    def _upsert(self, table: type[Base], keys: list[str], rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        make = pg_insert if self.dialect == "postgresql" else sqlite_insert
        stmt = make(table)
        columns = [c.name for c in table.__table__.columns if c.name not in keys]
        stmt = stmt.on_conflict_do_update(index_elements=keys, set_={c: stmt.excluded[c] for c in columns})
        for start in range(0, len(rows), 1000):
            self.conn.execute(stmt, rows[start:start + 1000])


def fold(conn: Connection, source: str, events: Sequence[Mapping[str, Any]], lookup: Lookup | None = None) -> None:
    """Fold newly stored events of ``source`` (in stream order) into the index tables, inside ``conn``'s
    transaction. Each event is a mapping with ``entity``, ``entity_id``, ``from_state``, ``to_state``,
    ``time``, ``pilot``, ``attempt``, ``detail``; events of other entities are ignored."""
    wanted = [e for e in events if e["entity"] in _FOLDED]
    if not wanted:
        return
    state = _Fold(conn, source, lookup or _NoLookup(), conn.dialect.name)
    state.load(wanted)
    for ev in wanted:
        state.apply(ev)
    state.flush()


def fill_transfer_runs(conn: Connection, source: str) -> None:
    """Give transfer rows that name a CU but no run the run of that CU (as the index knows it)."""
    run_of_cu = (select(CURow.run).where(CURow.source == Transfer.source, CURow.cu_id == Transfer.cu)
                 .scalar_subquery())
    conn.execute(update(Transfer).where(Transfer.source == source, Transfer.run.is_(None), Transfer.cu.is_not(None))
                 .values(run=run_of_cu))


def rebuild(conn: Connection, source: str, lookup: Lookup | None = None) -> None:
    """Drop the index rows of ``source`` and fold every stored event of it again (oldest first)."""
    for table in (CURow, PilotRow, RunRow, CountRow, EndRow, RunStatsRow):
        conn.execute(delete(table).where(table.source == source))
    last = 0
    columns = (Event.id, Event.entity, Event.entity_id, Event.from_state, Event.to_state, Event.time,
               Event.pilot, Event.attempt, Event.detail)
    while True:
        rows = conn.execute(select(*columns).where(
            Event.source == source, Event.id > last,
            Event.entity.in_([Kind.CU.value, Kind.PILOT.value, Kind.RUN.value]),
        ).order_by(Event.id).limit(_REBUILD_CHUNK)).mappings().all()
        if not rows:
            break
        last = rows[-1]["id"]
        fold(conn, source, [{**r, "detail": dict(r["detail"] or {})} for r in rows], lookup)
    fill_transfer_runs(conn, source)


def ensure_index(conn: Connection, source: str, lookup: Lookup | None = None) -> bool:
    """Rebuild the index of ``source`` unless it is at :data:`INDEX_VERSION`; True if it was rebuilt."""
    version = conn.execute(select(IndexMark.version).where(IndexMark.source == source)).scalar_one_or_none()
    if version == INDEX_VERSION:
        return False
    rebuild(conn, source, lookup)
    conn.execute(delete(IndexMark).where(IndexMark.source == source))
    conn.execute(insert(IndexMark).values(source=source, version=INDEX_VERSION, time=now()))
    return True


def _chunks(items: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _start_of(row: Mapping[str, Any]) -> float | None:
    """When the CU's current attempt left the queue: its StagingInput, else Running, after its last Pending."""
    pending = row["t_pending"]
    times = [t for t in (row["t_staging_input"], row["t_running"])
             if t is not None and (pending is None or t >= pending)]
    return float(min(times)) if times else None


def _min(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)


def _max(a: float | None, b: float) -> float:
    return b if a is None else max(a, b)


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None
