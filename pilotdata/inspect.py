"""Inspecting the work: list and show ComputeUnits, count them, sum up runs and bytes.

The one query layer behind ``pdata cu ls|show``, ``pdata status``, ``pdata run ls``, ``pdata report``
and its trace export (and the web dashboard). It reads two places:

* the history's **index tables** (:mod:`pilotdata.history.index`) for everything that would mean
  walking every ComputeUnit: listings with filters and paging, counts by state, per-run aggregates,
  failures by reason, throughput, bytes by category. These are index-backed SQL queries; their cost
  grows with the rows they return (a page, a few groups), not with the number of CUs;
* **coordination** for the live details no history holds (a CU's description and sandbox, which
  pilots are alive, what each has claimed), always by id or in small batches.

:meth:`Inspector.refresh` drains new coordination events into the history first (cost: the events
since the last refresh), so the index is as fresh as the call. Typical use::

    from pilotdata.inspect import CUFilter, Inspector

    with Inspector.open() as ins:            # PDATA_URL / PDATA_NAMESPACE / PDATA_HISTORY_URL
        ins.refresh()
        page = ins.list_cus(CUFilter(run=ins.current_run(), states=("Failed",)), limit=20)
        for cu in page.rows:
            print(cu.id, cu.name, cu.site, cu.reason)
        print(ins.cu(page.rows[0].id).inputs)  # how each input arrived: cache hit, link, copy

Every function returns plain frozen dataclasses (``dataclasses.asdict`` makes them JSON). Byte
figures use the categories of :class:`pilotdata.records.ByteCategory` and nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select

from pilotdata.coordination import Coordination, EntityRecord
from pilotdata.errors import DescriptionError, NotFoundError
from pilotdata.history import History, HistoryWriter, queries, source_id
from pilotdata.history.index import UNBOUND, CountRow, CURow, EndRow, PilotRow, RunRow, RunStatsRow, site_text
from pilotdata.history.models import Transfer
from pilotdata.records import DESCRIPTION, INPUT_CATEGORIES, PLACEMENT, RUN, ByteCategory
from pilotdata.runs import Run, current_run, list_runs
from pilotdata.states import ComputeUnitState, Kind, PilotState, is_final, states_of

__all__ = [
    "SHARED",
    "UNBOUND",
    "ByteTotals",
    "CUDetails",
    "CUFilter",
    "CUPage",
    "CUSummary",
    "FailureGroup",
    "Inspector",
    "PilotSummary",
    "RunSummary",
    "StateCounts",
    "TraceRow",
    "TransferItem",
    "glob_to_like",
]

SHARED = ""
"""``place`` of a CU waiting on the shared queue (any pilot may take it)."""

_S = ComputeUnitState
ACTIVE_STATES = (_S.STAGING_INPUT.value, _S.RUNNING.value, _S.STAGING_OUTPUT.value)
"""States in which a CU holds slots on its pilot."""
TIME_COLUMNS = {_S.PENDING.value: "t_pending", _S.STAGING_INPUT.value: "t_staging_input",
                _S.RUNNING.value: "t_running", _S.STAGING_OUTPUT.value: "t_staging_output"}


def glob_to_like(pattern: str) -> str:
    """A shell glob (``*``, ``?``) as a SQL ``LIKE`` pattern with ``\\`` as the escape character."""
    out = []
    for ch in pattern:
        if ch in "\\%_":
            out.append("\\" + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)


# ------------------------------------------------------------------------------ values
@dataclass(frozen=True)
class CUFilter:
    """Which ComputeUnits to list or count; every field given must match (``None``: any)."""

    run: str | None = None
    """Run id."""
    states: tuple[str, ...] = ()
    """Any of these states."""
    pilot: str | None = None
    """Waiting on, running on or ended on this pilot (``""``: the shared queue)."""
    site: str | None = None
    """At this site or under it (``site-a`` matches ``site-a/node-1``)."""
    name: str | None = None
    """A shell glob on the CU's name, case-insensitive (``blast-*``)."""

    def __post_init__(self) -> None:
        known = set(states_of(Kind.CU))
        bad = [s for s in self.states if s not in known]
        if bad:
            raise DescriptionError(f"state {bad[0]!r} is not a ComputeUnit state; expected one of "
                                   f"{', '.join(states_of(Kind.CU))}", field="state", value=bad[0])


