"""ComputeDataService: the entry point that places DataUnits and ComputeUnits (BigJob's CDS).

It holds PilotComputeServices and PilotDataServices, puts each submitted DataUnit on a PilotData
chosen by labels and free quota (:func:`placement.choose_store`), and binds each ComputeUnit late to
the pilot with the earliest estimated completion (:mod:`pilotdata.services.binder`). A background
thread keeps binding held CUs, refreshes pilots (batch job ended -> pilot final) and takes back the
work of lost pilots. ``wait()`` blocks on the event stream, never on a sleep loop.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pilotdata.dataunits import DataUnits, replicas
from pilotdata.descriptions import ComputeUnitDescription, DataUnitDescription, affinity_labels, affinity_path
from pilotdata.errors import DescriptionError, StoreError
from pilotdata.services.binder import bind_round
from pilotdata.services.compute_unit import ComputeUnit
from pilotdata.services.data_unit import DataUnit
from pilotdata.services.pilot_compute import PilotComputeService
from pilotdata.services.pilot_data import PilotData, PilotDataService
from pilotdata.services.policy import FailurePolicy
from pilotdata.services.snapshot import demand_of, mean_task_seconds, site_of, take_snapshot
from pilotdata.services.waiting import wait_for_states, wait_until
from pilotdata.session import Session, resolve
from pilotdata.states import ComputeUnitState, DataUnitState, Kind
from placement import (
    BandwidthModel,
    NoEligibleStoreError,
    StoreInfo,
    Weights,
    choose_store,
    rank,
    replication_plan,
)

log = logging.getLogger(__name__)


SUBMIT_CHUNK = 250
"""CUs recorded (and bound) per step of a bulk submission: the first ones can start while the rest
are still being recorded, instead of every CU waiting for the whole batch."""


def submit_units(
    session: Session, descriptions: Sequence[Mapping[str, Any] | ComputeUnitDescription], *,
    pilot: str | None = None, cds: str | None = None,
    on_chunk: Callable[[list[str]], None] | None = None,
) -> list[ComputeUnit]:
    """Validate every description, then record the CUs (New) in chunks of :data:`SUBMIT_CHUNK`.

    Each chunk is bound to ``pilot`` if given, then passed to ``on_chunk`` (the CDS binds it there).
    A bad description raises :class:`DescriptionError` naming its index and field; nothing is
    recorded. (A coordination failure part-way leaves the chunks recorded before it.)
    """
    descs: list[ComputeUnitDescription] = []
    for i, d in enumerate(descriptions):
        try:
            descs.append(ComputeUnitDescription.coerce(_du_working_directory(session, d)))
        except DescriptionError as exc:
            if len(descriptions) == 1:
                raise
            raise DescriptionError(f"compute unit #{i}: {exc}", field=exc.field, value=exc.value) from exc
    from pilotdata.coordination import TransitionRequest

    coord = session.coord
    ids = [f"cu-{uuid.uuid4().hex[:16]}" for _ in descs]
    for start in range(0, len(ids), SUBMIT_CHUNK):
        part = ids[start:start + SUBMIT_CHUNK]
        coord.create_many(Kind.CU, [(i, {"description": d.to_dict(), "cds": cds})
                                    for i, d in zip(part, descs[start:start + SUBMIT_CHUNK])])
        if pilot is not None:
            coord.transition_many(Kind.CU, [TransitionRequest(i, ComputeUnitState.PENDING, expected="New",
                                                              detail={"pilot": pilot, "placement": "bound by user"})
                                            for i in part])
            coord.enqueue(part, pilot)
        if on_chunk is not None:
            on_chunk(part)
    return [ComputeUnit(i, session=session) for i in ids]


def bind_now(session: Session, cu_ids: Sequence[str]) -> None:
    """Bind New CUs at once, for callers that will not stay to bind late (the CLI, scripts that exit).

    Each goes to its best pilot now (no holding back for a better one); a CU no live pilot can take yet
    goes to the shared queue, where the next pilot to start takes it. Bad placements (a CU wider than
    every pilot, a failed input) still end Failed with the reason.
    """
    from pilotdata.coordination import TransitionRequest

    coord = session.coord
    bind_round(coord, cu_ids, {}, final=True)
    left = [r.id for r in coord.get_many(Kind.CU, list(cu_ids)) if r is not None and r.state == "New"]
    if not left:
        return
    why = {"pilot": None, "placement": "no live pilot could take it when submitted: shared queue"}
    results = coord.transition_many(Kind.CU, [TransitionRequest(i, ComputeUnitState.PENDING, expected="New",
                                                                detail=why) for i in left])
    coord.enqueue([r.id for r in results if r.ok], None)


def _du_working_directory(session: Session, desc: Any) -> Any:
    """BigJob idiom: ``"working_directory": data_unit.url`` runs the CU on that DataUnit's files.

    Such a description becomes one with the DU in ``input_data`` (linked into the sandbox) and no
    working directory of its own.
    """
    if not isinstance(desc, Mapping):
        return desc
    wd = desc.get("working_directory")
    if not isinstance(wd, str) or not wd.startswith("du-") or "/" in wd or not session.coord.exists(Kind.DU, wd):
        return desc
    inputs = list(desc.get("input_data") or [])
    if wd not in inputs:
        inputs.append(wd)
    return {**desc, "working_directory": None, "input_data": inputs}


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
        self._first_seen: dict[str, float] = {}
        self._uploads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._bind_lock = threading.Lock()
        self._fallback_pcs: PilotComputeService | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ops = DataUnits(self._session)
        self._session.on_close(self.close)

    @property
    def session(self) -> Session:
        """The session this service talks through."""
        return self._session

    def get_url(self) -> str:
        """This service's id."""
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
            self._ops = DataUnits(theirs)
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

    def list_pilot_compute(self) -> list[Any]:
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
        from pilotdata.dataunits import resolve_sources

        desc = DataUnitDescription.coerce(data_unit_description)
        sources = resolve_sources(desc.file_urls)
        size = sum(s.fs.size(f"{s.root.rstrip('/')}/{n}") for s in sources for n in s.names)
        pd_id = getattr(pilot_data, "id", pilot_data) if pilot_data is not None else self._choose_pd(desc, size)
        du_id = self._ops.register(desc)
        with self._lock:
            self._dus.append(du_id)

        def run() -> None:
            try:
                if desc.file_urls:
                    self._ops.upload(du_id, str(pd_id), desc.file_urls)
                else:
                    self._ops.open_empty(du_id, str(pd_id))
            except Exception as exc:  # the DU must end Failed with the reason, so wait() returns
                log.warning("DataUnit %s: %s", du_id, exc)
                self._ops.fail(du_id, f"upload to {pd_id} failed: {exc}")

        if background:
            thread = threading.Thread(target=run, name=f"upload-{du_id}", daemon=True)
            self._uploads.append(thread)
            thread.start()
        else:
            run()
        return DataUnit(du_id, session=self._session)

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
    def submit_compute_unit(self, compute_unit_description: Mapping[str, Any] | ComputeUnitDescription) -> ComputeUnit:
        """Record a ComputeUnit and bind it (now or later) to the best pilot."""
        return self.submit_compute_units([compute_unit_description])[0]

    def submit_compute_units(
        self, descriptions: Sequence[Mapping[str, Any] | ComputeUnitDescription]
    ) -> list[ComputeUnit]:
        """Record many ComputeUnits and bind them, chunk by chunk (the first run while the rest are
        recorded); bad input records nothing."""
        with self._lock:
            earlier = self._cus[-200:]  # run times of earlier CUs inform the binding; new ones have none

        def bind_chunk(ids: list[str]) -> None:
            with self._lock:
                self._cus.extend(ids)
                self._unbound.extend(ids)
            self._bind(recent=earlier)

        cus = submit_units(self._session, descriptions, cds=self.id, on_chunk=bind_chunk)
        self._ensure_thread()
        return cus

    def list_compute_units(self) -> list[ComputeUnit]:
        """ComputeUnits submitted through this service."""
        return [ComputeUnit(i, session=self._session) for i in self._cus]

    def explain(self, cu: ComputeUnit | str) -> str:
        """How the pilots rank for this CU now, and why it was bound where it was."""
        cu_id = getattr(cu, "id", cu)
        return explain_cu(self._session, str(cu_id), weights=self.weights, bandwidth=self.bandwidth,
                          required=self.required_affinity)

    # ------------------------------------------------------------ binding loop
    def _bind(self, final: bool = False, recent: Sequence[str] | None = None) -> None:
        with self._lock:
            pending = list(self._unbound)
            if recent is None:
                recent = self._cus[-200:]
        if not pending:
            return
        with self._bind_lock:  # the submitting thread and the binder thread take turns
            outcome = bind_round(self._session.coord, pending, self._first_seen, model=self.bandwidth,
                                 weights=self.weights, required_affinity=self.required_affinity, final=final,
                                 recent=recent, before_enqueue=self._replicate_for)
        # bound, failed, or moved by someone else (no longer New): only the held ones stay unbound
        settled = set(pending).difference(outcome.held)
        with self._lock:
            self._unbound = [i for i in self._unbound if i not in settled]

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
        cus = coord.get_many(Kind.CU, [c for c, p in bound.items() if p])
        pilots = {r.id: r for r in coord.get_many(Kind.PILOT, sorted({p for p in bound.values() if p}))
                  if r is not None}
        readers: dict[str, dict[tuple[str, ...], set[str]]] = {}
        for rec in cus:
            pilot = pilots.get(bound.get(rec.id, "")) if rec is not None else None
            if rec is None or pilot is None:
                continue
            site = site_of(pilot.data.get("labels") or {})
            for ref in (rec.data.get("description") or {}).get("input_data") or ():
                du_id = str(next(iter(ref))) if isinstance(ref, dict) else str(ref)
                if du_id not in (pilot.data.get("cached_dus") or ()):
                    readers.setdefault(du_id, {}).setdefault(site, set()).add(pilot.id)
        if not readers:
            return
        snap = take_snapshot(coord, mean_task_seconds([]), readers)
        for du_id, by_site in readers.items():
            rec = snap.du_records.get(du_id)
            if rec is None or rec.state != DataUnitState.RUNNING.value:
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
        self._session.coord.update_data(Kind.DU, du_id, {f"replica:{pd_id}": {"status": "pending",
                                                                               "time": time.time()}})

        def run() -> None:
            try:
                self._ops.replicate(du_id, pd_id, source=source)
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

        wait_for_states(self._session.coord, Kind.DU, list(self._dus), {DataUnitState.RUNNING.value},
                        timeout=left(), tick=self._tick)
        wait_until(self._session.coord, Kind.CU, list(self._cus), timeout=left(), tick=self._tick)

    def cancel(self) -> None:
        """Stop the binding thread and cancel every unfinished CU of this service (BigJob's ``cancel``)."""
        self.close()
        for cu in self.list_compute_units():
            cu.cancel()

    def close(self) -> None:
        """Stop the background threads (CUs keep running on their pilots)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        for thread in self._uploads:
            thread.join(timeout=30)
        if self._fallback_pcs is not None:
            self._fallback_pcs.close()

    def get_state(self) -> str:
        """``Running`` while any CU is unfinished, else ``Done``."""
        recs = self._session.coord.get_many(Kind.CU, list(self._cus))
        return "Running" if any(r is not None and r.state not in ("Done", "Failed", "Canceled") for r in recs) \
            else "Done"

    def get_details(self) -> dict[str, Any]:
        """Counts of CUs by state, DUs, pilots and PilotData."""
        counts: dict[str, int] = {}
        for r in self._session.coord.get_many(Kind.CU, list(self._cus)):
            if r is not None:
                counts[r.state] = counts.get(r.state, 0) + 1
        return {"id": self.id, "compute_units": counts, "data_units": list(self._dus),
                "pilots": [p.id for p in self.list_pilot_compute()],
                "pilot_data": [p.id for p in self.list_pilot_data()]}

    def __repr__(self) -> str:
        return f"ComputeDataService({self.id!r}, {self._session!r})"


def explain_cu(session: Session, cu_id: str, *, weights: Weights | None = None,
               bandwidth: BandwidthModel | None = None, required: bool = False) -> str:
    """The placement scores of every live pilot for ``cu_id`` now, plus the recorded binding reason."""
    coord = session.coord
    rec = coord.get(Kind.CU, cu_id)
    desc = rec.data.get("description") or {}
    refs = [*(desc.get("input_data") or ()), *(desc.get("output_data") or ())]
    du_ids: Iterable[str] = [str(next(iter(r))) if isinstance(r, dict) else str(r) for r in refs]
    snap = take_snapshot(coord, mean_task_seconds([]), du_ids)
    lines = [f"{cu_id}: state {rec.state}, pilot {rec.pilot or '-'}, attempt {rec.attempt}"]
    placement_reason = rec.data.get("placement") or rec.detail.get("placement")
    if placement_reason:
        lines.append(f"bound: {placement_reason}")
    try:
        demand = demand_of(cu_id, desc, snap, required=required)
    except KeyError as exc:
        lines.append(f"cannot score now: input DataUnit {exc} is gone")
        return "\n".join(lines)
    lines.append(rank(demand, snap.candidates, bandwidth or BandwidthModel(), weights=weights or Weights()).explain())
    return "\n".join(lines)

