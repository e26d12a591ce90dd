"""ComputeDataService: the entry point that places DataUnits and ComputeUnits (BigJob's CDS).

It holds PilotComputeServices and PilotDataServices, puts each submitted DataUnit on a PilotData
chosen by labels and free quota (:func:`placement.choose_store`), and binds each ComputeUnit late to
the pilot with the earliest estimated completion (:mod:`pilotdata.services.binder`). A background
thread keeps binding held CUs, refreshes pilots (batch job ended -> pilot final) and takes back the
work of lost pilots. ``wait()`` blocks on the event stream, never on a sleep loop.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from pilotdata.data import ReplicaManager, resolve_sources
from pilotdata.data.replica_targets import add_replicas, check_replica_count
from pilotdata.descriptions import (
    ComputeUnitDescription,
    DataUnitDescription,
    affinity_labels,
    affinity_path,
    site_of,
)
from pilotdata.errors import DescriptionError, PilotDataError, StoreError, TimeoutExpired
from pilotdata.records import ReplicaStatus, cu_description, replica_patch, replicas
from pilotdata.runs import Origin, Run, close_run, named_run, run_for
from pilotdata.services.binder import bind_round, explain_cu
from pilotdata.services.compute_unit import ComputeUnit
from pilotdata.services.data_unit import DataUnit
from pilotdata.services.pilot_compute import PilotCompute, PilotComputeService
from pilotdata.services.pilot_data import PilotData, PilotDataService
from pilotdata.services.policy import FailurePolicy
from pilotdata.services.snapshot import median_task_seconds, take_snapshot
from pilotdata.services.submission import (
    SUBMIT_CHUNK,
    BinderLease,
    UnitDescription,
    new_cu_id,
    record_units,
    validate_units,
)
from pilotdata.services.waiting import wait_for_states, wait_until
from pilotdata.session import Session, resolve
from pilotdata.states import DataUnitState, Kind, State, is_final
from placement import BandwidthModel, NoEligibleStoreError, StoreInfo, Weights, choose_store, replication_plan

log = logging.getLogger(__name__)

SUBMIT_LINGER = 0.005
"""Seconds a CU submitted alone (:meth:`ComputeDataService.submit_compute_unit`) waits for the next ones
before they are recorded together: a loop of single submits costs a round trip per batch, not three per
CU. See :meth:`ComputeDataService.submit_compute_unit` for what is guaranteed meanwhile."""


class ComputeDataService:
    """Places DataUnits and ComputeUnits on the pilots and PilotData it holds."""

    def __init__(
        self,
        coordination_url: str | None = None,
        *,
        namespace: str | None = None,
        session: Session | None = None,
        policy: FailurePolicy | None = None,
        affinity: str = "soft",
        weights: Weights | None = None,
        bandwidth: BandwidthModel | None = None,
        replication_copies: int = 3,
        cds_url: str | None = None,
        run: str | None = None,
        submit_linger: float = SUBMIT_LINGER,
    ) -> None:
        if affinity not in ("soft", "required"):
            raise DescriptionError(f"affinity: expected 'soft' or 'required', got {affinity!r}",
                                   field="affinity", value=affinity)
        self._session = resolve(session, coordination_url, namespace)
        self._adopt_session = session is None and coordination_url is None and namespace is None
        self.id = cds_url or f"cds-{uuid.uuid4().hex[:12]}"
        self.policy = policy or FailurePolicy()
        self.required_affinity = affinity == "required"
        self.weights = weights or Weights()
        self.bandwidth = bandwidth or BandwidthModel()
        self.replication_copies = replication_copies
        """At most this many replicas of a DataUnit (existing ones included); 1 disables replication."""
        self._pcs: list[PilotComputeService] = []
        self._pds: list[PilotDataService] = []
        self._cus: list[str] = []
        self._dus: list[str] = []
        self._unbound: list[str] = []
        self._descs: dict[str, ComputeUnitDescription] = {}
        """Typed descriptions of the unbound CUs, from their submission (parsed once, not every round)."""
        self._first_seen: dict[str, float] = {}
        self._uploads: list[threading.Thread] = []
        self._du_threads: list[threading.Thread] = []
        """Uploads (and number_of_replicas copies) of the DataUnits submitted here: wait() joins them."""
        self._lock = threading.Lock()
        self._bind_lock = threading.Lock()
        self._fallback_pcs: PilotComputeService | None = None
        self._lease = BinderLease(self._session, self.id)
        """This service's lease on the CUs it recorded and has not bound (renewed while it binds)."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._run_name = named_run(run)  # a bad name fails here, before anything is recorded
        self._run: Run | None = None
        self._run_closing: Run | None = None
        """The run :meth:`close` closes (once): this service's own run."""
        self.submit_linger = submit_linger
        """Seconds a single submit waits for more before they are recorded together; 0: each at once."""
        self._batch: list[tuple[str, ComputeUnitDescription]] = []
        """Single submits not recorded yet (id, validated description), in submit order."""
        self._batch_timer: threading.Timer | None = None
        self._flush_lock = threading.RLock()
        """One flush at a time, so a flush that returns has recorded everything submitted before it."""
        self._session.on_close(self.close)
        atexit.register(_flush_at_exit, weakref.ref(self))

    @property
    def run(self) -> str | None:
        """The id of this service's run (:mod:`pilotdata.runs`): the one named (``run=``, ``PDATA_RUN``),
        else its own, started with its first submission; ``None`` before that."""
        self.flush()
        return self._run.id if self._run is not None else self._run_name

    def _run_id(self) -> str:
        with self._lock:
            if self._run is None:
                self._run = self._run_closing = run_for(self._session.coord, self._run_name, origin=Origin.CDS,
                                                        cds=self.id)
            return self._run.id

    @property
    def session(self) -> Session:
        """The session this service talks through."""
        return self._session

    @property
    def _ops(self) -> ReplicaManager:
        return ReplicaManager(self._session.coord)

    def get_url(self) -> str:
        """This service's id."""
        return self.id

    def get_id(self) -> str:
        """This service's id (BigJob's ``get_id``)."""
        return self.id

    @property
    def url(self) -> str:
        """BigJob's ``cds.url``: the same as :meth:`get_url`."""
        return self.id

    # ------------------------------------------------------------ services
    def _join(self, service: PilotComputeService | PilotDataService) -> None:
        """Use the service's session when this CDS was made without one (BigJob's ``ComputeDataService()``
        next to services given a coordination URL); refuse services of another coordination."""
        theirs = service.session
        if theirs is self._session:
            return
        if self._adopt_session and not self._pcs and not self._pds and not self._cus and not self._dus:
            self._session = theirs
            theirs.on_close(self.close)
            return
        if (theirs.url, theirs.namespace) != (self._session.url, self._session.namespace):
            raise DescriptionError(
                f"{service!r} uses coordination {theirs.url} (namespace {theirs.namespace}) but this "
                f"ComputeDataService uses {self._session.url} (namespace {self._session.namespace})",
                field="coordination_url",
            )

    def add_pilot_compute_service(self, pcs: PilotComputeService) -> None:
        """Use the pilots of ``pcs``."""
        self._join(pcs)
        self._pcs.append(pcs)

    def remove_pilot_compute_service(self, pcs: PilotComputeService) -> None:
        """Stop using ``pcs`` (its pilots keep running)."""
        self._pcs.remove(pcs)

    def add_pilot_data_service(self, pds: PilotDataService) -> None:
        """Use the PilotData of ``pds``."""
        self._join(pds)
        self._pds.append(pds)

    def remove_pilot_data_service(self, pds: PilotDataService) -> None:
        """Stop using ``pds``."""
        self._pds.remove(pds)

    def list_pilot_compute(self) -> list[PilotCompute]:
        """Pilots of the services added."""
        return [p for pcs in self._pcs for p in pcs.list_pilots()]

    def list_pilot_data(self) -> list[PilotData]:
        """PilotData of the services added (every PD in the namespace if none was added)."""
        if not self._pds:
            return PilotDataService(session=self._session).list_pilots()
        return [p for pds in self._pds for p in pds.list_pilots()]

    # ------------------------------------------------------------ data
    def submit_data_unit(
        self, data_unit_description: Mapping[str, Any] | DataUnitDescription, *,
        pilot_data: PilotData | str | None = None, background: bool = True,
    ) -> DataUnit:
        """Create a DataUnit on a PilotData picked by labels and free quota, and upload its files.

        Local paths are checked first (a missing file raises :class:`DescriptionError`; nothing is
        recorded). The upload runs in the background unless ``background=False``; ``du.wait()``
        returns when it is usable (Running) or Failed with the reason.
        """
        desc = DataUnitDescription.coerce(data_unit_description)
        sources = resolve_sources(desc.file_urls)
        if pilot_data is None:
            pd_id = self._choose_pd(desc, sum(s.size() for s in sources))
        else:
            pd_id = str(getattr(pilot_data, "id", pilot_data))
        peers = [pd_id, *(pd.id for pd in self.list_pilot_data() if pd.id != pd_id)]
        check_replica_count(desc, peers)
        ops = self._ops
        du_id = ops.register(desc, run=self._run_id())
        with self._lock:
            self._dus.append(du_id)

        def run() -> None:
            ops.fill(du_id, pd_id, desc.file_urls)
            if desc.number_of_replicas and ops.record(du_id).state == DataUnitState.RUNNING:
                try:
                    add_replicas(ops, du_id, peers)
                except Exception as exc:  # recorded on the replica; the DU stays usable where it is
                    log.warning("DataUnit %s: number_of_replicas: %s", du_id, exc)

        if background:
            thread = threading.Thread(target=run, name=f"upload-{du_id}", daemon=True)
            self._uploads.append(thread)
            self._du_threads.append(thread)
            thread.start()
        else:
            run()
        return DataUnit(du_id, session=self._session)

    def get_data_unit(self, du_id: str) -> DataUnit | None:
        """BigJob's ``get_data_unit``: the DataUnit submitted through this service with that id, else None."""
        return DataUnit(du_id, session=self._session) if du_id in self._dus else None

    def _choose_pd(self, desc: DataUnitDescription, size: int) -> str:
        pds = self.list_pilot_data()
        if not pds:
            raise StoreError("no PilotData to put the DataUnit on: add a PilotDataService with a PilotData")
        infos = []
        for pd in pds:
            data = self._session.coord.get(Kind.PD, pd.id).data
            quota = data.get("size")
            free = None if quota is None else max(0, int(quota) - pd.store.used_bytes())
            infos.append(StoreInfo(pd.id, site_of(data.get("labels") or {}), free,
                                   {k: str(v) for k, v in (data.get("labels") or {}).items()}))
        wanted = {k: v for k, v in affinity_labels(desc).items() if v}
        try:
            return choose_store(size, infos, soft=wanted, near=affinity_path(desc))
        except NoEligibleStoreError as exc:
            raise StoreError(f"no PilotData can hold this DataUnit ({size} bytes): {exc}") from exc

    def list_data_units(self) -> list[DataUnit]:
        """DataUnits submitted through this service."""
        return [DataUnit(i, session=self._session) for i in self._dus]

    # ------------------------------------------------------------ compute
    def submit_compute_unit(self, compute_unit_description: UnitDescription) -> ComputeUnit:
        """Record a ComputeUnit and bind it (now or later) to the best pilot.

        The description is checked at once (bad input raises and records nothing). Consecutive calls
        are recorded together, in submit order: a CU is recorded within :attr:`submit_linger` seconds
        (5 ms by default), when :data:`~pilotdata.services.submission.SUBMIT_CHUNK` are waiting, or
        before any read through this service or the returned handle (``wait``, a state, ``list_...``,
        ``cancel``, ``close``, :meth:`flush`), whichever comes first. Until then it exists only in this
        process: a client killed within that window (``kill -9``, a crash of the interpreter) loses those
        CUs with it, never half-recorded and never run; anything a read or a wait saw was recorded, and
        a normal exit (an uncaught exception included) records what is waiting. ``submit_linger=0``
        records each CU before the call returns, as BigJob did; :meth:`submit_compute_units` always does.
        """
        if self.submit_linger <= 0:
            return self.submit_compute_units([compute_unit_description])[0]
        desc = validate_units(self._session, [compute_unit_description], bigjob_shell=True)[0]
        cu_id = new_cu_id()
        timer: threading.Timer | None = None
        with self._lock:
            self._batch.append((cu_id, desc))
            full = len(self._batch) >= SUBMIT_CHUNK
            if not full and self._batch_timer is None:
                timer = self._batch_timer = threading.Timer(self.submit_linger, self._flush_later)
                timer.daemon = True
        if full:
            self.flush()
        elif timer is not None:
            timer.start()
        return ComputeUnit(cu_id, session=self._session, before_read=self.flush)

    def flush(self) -> None:
        """Record the single submits still waiting (see :meth:`submit_compute_unit`); raises what a
        failed recording raised (they stay waiting for the next flush)."""
        with self._flush_lock:
            with self._lock:
                batch, self._batch = self._batch, []
                timer, self._batch_timer = self._batch_timer, None
            if timer is not None and timer is not threading.current_thread():
                timer.cancel()
            if not batch:
                return
            try:
                self._record_units([d for _, d in batch], [i for i, _ in batch])
            except BaseException:
                with self._lock:
                    recorded = set(self._cus)
                    self._batch[:0] = [(i, d) for i, d in batch if i not in recorded]
                raise

    def _flush_later(self) -> None:
        """The linger timer: record the waiting submits; a failure leaves them for the next flush."""
        try:
            self.flush()
        except Exception as exc:
            log.warning("could not record %d submitted ComputeUnit(s) yet (retried at the next read): %s",
                        len(self._batch), exc)

    def submit_compute_units(self, descriptions: Sequence[UnitDescription]) -> list[ComputeUnit]:
        """Record many ComputeUnits and bind them, chunk by chunk (the first run while the rest are
        recorded); bad input records nothing.

        A dict that does not set ``shell`` runs through ``/bin/sh`` as BigJob ran it (see
        :class:`~pilotdata.descriptions.ComputeUnitDescription`); say ``"shell": False`` for an argv.
        """
        descs = validate_units(self._session, descriptions, bigjob_shell=True)
        self.flush()  # single submits before these are recorded before them
        ids = self._record_units(descs)
        return [ComputeUnit(i, session=self._session) for i in ids]

    def _record_units(self, descs: list[ComputeUnitDescription], cu_ids: Sequence[str] | None = None) -> list[str]:
        """Record validated CUs (``descs`` is consumed) under the given ids (default: fresh ones, a chunk's
        neighbours in the indexes) and bind them, chunk by chunk; their ids."""
        run = self._run_id()
        with self._lock:
            earlier = self._cus[-200:]  # run times of earlier CUs inform the binding; new ones have none
        ids: list[str] = []
        for chunk in record_units(self._session, descs, cds=self.id, run=run, lease=self._lease,
                                  queue_anywhere=True, ids=cu_ids):
            with self._lock:
                self._cus.extend(chunk.ids)
                self._unbound.extend(chunk.unbound)
                self._descs.update(chunk.unbound)
            ids.extend(chunk.ids)
            if chunk.unbound:
                self._bind(recent=earlier)
        self._ensure_thread()
        return ids

    def list_compute_units(self) -> list[ComputeUnit]:
        """ComputeUnits submitted through this service."""
        self.flush()
        return [ComputeUnit(i, session=self._session) for i in self._cus]

    def explain(self, cu: ComputeUnit | str) -> str:
        """How the pilots rank for this CU now, and why it was bound where it was."""
        self.flush()
        cu_id = getattr(cu, "id", cu)
        return explain_cu(self._session.coord, str(cu_id), weights=self.weights, bandwidth=self.bandwidth,
                          required=self.required_affinity)

    # ------------------------------------------------------------ binding loop
    def _bind(self, final: bool = False, recent: Sequence[str] | None = None) -> None:
        with self._lock:
            pending = list(self._unbound)
            if recent is None:
                recent = self._cus[-200:]
        if not pending:
            return
        self._lease.renew()  # while CUs wait here for a pilot, they stay ours
        with self._bind_lock:  # the submitting thread and the binder thread take turns
            outcome = bind_round(self._session.coord, pending, self._first_seen, model=self.bandwidth,
                                 weights=self.weights, required_affinity=self.required_affinity, final=final,
                                 recent=recent, before_enqueue=self._replicate_for, descriptions=self._descs)
        # bound, failed, or moved by someone else (no longer New): only the held ones stay unbound
        settled = set(pending).difference(outcome.held)
        with self._lock:
            self._unbound = [i for i in self._unbound if i not in settled]
            for cu_id in settled:
                self._descs.pop(cu_id, None)
                self._first_seen.pop(cu_id, None)

    def _replicate_for(self, bound: Mapping[str, str]) -> None:
        """Replicate input DataUnits towards the sites their just-bound CUs run at, when it pays.

        Readers are counted per pilot that does not cache the DU yet (each pilot pulls once); the
        copies are chosen by :func:`placement.replication_plan` (Rucio-style, at most
        ``replication_copies`` replicas). A planned replica is marked pending at once, so agents at that
        site wait for it instead of each pulling from afar; it is copied in the background.
        """
        if self.replication_copies <= 1 or not any(bound.values()):
            return
        coord = self._session.coord
        pilots = {r.id: r for r in coord.get_many(Kind.PILOT, sorted({p for p in bound.values() if p}))
                  if r is not None}
        readers: dict[str, dict[tuple[str, ...], set[str]]] = {}
        for cu_id, pilot_id in bound.items():
            pilot = pilots.get(pilot_id)
            if pilot is None:
                continue
            desc = self._descs.get(cu_id) or cu_description(coord.get(Kind.CU, cu_id))
            site = site_of(pilot.data.get("labels") or {})
            for ref in desc.input_data:
                if ref.du_id not in (pilot.data.get("cached_dus") or ()):
                    readers.setdefault(ref.du_id, {}).setdefault(site, set()).add(pilot.id)
        if not readers:
            return
        snap = take_snapshot(coord, median_task_seconds([]), readers)
        for du_id, by_site in readers.items():
            rec = snap.du_records.get(du_id)
            if rec is None or rec.state != DataUnitState.RUNNING:
                continue
            taken = set(replicas(rec))  # complete, pending or failed: not planned again
            stores = [StoreInfo(pd, site) for pd, site in sorted(snap.pd_sites.items()) if pd not in taken]
            try:
                plan = replication_plan(snap.data_ref(du_id, None), {s: len(p) for s, p in by_site.items()},
                                        stores, self.bandwidth, copies_max=self.replication_copies)
            except ValueError as exc:
                log.warning("replication plan for %s: %s", du_id, exc)
                continue
            for copy in plan.copies:
                self._start_replica(du_id, copy.pd_id, copy.source_pd)

    def _start_replica(self, du_id: str, pd_id: str, source: str | None) -> None:
        self._session.coord.update_data(Kind.DU, du_id, replica_patch(pd_id, ReplicaStatus.PENDING))
        ops = self._ops

        def run() -> None:
            try:
                ops.replicate(du_id, pd_id, source=source)
                log.info("replicated %s to %s", du_id, pd_id)
            except Exception as exc:  # recorded on the replica (failed, reason); readers use another one
                log.warning("replication of %s to %s failed: %s", du_id, pd_id, exc)

        thread = threading.Thread(target=run, name=f"replicate-{du_id}-{pd_id}", daemon=True)
        self._uploads.append(thread)
        thread.start()

    def _pilot_services(self) -> list[PilotComputeService]:
        if self._pcs:
            return self._pcs
        if self._fallback_pcs is None:  # one for the life of this CDS: launchers (SSH clients) are reused
            self._fallback_pcs = PilotComputeService(session=self._session, policy=self.policy)
        return [self._fallback_pcs]

    def _refresh(self) -> None:
        for pcs in self._pilot_services():
            pcs.refresh()

    def _tick(self) -> None:
        """What a waiting caller does about once a second: keep binding and keep pilots honest."""
        self._refresh()
        with self._lock:
            unbound = bool(self._unbound)
        if unbound:
            self._ensure_thread()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=f"binder-{self.id}", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        coord = self._session.coord
        cursor = coord.last_cursor()
        last_refresh = 0.0
        while not self._stop.is_set():
            try:
                events = coord.events_after(cursor, limit=1000, block=0.5)
                if events:
                    cursor = events[-1].cursor
                self._bind()
                if time.monotonic() - last_refresh > 2.0:
                    self._refresh()
                    last_refresh = time.monotonic()
            except Exception:  # the loop must survive a transient backend error; it is logged
                log.exception("binder loop error")
                self._stop.wait(0.5)
            with self._lock:
                if not self._unbound and not any(t.is_alive() for t in self._uploads):
                    self._thread = None  # idle: the next submit (or a waiter's tick) starts a new one
                    return
        with self._lock:
            self._thread = None

    # ------------------------------------------------------------ waiting
    def wait(self, timeout: float | None = None) -> None:
        """Block until every CU of this service is final and every DU is usable or final."""
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        self.flush()
        wait_for_states(self._session.coord, Kind.DU, list(self._dus), {DataUnitState.RUNNING},
                        timeout=left(), tick=self._tick)
        for thread in list(self._du_threads):  # the number_of_replicas copies follow the first upload
            thread.join(left())
            if thread.is_alive():
                raise TimeoutExpired(f"timed out after {timeout}s: a DataUnit is still being replicated")
        wait_until(self._session.coord, Kind.CU, list(self._cus), timeout=left(), tick=self._tick)

    def cancel(self) -> None:
        """Stop the binding thread and cancel every unfinished CU of this service (BigJob's ``cancel``)."""
        self.close()
        for cu in self.list_compute_units():
            cu.cancel()

    def close(self) -> None:
        """Stop the background threads (CUs keep running on their pilots).

        CUs still waiting here to be bound are given up: the next agent heartbeat puts them on the
        shared queue, where any pilot may run them. Single submits not recorded yet are recorded first.
        """
        try:
            self.flush()
        except PilotDataError as exc:  # said loudly; close() goes on stopping the threads
            log.error("could not record %d submitted ComputeUnit(s): %s", len(self._batch), exc)
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        with self._lock:
            unbound = bool(self._unbound)
        if unbound and self._session.is_open:
            try:  # once, without riding out an outage: the lease lapses by itself anyway
                self._session.coord.inner.hold_unbound(self.id, 0)
            except PilotDataError as exc:
                log.warning("could not give up the binder lease of %s: %s", self.id, exc)
        for thread in self._uploads:
            thread.join(timeout=30)
        if self._fallback_pcs is not None:
            self._fallback_pcs.close()
        run, self._run_closing = self._run_closing, None
        if run is not None and run.origin == Origin.CDS:
            try:
                close_run(self._session.coord, run.id)
            except PilotDataError as exc:  # closing a run is bookkeeping: never fail a close() for it
                log.warning("could not close run %s: %s", run.id, exc)

    def get_state(self) -> str:
        """``Running`` while any CU is unfinished, else ``Done``."""
        self.flush()
        recs = self._session.coord.get_many(Kind.CU, list(self._cus))
        busy = any(r is not None and not is_final(r.state) for r in recs)
        return State.Running if busy else State.Done

    def get_details(self) -> dict[str, Any]:
        """Counts of CUs by state, DUs, pilots and PilotData."""
        self.flush()
        counts: dict[str, int] = {}
        for r in self._session.coord.get_many(Kind.CU, list(self._cus)):
            if r is not None:
                counts[r.state] = counts.get(r.state, 0) + 1
        return {"id": self.id, "run": self.run, "compute_units": counts, "data_units": list(self._dus),
                "pilots": [p.id for p in self.list_pilot_compute()],
                "pilot_data": [p.id for p in self.list_pilot_data()]}

    def __repr__(self) -> str:
        return f"ComputeDataService({self.id!r}, {self._session!r})"


def _flush_at_exit(ref: weakref.ReferenceType[ComputeDataService]) -> None:
    """At interpreter exit: record the single submits a service still holds (see ``submit_compute_unit``)."""
    cds = ref()
    if cds is None or not cds._batch:
        return
    try:
        cds.flush()
    except Exception as exc:
        log.error("could not record %d submitted ComputeUnit(s) at exit: %s", len(cds._batch), exc)