@dataclass(frozen=True)
class CUSummary:
    """One ComputeUnit as a listing shows it."""

    id: str
    name: str | None
    run: str | None
    state: str
    attempt: int
    place: str | None
    """The pilot it waits on, runs or ran on; :data:`SHARED` for the shared queue; ``None`` never bound."""
    pilot: str | None
    """The last pilot that moved it."""
    site: str | None
    host: str | None
    created: float
    updated: float
    times: dict[str, float]
    """State -> when it last entered it (New is ``created``; the final state is ``t_end``)."""
    exit_code: int | None
    reason: str | None
    slots: int | None = None
    """Slots it takes (``number_of_processes``), when known."""

    @property
    def started(self) -> float | None:
        """When its last attempt left the queue (StagingInput, else Running, after its last Pending)."""
        pending = self.times.get(_S.PENDING.value)
        starts = [t for t in (self.times.get(_S.STAGING_INPUT.value), self.times.get(_S.RUNNING.value))
                  if t is not None and (pending is None or t >= pending)]
        return min(starts) if starts else None

    @property
    def queue_wait(self) -> float | None:
        """Seconds from its last Pending to its start (``None`` if it never started)."""
        pending, started = self.times.get(_S.PENDING.value), self.started
        return None if pending is None or started is None or started < pending else started - pending

    @property
    def duration(self) -> float | None:
        """Seconds from its start to its end (to now while it runs; ``None`` if it never started)."""
        started = self.started
        if started is None:
            return None
        end = self.times.get(self.state) if is_final(self.state) else time.time()
        return None if end is None else max(0.0, end - started)


@dataclass(frozen=True)
class CUPage:
    """One page of a listing."""

    rows: list[CUSummary]
    total: int
    """How many CUs match the filter (all pages)."""
    offset: int
    limit: int

    @property
    def next_offset(self) -> int | None:
        """The offset of the next page, ``None`` on the last (pages read by ``offset``)."""
        nxt = self.offset + len(self.rows)
        return nxt if nxt < self.total else None

    @property
    def cursor(self) -> str | None:
        """Where the next page starts (``list_cus(after=page.cursor)``); ``None`` for an empty page."""
        return f"{self.rows[-1].created!r}:{self.rows[-1].id}" if self.rows else None


@dataclass(frozen=True)
class TransferItem:
    """One transfer record as ``cu show``, the report and the trace list it."""

    du: str
    category: str
    """A :class:`~pilotdata.records.ByteCategory` value."""
    bytes: int
    seconds: float
    time: float
    """When it ended."""
    source: str | None
    """Where from: the PilotData id when known, else the URL."""
    destination: str | None
    pilot: str | None
    cu: str | None
    ok: bool


@dataclass(frozen=True)
class ByteTotals:
    """Bytes by :class:`~pilotdata.records.ByteCategory` (every category present, 0 when none).

    ``by_category`` counts every record; ``for_cus`` only the records made for a ComputeUnit (its inputs
    and outputs). They differ by the copies of DataUnits as such: uploads, replications, and replicas
    made as links (``linked`` records without a CU).
    """

    by_category: dict[str, int]
    for_cus: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, sums: Mapping[str, int], for_cus: Mapping[str, int] | None = None) -> ByteTotals:
        """Totals with every category filled in (``for_cus`` defaults to ``sums``: records all of CUs)."""
        every = {c.value: int(sums.get(c.value, 0)) for c in ByteCategory}
        mine = every if for_cus is None else {c.value: int(for_cus.get(c.value, 0)) for c in ByteCategory}
        return cls(every, dict(mine))

    @property
    def moved(self) -> int:
        """Bytes that travelled: uploaded + replicated + staged + output."""
        return sum(n for c, n in self.by_category.items() if ByteCategory(c).moves_bytes)

    @property
    def inputs(self) -> int:
        """Bytes of CU inputs (staged + linked + cache hit, per CU and input): what copying every input for
        every CU would have moved."""
        return sum(self.for_cus.get(c.value, 0) for c in INPUT_CATEGORIES)

    @property
    def saved(self) -> int:
        """Input bytes that moved nothing: the inputs linked or found in the cache (inputs - staged)."""
        return self.for_cus.get(ByteCategory.LINKED.value, 0) + self.for_cus.get(ByteCategory.CACHE_HIT.value, 0)

    @property
    def linked_replicas(self) -> int:
        """Bytes of replicas made as links (store to store on one filesystem): linked, not a CU input."""
        return self.by_category[ByteCategory.LINKED.value] - self.for_cus.get(ByteCategory.LINKED.value, 0)

    def as_dict(self) -> dict[str, int]:
        """Every category plus ``moved``, ``inputs`` and ``saved``."""
        return {**self.by_category, "moved": self.moved, "inputs": self.inputs, "saved": self.saved}


@dataclass(frozen=True)
class CUDetails:
    """Everything known about one ComputeUnit."""

    summary: CUSummary
    description: dict[str, Any] | None
    """The normalised description (``None`` once the coordination record is gone)."""
    sandbox: str | None
    placement: str | None
    """Why it was bound where it was."""
    events: list[dict[str, Any]]
    """Every recorded transition: ``{"time", "from", "to", "pilot", "attempt", "detail"}``, oldest first."""
    inputs: list[TransferItem]
    """How each input DataUnit arrived, per attempt: staged (copied), linked, or a cache hit."""
    outputs: list[TransferItem]
    bytes: ByteTotals
    in_coordination: bool
    """Whether its coordination record still exists (``pdata gc`` removes the records of old runs)."""


@dataclass(frozen=True)
class StateCounts:
    """ComputeUnits by state for each place: the live pilots, the ended ones, the shared queue, unbound."""

    rows: dict[str, dict[str, int]]
    """Place -> state -> count; places are pilot ids, :data:`SHARED` and :data:`UNBOUND`."""
    pilot_states: dict[str, str]
    """Pilot id -> its state (for the pilots in ``rows``)."""
    sites: dict[str, str | None]
    """Pilot id -> its site."""
    run: str | None

    @property
    def total(self) -> dict[str, int]:
        """State -> count over every place."""
        out: dict[str, int] = {}
        for counts in self.rows.values():
            for state, n in counts.items():
                out[state] = out.get(state, 0) + n
        return out

    @property
    def shared_queue(self) -> int:
        """CUs waiting on the shared queue (the same number as the shared row's Pending)."""
        return self.rows.get(SHARED, {}).get(_S.PENDING.value, 0)


@dataclass(frozen=True)
class PilotSummary:
    """One pilot: state, site, slots, lifetime, and what it ran."""

    id: str
    state: str
    site: str | None
    labels: dict[str, Any]
    slots: int | None
    resource: str | None
    created: float
    started: float | None
    """When its agent began heartbeating (Running)."""
    ended: float | None
    reason: str | None
    busy_slots: int
    """Slots held by CUs staging or running now (0 once it ended)."""
    claimed: int
    """CUs in its in-progress list now (running and prefetched)."""
    queued: int
    """CUs waiting on its own queue now."""
    walltime_left: float | None
    """Seconds until its walltime ends (``None`` without a walltime or once it ended)."""

    @property
    def lifetime(self) -> float | None:
        """Seconds from Running to its end (to now while it runs)."""
        if self.started is None:
            return None
        return max(0.0, (self.ended if self.ended is not None else time.time()) - self.started)


@dataclass(frozen=True)
class RunSummary:
    """A run with its counts and aggregates."""

    id: str
    origin: str | None
    created: float
    closed: float | None
    in_coordination: bool
    counts: dict[str, int]
    first_start: float | None
    last_end: float | None
    last_update: float | None
    pilots: list[str]
    sites: list[str]
    bytes: ByteTotals
    queue_wait_mean: float | None
    """Mean seconds from Pending to start, over every attempt that started."""
    run_time_mean: float | None
    """Mean seconds from start to end, over every attempt that started and ended."""
    busy_slot_seconds: float = 0.0
    """Slot-seconds the run's ended attempts held (duration x slots): the numerator of utilisation."""
    parent: str | None = None

    @property
    def total(self) -> int:
        """How many CUs it has."""
        return sum(self.counts.values())

    @property
    def finished(self) -> bool:
        """Whether every CU of it ended (a run without CUs counts as finished)."""
        return all(is_final(s) for s in self.counts)

    @property
    def failed(self) -> int:
        """CUs that ended Failed or Canceled."""
        return self.counts.get(_S.FAILED.value, 0) + self.counts.get(_S.CANCELED.value, 0)


@dataclass(frozen=True)
class FailureGroup:
    """Failed CUs that share a reason."""

    reason: str
    count: int
    examples: list[str]
    """Up to five CU ids."""


@dataclass(frozen=True)
class TraceRow:
    """One ComputeUnit in a trace export (CSV / JSON)."""

    id: str
    name: str | None
    run: str | None
    state: str
    attempt: int
    pilot: str | None
    site: str | None
    host: str | None
    created: float
    pending: float | None
    staging_input: float | None
    running: float | None
    staging_output: float | None
    ended: float | None
    queue_wait: float | None
    duration: float | None
    exit_code: int | None
    reason: str | None
    bytes: dict[str, int] = field(default_factory=dict)
    """Bytes by category for this CU (inputs and outputs)."""

    FIELDS = ("id", "name", "run", "state", "attempt", "pilot", "site", "host", "created", "pending",
              "staging_input", "running", "staging_output", "ended", "queue_wait", "duration", "exit_code",
              "reason", *(f"bytes_{c.value}" for c in ByteCategory))
    """The CSV columns, in order."""

    def flat(self) -> dict[str, Any]:
        """The row as one flat mapping with a ``bytes_<category>`` column per category."""
        out = {k: getattr(self, k) for k in self.FIELDS[:18]}
        out.update({f"bytes_{c.value}": self.bytes.get(c.value, 0) for c in ByteCategory})
        return out


# ------------------------------------------------------------------------------ the query layer
class Inspector:
    """Queries over one coordination namespace and its history (see the module docstring).

    Thread-safe as its two backends are; cheap to keep open. ``close()`` closes only what
    :meth:`open` opened.
    """

    def __init__(self, coord: Coordination, history: History, *, owned: bool = False) -> None:
        self.coord = coord
        self.history = history
        self.source: str = source_id(coord)
        """The history ``source`` of this namespace."""
        self._writer = HistoryWriter(coord, history)
        self._owned = owned

    @classmethod
    def open(cls, url: str | None = None, *, namespace: str | None = None,
             history_url: str | None = None) -> Inspector:
        """Open coordination and history from URLs (defaults: ``PDATA_URL``, ``PDATA_NAMESPACE``,
        ``PDATA_HISTORY_URL``, else the embedded files)."""
        from pilotdata.coordination import connect

        coord = connect(url, namespace)
        try:
            return cls(coord, History(history_url), owned=True)
        except BaseException:
            coord.close()
            raise

    def close(self) -> None:
        """Close the backends if :meth:`open` opened them."""
        if self._owned:
            self.history.close()
            self.coord.close()

    def __enter__(self) -> Inspector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def refresh(self) -> int:
        """Drain new coordination events into the history (and its index); return how many were new."""
        return self._writer.drain()

    # ------------------------------------------------------------------ runs
    def current_run(self) -> str | None:
        """The id of the namespace's current run (the one started last), ``None`` if there is none."""
        run = current_run(self.coord)
        return None if run is None else run.id

    def runs(self, *, include_removed: bool = False) -> list[RunSummary]:
        """Every run with its counts and aggregates, oldest first (removed ones too with ``include_removed``)."""
        live = {r.id: r for r in list_runs(self.coord)}
        with self.history.read("list runs") as conn:
            known = {r.run_id: r for r in conn.execute(select(RunRow.__table__).where(RunRow.source == self.source))
                     } if include_removed else {}
            ids = set(live) | set(known)
            out = [self._run_summary(conn, run_id, live.get(run_id), known.get(run_id)) for run_id in ids]
        return sorted(out, key=lambda r: (r.created, r.id))

    def run(self, run_id: str) -> RunSummary:
        """One run's summary; :class:`NotFoundError` if neither coordination nor the history knows it."""
        live = {r.id: r for r in list_runs(self.coord)}.get(run_id)
        with self.history.read(f"summarise run {run_id}") as conn:
            row = conn.execute(select(RunRow.__table__).where(RunRow.source == self.source, RunRow.run_id == run_id)
                               ).first()
            if live is None and row is None:
                raise NotFoundError(f"run {run_id!r} does not exist")
            return self._run_summary(conn, run_id, live, row)

    def _run_summary(self, conn: Any, run_id: str, live: Run | None, row: Any) -> RunSummary:
        counts: dict[str, int] = {}
        places: set[str] = set()
        for place, state, n in conn.execute(select(CountRow.place, CountRow.state, CountRow.n).where(
                CountRow.source == self.source, CountRow.run == run_id, CountRow.n != 0)):
            counts[state] = counts.get(state, 0) + int(n)
            if place not in (SHARED, UNBOUND):
                places.add(place)
        stats = conn.execute(select(RunStatsRow.__table__).where(
            RunStatsRow.source == self.source, RunStatsRow.run == run_id)).first()
        sites = {p.site for p in conn.execute(select(PilotRow.site).where(
            PilotRow.source == self.source, PilotRow.pilot_id.in_(sorted(places)))) if p.site}
        created = live.created if live is not None else (row.created if row is not None else 0.0)
        return RunSummary(
            id=run_id, origin=live.origin if live else (row.origin if row else None), created=created,
            closed=live.closed if live else (row.closed if row else None), in_coordination=live is not None,
            counts=counts, first_start=stats.first_start if stats else None,
            last_end=stats.last_end if stats else None, last_update=stats.last_update if stats else None,
            pilots=sorted(places), sites=sorted(sites), bytes=self._bytes(conn, Transfer.run == run_id),
            queue_wait_mean=stats.wait_sum / stats.starts if stats and stats.starts else None,
            run_time_mean=stats.run_sum / stats.runs if stats and stats.runs else None,
            busy_slot_seconds=stats.busy_sum if stats else 0.0,
            parent=live.parent if live else (row.parent if row else None))

    # ------------------------------------------------------------------ listing
    def _where(self, flt: CUFilter) -> ColumnElement[bool]:
        conds: list[ColumnElement[bool]] = [CURow.source == self.source]
        if flt.run is not None:
            conds.append(CURow.run == flt.run)
        if flt.states:
            conds.append(CURow.state.in_(list(flt.states)))
        if flt.pilot is not None:
            conds.append(CURow.place == flt.pilot)
        if flt.site is not None:
            conds.append(or_(CURow.site == flt.site, CURow.site.like(glob_to_like(flt.site) + "/%", escape="\\")))
        if flt.name is not None:  # case-insensitive: SQLite's LIKE is (for ASCII), PostgreSQL needs ILIKE
            pattern = glob_to_like(flt.name)
            conds.append(CURow.name.ilike(pattern, escape="\\") if self.history.dialect == "postgresql"
                         else CURow.name.like(pattern, escape="\\"))
        return and_(*conds)

    def list_cus(self, flt: CUFilter | None = None, *, offset: int = 0, limit: int = 100,
                 newest_first: bool = False, after: str | None = None) -> CUPage:
        """A page of the ComputeUnits matching ``flt``, in submission order (or newest first).

        Page by ``offset``, or by ``after`` (the :attr:`CUPage.cursor` of the previous page: its cost
        does not grow with the depth of the page, unlike an offset's).
        """
        flt = flt or CUFilter()
        if offset < 0 or limit < 1:
            raise DescriptionError(f"offset must be >= 0 and limit >= 1 (got {offset}, {limit})", field="limit")
        where = self._where(flt)
        order = (CURow.created.desc(), CURow.cu_id.desc()) if newest_first else (CURow.created, CURow.cu_id)
        query = select(CURow.__table__).where(where)
        if after is not None:
            created, cu_id = _parse_cursor(after)
            if newest_first:
                query = query.where(or_(CURow.created < created, and_(CURow.created == created, CURow.cu_id < cu_id)))
            else:
                query = query.where(or_(CURow.created > created, and_(CURow.created == created, CURow.cu_id > cu_id)))
        else:
            query = query.offset(offset)
        with self.history.read("list compute units") as conn:
            total = int(conn.execute(select(func.count()).select_from(CURow).where(where)).scalar_one())
            rows = conn.execute(query.order_by(*order).limit(limit))
            return CUPage([_summary(r) for r in rows], total, offset, limit)

    def cu_ids(self, flt: CUFilter) -> list[str]:
        """Every id matching ``flt``, in submission order (for ``wait`` and ``resubmit``)."""
        with self.history.read("list compute unit ids") as conn:
            return list(conn.execute(select(CURow.cu_id).where(self._where(flt))
                                     .order_by(CURow.created, CURow.cu_id)).scalars())

    def ended_cu_ids(self, pilot: str, before: float) -> list[str]:
        """Ids of the CUs that ended on ``pilot`` before ``before`` (epoch seconds)."""
        with self.history.read("list ended compute units") as conn:
            return list(conn.execute(select(CURow.cu_id).where(
                CURow.source == self.source, CURow.place == pilot,
                CURow.state.in_([_S.DONE.value, _S.FAILED.value, _S.CANCELED.value]),
                CURow.t_end < before)).scalars())

    def iter_cus(self, flt: CUFilter | None = None, *, batch: int = 2000) -> Iterator[CUSummary]:
        """Every matching ComputeUnit in submission order, read in batches (keyset paging)."""
        where = self._where(flt or CUFilter())
        after: tuple[float, str] | None = None
        while True:
            query = select(CURow.__table__).where(where)
            if after is not None:
                query = query.where(or_(CURow.created > after[0],
                                        and_(CURow.created == after[0], CURow.cu_id > after[1])))
            with self.history.read("read compute units") as conn:
                rows = [_summary(r) for r in conn.execute(
                    query.order_by(CURow.created, CURow.cu_id).limit(batch))]
            yield from rows
            if len(rows) < batch:
                return
            after = (rows[-1].created, rows[-1].id)

    # ------------------------------------------------------------------ one CU
    def cu(self, cu_id: str) -> CUDetails:
        """Everything about one ComputeUnit; :class:`NotFoundError` if neither side knows it."""
        rec = self.coord.get_many(Kind.CU, [cu_id])[0]
        with self.history.read(f"read compute unit {cu_id}") as conn:
            row = conn.execute(select(CURow.__table__).where(CURow.source == self.source, CURow.cu_id == cu_id)
                               ).first()
            transfers = [_transfer_item(t) for t in conn.execute(select(Transfer.__table__).where(
                Transfer.source == self.source, Transfer.cu == cu_id).order_by(Transfer.time, Transfer.id))]
        if rec is None and row is None:
            raise NotFoundError(f"ComputeUnit {cu_id!r} does not exist")
        summary = _summary(row) if row is not None else _summary_of_record(rec)  # type: ignore[arg-type]
        if rec is not None:
            summary = _merge_live(summary, rec)
        events = [{"time": e.time, "from": e.from_state, "to": e.to_state, "pilot": e.pilot, "attempt": e.attempt,
                   "detail": e.detail} for e in queries.events_for(self.history, Kind.CU.value, cu_id,
                                                                     source=self.source)]
        sums: dict[str, int] = {}
        for t in transfers:
            sums[t.category] = sums.get(t.category, 0) + t.bytes
        inputs = [t for t in transfers if t.category in {c.value for c in INPUT_CATEGORIES}]
        outputs = [t for t in transfers if t.category == ByteCategory.OUTPUT.value]
        data = rec.data if rec is not None else {}
        return CUDetails(summary, data.get(DESCRIPTION), data.get("sandbox"),
                         data.get(PLACEMENT) or (rec.detail.get(PLACEMENT) if rec is not None else None),
                         events, inputs, outputs, ByteTotals.of(sums), rec is not None)

    # ------------------------------------------------------------------ counts
    def counts(self, run: str | None = None) -> StateCounts:
        """ComputeUnits by state per place (pilots, :data:`SHARED`, :data:`UNBOUND`), all runs or one.

        From the index, with the live in-progress lists of the running pilots laid over it: a Pending CU
        a pilot has claimed (prefetched) counts under that pilot.
        """
        cond = [CountRow.source == self.source, CountRow.n != 0]
        if run is not None:
            cond.append(CountRow.run == run)
        rows: dict[str, dict[str, int]] = {}
        with self.history.read("count compute units") as conn:
            for place, state, n in conn.execute(select(CountRow.place, CountRow.state, func.sum(CountRow.n))
                                                .where(*cond).group_by(CountRow.place, CountRow.state)):
                if n:
                    rows.setdefault(place, {})[state] = int(n)
            pilots = {p.pilot_id: p for p in conn.execute(select(PilotRow.__table__).where(
                PilotRow.source == self.source))}
            live = [r for r in self.coord.get_many(Kind.PILOT, self.coord.list_ids(Kind.PILOT))
                    if r is not None and not is_final(r.state)]
            claimed = {p.id: self.coord.claimed(p.id) for p in live if p.state == PilotState.RUNNING}
            ids = sorted({i for ids in claimed.values() for i in ids})
            indexed: dict[str, tuple[str, str | None, str | None]] = {}
            for start in range(0, len(ids), 500):
                for cu_id, cu_state, cu_place, cu_run in conn.execute(
                        select(CURow.cu_id, CURow.state, CURow.place, CURow.run).where(
                            CURow.source == self.source, CURow.cu_id.in_(ids[start:start + 500]))):
                    indexed[cu_id] = (cu_state, cu_place, cu_run)
        for pilot_id, cu_ids in claimed.items():
            for cu_id in cu_ids:
                found = indexed.get(cu_id)
                if found is None or found[0] != _S.PENDING.value or (run is not None and found[2] != run):
                    continue
                old = UNBOUND if found[1] is None else found[1]
                if old == pilot_id or not rows.get(old, {}).get(_S.PENDING.value):
                    continue
                rows[old][_S.PENDING.value] -= 1
                if not rows[old][_S.PENDING.value]:
                    del rows[old][_S.PENDING.value]
                rows.setdefault(pilot_id, {})[_S.PENDING.value] = rows.setdefault(pilot_id, {}).get(
                    _S.PENDING.value, 0) + 1
        rows = {k: v for k, v in rows.items() if v}
        states = {p: r.state for p, r in pilots.items()}
        states.update({r.id: r.state for r in live})
        for r in live:
            rows.setdefault(r.id, {})
        sites = {p: r.site for p, r in pilots.items()}
        for r in live:
            if r.id not in sites:
                sites[r.id] = site_text(r.data.get("labels"))
        return StateCounts(rows, {p: states[p] for p in rows if p in states},
                           {p: sites.get(p) for p in rows if p in states}, run)

    # ------------------------------------------------------------------ pilots
    def pilots(self, *, include_ended: bool = True, run: str | None = None) -> list[PilotSummary]:
        """Pilots (live ones with their busy slots, claims and queues now), oldest first.

        With ``run``: only the pilots that ran or hold CUs of that run (plus the live ones).
        """
        with self.history.read("list pilots") as conn:
            rows = {p.pilot_id: p for p in conn.execute(select(PilotRow.__table__).where(
                PilotRow.source == self.source))}
            used: set[str] | None = None
            if run is not None:
                used = {str(p) for p in conn.execute(select(CURow.place).where(
                    CURow.source == self.source, CURow.run == run, CURow.place.is_not(None)).distinct()).scalars()}
        records = {r.id: r for r in self.coord.get_many(Kind.PILOT, self.coord.list_ids(Kind.PILOT)) if r is not None}
        live_ids = [i for i, r in records.items() if not is_final(r.state)]
        lengths = self.coord.queue_lengths(live_ids) if live_ids else {}
        out: list[PilotSummary] = []
        for pilot_id in sorted(set(rows) | set(records)):
            rec, row = records.get(pilot_id), rows.get(pilot_id)
            state = rec.state if rec is not None else (row.state if row is not None else "")
            if not include_ended and is_final(state):
                continue
            if used is not None and pilot_id not in used and (rec is None or is_final(state)):
                continue
            out.append(self._pilot(pilot_id, rec, row, lengths.get(pilot_id, 0)))
        return sorted(out, key=lambda p: (p.created, p.id))

    def _pilot(self, pilot_id: str, rec: EntityRecord | None, row: Any, queued: int) -> PilotSummary:
        desc = (rec.data.get(DESCRIPTION) or {}) if rec is not None else {}
        if rec is not None:
            labels = rec.data.get("labels") or desc.get("labels") or {}
        else:
            labels = row.labels if row is not None else {}
        state = rec.state if rec is not None else (row.state if row is not None else "")
        started = (rec.times.get(PilotState.RUNNING.value) if rec is not None else None) or (
            row.t_running if row is not None else None)
        ended = None
        if is_final(state):
            ended = (rec.times.get(state) if rec is not None else None) or (row.t_end if row is not None else None)
        busy = claimed = 0
        if rec is not None and state == PilotState.RUNNING:
            ids = self.coord.claimed(pilot_id)
            claimed = len(ids)
            for cu in self.coord.get_many(Kind.CU, ids):
                if cu is not None and cu.state in ACTIVE_STATES:
                    busy += int((cu.data.get(DESCRIPTION) or {}).get("number_of_processes") or 1)
        walltime = desc.get("walltime") if rec is not None else (row.walltime if row else None)
        left = None
        if walltime and started is not None and not is_final(state):
            left = max(0.0, started + float(walltime) * 60 - time.time())
        slots = (rec.data.get("slots") or desc.get("number_of_processes")) if rec is not None else (
            row.slots if row else None)
        return PilotSummary(
            id=pilot_id, state=state, site=site_text(labels), labels=dict(labels),
            slots=None if slots is None else int(slots),
            resource=desc.get("service_url") if rec is not None else (row.resource if row else None),
            created=rec.created if rec is not None else (row.created if row else 0.0), started=started,
            ended=ended, reason=(rec.detail.get("reason") if rec is not None and is_final(state) else
                                 (row.reason if row is not None else None)),
            busy_slots=busy, claimed=claimed, queued=queued, walltime_left=left)

    # ------------------------------------------------------------------ bytes, failures, throughput
    def _bytes(self, conn: Any, *conds: ColumnElement[bool]) -> ByteTotals:
        for_cu = Transfer.cu.is_not(None)
        query = select(Transfer.category, for_cu, func.sum(Transfer.bytes)).where(
            Transfer.source == self.source, Transfer.ok.is_(True), *conds).group_by(Transfer.category, for_cu)
        every: dict[str, int] = {}
        mine: dict[str, int] = {}
        for category, of_cu, n in conn.execute(query):
            if category is None:
                continue
            every[str(category)] = every.get(str(category), 0) + int(n or 0)
            if of_cu:
                mine[str(category)] = mine.get(str(category), 0) + int(n or 0)
        return ByteTotals.of(every, mine)

    def bytes(self, run: str | None = None) -> ByteTotals:
        """Bytes by category, for one run or all."""
        with self.history.read("sum bytes") as conn:
            return self._bytes(conn, *([Transfer.run == run] if run is not None else []))

    def bytes_by(self, key: str, run: str | None = None) -> dict[str, ByteTotals]:
        """Bytes by category per ``key``: ``pilot`` (who moved them) or ``site`` (that pilot's site)."""
        if key not in ("pilot", "site"):
            raise DescriptionError(f"bytes_by: key must be 'pilot' or 'site', not {key!r}", field="key")
        conds = [Transfer.source == self.source, Transfer.ok.is_(True)]
        if run is not None:
            conds.append(Transfer.run == run)
        for_cu = Transfer.cu.is_not(None)
        query = select(Transfer.pilot, Transfer.category, for_cu, func.sum(Transfer.bytes)).where(*conds).group_by(
            Transfer.pilot, Transfer.category, for_cu)
        with self.history.read("sum bytes per pilot") as conn:
            sums = [(p, c, bool(f), int(n or 0)) for p, c, f, n in conn.execute(query) if c is not None]
            sites = {p.pilot_id: p.site for p in conn.execute(select(PilotRow.__table__).where(
                PilotRow.source == self.source))}
        grouped: dict[str, tuple[dict[str, int], dict[str, int]]] = {}
        for pilot, category, of_cu, n in sums:
            who = pilot or "client"
            name = who if key == "pilot" else (sites.get(pilot or "") or who)
            every, mine = grouped.setdefault(name, ({}, {}))
            every[category] = every.get(category, 0) + n
            if of_cu:
                mine[category] = mine.get(category, 0) + n
        return {k: ByteTotals.of(every, mine) for k, (every, mine) in sorted(grouped.items())}

    def transfers(self, run: str | None = None, *, limit: int | None = None) -> list[TransferItem]:
        """Transfer records (one run or all), oldest first."""
        query = select(Transfer.__table__).where(Transfer.source == self.source)
        if run is not None:
            query = query.where(Transfer.run == run)
        query = query.order_by(Transfer.time, Transfer.id)
        if limit is not None:
            query = query.limit(limit)
        with self.history.read("read transfers") as conn:
            return [_transfer_item(t) for t in conn.execute(query)]

    def failures(self, run: str | None = None, *, limit: int = 20) -> list[FailureGroup]:
        """Failed ComputeUnits grouped by reason, largest group first."""
        cond = [CURow.source == self.source, CURow.state == _S.FAILED.value]
        if run is not None:
            cond.append(CURow.run == run)
        reason = func.coalesce(CURow.reason, "(no reason recorded)")
        with self.history.read("group failures") as conn:
            groups = conn.execute(select(reason, func.count()).where(*cond).group_by(reason)
                                  .order_by(func.count().desc(), reason).limit(limit)).all()
            out = []
            for text, n in groups:
                examples = list(conn.execute(select(CURow.cu_id).where(*cond, reason == text)
                                             .order_by(CURow.t_end.desc()).limit(5)).scalars())
                out.append(FailureGroup(str(text), int(n), examples))
        return out

    def throughput(self, run: str | None = None, *, bucket: float = 60.0,
                   since: float | None = None) -> list[tuple[float, dict[str, int]]]:
        """ComputeUnits that ended per time bucket: ``[(bucket start, {state: count}), ...]``, oldest first.

        Kept per minute by the index: ``bucket`` is rounded to whole minutes in effect (a CU that ended
        at 10:00:59 counts in the bucket of 10:00), ``since`` to the minute.
        """
        if bucket <= 0:
            raise DescriptionError(f"bucket must be > 0, not {bucket}", field="bucket")
        cond = [EndRow.source == self.source]
        if run is not None:
            cond.append(EndRow.run == run)
        if since is not None:
            cond.append(EndRow.minute >= int(since // 60))
        out: dict[float, dict[str, int]] = {}
        with self.history.read("count completions") as conn:
            for minute, state, n in conn.execute(select(EndRow.minute, EndRow.state, func.sum(EndRow.n))
                                                 .where(*cond).group_by(EndRow.minute, EndRow.state)):
                start = (minute * 60.0 // bucket) * bucket
                counts = out.setdefault(start, {})
                counts[state] = counts.get(state, 0) + int(n)
        return sorted(out.items())

    # ------------------------------------------------------------------ trace
    def trace(self, run: str | None = None) -> Iterator[TraceRow]:
        """One :class:`TraceRow` per ComputeUnit (of ``run``, or all), in submission order."""
        flt = CUFilter(run=run)
        per_cu: dict[str, dict[str, int]] = {}
        conds = [Transfer.source == self.source, Transfer.cu.is_not(None), Transfer.ok.is_(True)]
        if run is not None:
            conds.append(Transfer.run == run)
        with self.history.read("sum bytes per compute unit") as conn:
            for cu_id, category, n in conn.execute(select(Transfer.cu, Transfer.category, func.sum(Transfer.bytes))
                                                   .where(*conds).group_by(Transfer.cu, Transfer.category)):
                if category is not None:
                    per_cu.setdefault(str(cu_id), {})[str(category)] = int(n or 0)
        for cu in self.iter_cus(flt):
            yield TraceRow(
                id=cu.id, name=cu.name, run=cu.run, state=cu.state, attempt=cu.attempt,
                pilot=cu.place or None, site=cu.site, host=cu.host, created=cu.created,
                pending=cu.times.get(_S.PENDING.value), staging_input=cu.times.get(_S.STAGING_INPUT.value),
                running=cu.times.get(_S.RUNNING.value), staging_output=cu.times.get(_S.STAGING_OUTPUT.value),
                ended=cu.times.get(cu.state) if is_final(cu.state) else None, queue_wait=cu.queue_wait,
                duration=cu.duration if is_final(cu.state) else None, exit_code=cu.exit_code, reason=cu.reason,
                bytes={c.value: per_cu.get(cu.id, {}).get(c.value, 0) for c in ByteCategory})


# ------------------------------------------------------------------------------ helpers
def _parse_cursor(text: str) -> tuple[float, str]:
    created, sep, cu_id = text.partition(":")
    try:
        if not sep or not cu_id:
            raise ValueError(text)
        return float(created), cu_id
    except ValueError:
        raise DescriptionError(f"after {text!r} is not a page cursor (CUPage.cursor)", field="after",
                               value=text) from None


def _summary(row: Any) -> CUSummary:
    """A listing row from a ``history_cus`` row."""
    times: dict[str, float] = {_S.NEW.value: row.created}
    for state, column in TIME_COLUMNS.items():
        value = getattr(row, column)
        if value is not None:
            times[state] = value
    if row.t_end is not None and is_final(row.state):
        times[row.state] = row.t_end
    return CUSummary(row.cu_id, row.name, row.run, row.state, row.attempt, row.place, row.pilot, row.site,
                     row.host, row.created, row.updated, times, row.exit_code, row.reason, row.slots)


def _summary_of_record(rec: EntityRecord) -> CUSummary:
    desc = rec.data.get(DESCRIPTION) or {}
    return CUSummary(rec.id, desc.get("name"), rec.data.get(RUN), rec.state, rec.attempt, rec.pilot, rec.pilot,
                     None, None, rec.created, rec.updated, dict(rec.times), rec.data.get("exit_code"),
                     rec.data.get("reason") or rec.detail.get("reason"), desc.get("number_of_processes"))


def _merge_live(summary: CUSummary, rec: EntityRecord) -> CUSummary:
    """The index's summary with the live state of the coordination record (it may be ahead of the index)."""
    if rec.state == summary.state and rec.updated <= summary.updated:
        return summary
    times = dict(summary.times)
    times.update({k: v for k, v in rec.times.items() if v is not None})
    code = rec.data.get("exit_code", summary.exit_code)
    return CUSummary(summary.id, summary.name, summary.run or rec.data.get(RUN), rec.state, rec.attempt,
                     summary.place, rec.pilot or summary.pilot, summary.site, summary.host, summary.created,
                     rec.updated, times, None if code is None else int(code),
                     rec.data.get("reason") or rec.detail.get("reason") or summary.reason, summary.slots)


def _transfer_item(t: Any) -> TransferItem:
    detail = dict(t.detail or {})
    return TransferItem(t.du, t.category or "", int(t.bytes), float(t.seconds), t.time,
                        detail.get("source_pd") or t.source_url, detail.get("destination_pd") or t.destination_url,
                        t.pilot, t.cu, bool(t.ok))

