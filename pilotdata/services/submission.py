"""Recording ComputeUnits: validate their descriptions, record them in chunks, bind them at once if asked.

Used by every way in: :meth:`ComputeDataService.submit_compute_units
<pilotdata.services.ComputeDataService.submit_compute_units>` (which binds each chunk late),
:meth:`PilotCompute.submit_compute_unit <pilotdata.services.PilotCompute.submit_compute_unit>` (bound to
that pilot) and ``pdata submit`` (:func:`bind_now`: best pilot now, else the shared queue).

Nothing recorded is ever stranded by the client's death. A CU whose place is known when it is
recorded (bound to a pilot by the caller, or needing no placement at all, for the CDS) is recorded
Pending on its queue in one atomic step. Every other CU is recorded *unbound* under a
:class:`BinderLease` (the CDS's id, or a one-off id), atomically with its creation; a bind moves it New
-> Pending and onto its queue in one atomic step. If the client dies between the two, its lease lapses
(:attr:`Session.bind_lease <pilotdata.session.Session.bind_lease>` seconds, 30 by default) and the next
agent heartbeat or client refresh adopts the CUs onto the shared queue.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from pilotdata.coordination import SHARED_QUEUE, TransitionRequest
from pilotdata.descriptions import ComputeUnitDescription
from pilotdata.errors import AlreadyExistsError, DescriptionError
from pilotdata.records import DESCRIPTION, PLACEMENT, RUN
from pilotdata.services.binder import ANYWHERE, bind_round, runs_anywhere
from pilotdata.services.compute_unit import ComputeUnit
from pilotdata.session import Session
from pilotdata.states import ComputeUnitState, Kind


class BinderLease:
    """A binder's lease on the CUs it recorded and has not bound yet (:meth:`Coordination.hold_unbound
    <pilotdata.coordination.base.Coordination.hold_unbound>`); renewed at most every third of its TTL."""

    def __init__(self, session: Session, binder: str | None = None, ttl: float | None = None) -> None:
        self.session = session
        self.binder = binder or f"submit-{uuid.uuid4().hex[:16]}"
        self.ttl = session.bind_lease if ttl is None else ttl
        self._renewed = -math.inf

    def renew(self, *, now: bool = False) -> None:
        """Extend the lease by its TTL (only when a third of it has passed, unless ``now``)."""
        if now or time.monotonic() - self._renewed >= self.ttl / 3:
            self.session.coord.hold_unbound(self.binder, self.ttl)
            self._renewed = time.monotonic()

    def end(self) -> None:
        """Give the lease up: CUs still unbound are adopted onto the shared queue at the next round."""
        self.session.coord.hold_unbound(self.binder, 0)
        self._renewed = -math.inf


SUBMIT_CHUNK = 250
"""CUs recorded (and bound) per step of a bulk submission: the first ones can start while the rest
are still being recorded, instead of every CU waiting for the whole batch (at most 65,536: see
:func:`new_cu_ids`)."""

UnitDescription = Mapping[str, Any] | ComputeUnitDescription
"""A CU description as the Pilot-API takes it: a BigJob dict or the typed description."""


def validate_units(
    session: Session, descriptions: Sequence[UnitDescription], *, bigjob_shell: bool = False,
) -> list[ComputeUnitDescription]:
    """Every description, typed (BigJob idioms applied); nothing is recorded.

    ``bigjob_shell``: a dict that does not set ``shell`` runs through the shell, as BigJob's agent ran
    every CU (the Pilot-API's submit calls pass True; typed descriptions keep their own ``shell``).
    A bad description raises :class:`DescriptionError` naming its index (when there are several) and field.
    """
    descs: list[ComputeUnitDescription] = []
    for i, d in enumerate(descriptions):
        try:
            d = _du_working_directory(session, d)
            if bigjob_shell and isinstance(d, Mapping) and d.get("shell") in (None, ""):
                d = {**d, "shell": True}
            descs.append(ComputeUnitDescription.coerce(d))
        except DescriptionError as exc:
            if len(descriptions) == 1:
                raise
            raise DescriptionError(f"compute unit #{i}: {exc}", field=exc.field, value=exc.value) from exc
    _check_data_units(session, descs)
    return descs


def _check_data_units(session: Session, descs: Sequence[ComputeUnitDescription]) -> None:
    """Every DataUnit named in ``input_data`` / ``output_data`` exists (one read for all of them)."""
    named = {ref.du_id: field for d in descs for field, refs in (("input_data", d.input_data),
                                                                   ("output_data", d.output_data)) for ref in refs}
    if not named:
        return
    ids = sorted(named)
    for du_id, record in zip(ids, session.coord.get_many(Kind.DU, ids), strict=True):
        if record is None:
            index = next(i for i, d in enumerate(descs)
                         if du_id in {r.du_id for r in (*d.input_data, *d.output_data)})
            where = f"compute unit #{index}: " if len(descs) > 1 else ""
            raise DescriptionError(f"{where}{named[du_id]}: DataUnit {du_id!r} does not exist",
                                   field=named[du_id], value=du_id)


def new_cu_id() -> str:
    """One fresh ComputeUnit id, random (``cu-`` and 16 hex digits), for a handle given out before the CU
    is recorded; a chunk recorded at once takes :func:`new_cu_ids`."""
    return f"cu-{uuid.uuid4().hex[:16]}"


@dataclass
class RecordedChunk:
    """One chunk of a submission, recorded: every CU's id (in order), and those left for the caller to bind."""

    ids: list[str]
    unbound: dict[str, ComputeUnitDescription]
    """The CUs recorded New under the lease (id -> typed description), in order."""


def record_units(
    session: Session, descs: list[ComputeUnitDescription], *, pilot: str | None = None, cds: str | None = None,
    run: str | None = None, lease: BinderLease | None = None, queue_anywhere: bool = False,
    ids: Sequence[str] | None = None,
) -> Iterator[RecordedChunk]:
    """Record the CUs in chunks of :data:`SUBMIT_CHUNK`; yield each chunk once it is recorded.

    ``descs`` is consumed: emptied as its chunks are recorded, so a million typed descriptions are not
    all kept until the last chunk. ``run``: the id of the run they belong to (:mod:`pilotdata.runs`).

    Where each CU goes, in the atomic step that records it:

    * ``pilot`` given: bound to it (Pending on its queue);
    * ``queue_anywhere`` and a CU that needs no placement (:func:`~pilotdata.services.binder.runs_anywhere`):
      Pending on the shared queue, where any binding round would put it;
    * otherwise New, unbound under ``lease`` (default: a one-off lease of this call), for the caller to
      bind (:attr:`RecordedChunk.unbound`). A coordination failure part-way leaves the chunks recorded
      before it: bound or queued, or unbound under the lease (bound by the caller, or adopted once the
      lease lapses).

    ``ids``: the CUs' ids, in order (a caller that handed out handles before recording them); default
    fresh ones, a chunk's sharing a base (:func:`new_cu_ids`).
    """
    lease = lease or BinderLease(session)
    extra = {RUN: run} if run is not None else {}
    given = None if ids is None else list(reversed(ids))
    if given is not None and len(given) != len(descs):
        raise ValueError(f"{len(given)} ids for {len(descs)} ComputeUnits")
    descs.reverse()  # popped from the end, in submission order
    while descs:
        n = min(SUBMIT_CHUNK, len(descs))
        chunk = [descs.pop() for _ in range(n)]
        chunk_ids = None if given is None else [given.pop() for _ in range(n)]
        payloads: list[Mapping[str, Any]] = [{DESCRIPTION: d.to_dict(), "cds": cds, **extra} for d in chunk]
        if pilot is not None:
            made = _create(session, payloads, chunk_ids, queue=pilot,
                           detail={"pilot": pilot, PLACEMENT: "bound by user"})
            yield RecordedChunk(made, {})
            continue
        queued = [runs_anywhere(d) for d in chunk] if queue_anywhere else [False] * len(chunk)

        anywhere: Iterator[str] = iter([])
        if any(queued):
            anywhere = iter(_create(session, _pick(payloads, queued, True), _pick(chunk_ids, queued, True),
                                    queue=SHARED_QUEUE, detail={"pilot": None, PLACEMENT: ANYWHERE}))
        unbound: Iterator[str] = iter([])
        if not all(queued):
            lease.renew()
            unbound = iter(_create(session, _pick(payloads, queued, False), _pick(chunk_ids, queued, False),
                                   binder=lease.binder))
        made = [next(anywhere) if q else next(unbound) for q in queued]
        yield RecordedChunk(made, {i: d for i, d, q in zip(made, chunk, queued) if not q})


T = TypeVar("T")


@overload
def _pick(items: list[T], queued: list[bool], wanted: bool) -> list[T]: ...
@overload
def _pick(items: None, queued: list[bool], wanted: bool) -> None: ...
def _pick(items: list[T] | None, queued: list[bool], wanted: bool) -> list[T] | None:
    """The items whose CU is queued at once (``wanted`` True) or left unbound (False); None stays None."""
    return None if items is None else [x for x, q in zip(items, queued, strict=True) if q is wanted]


ID_TRIES = 5
"""Fresh id bases tried for one chunk before a taken id is reported (each try is a 2**-48 chance)."""


def new_cu_ids(n: int) -> list[str]:
    """``n`` fresh CU ids (``cu-`` and 16 hex digits): a random 48-bit base and a 16-bit counter.

    One chunk's ids are neighbours in every index keyed by id, so recording it writes a few B-tree pages
    instead of one per CU (SQLite: 7,600 -> 16,000 CUs/s at 100,000 CUs). The backend refuses a taken id
    atomically (:meth:`~pilotdata.coordination.base.Coordination.create_many`) and the chunk is recorded
    again under a new base, so uniqueness never rests on the odds.
    """
    if not 0 < n <= 0x10000:
        raise ValueError(f"ids come in chunks of 1 to 65,536, not {n}")
    base = uuid.uuid4().hex[:12]
    return [f"cu-{base}{i:04x}" for i in range(n)]


def _create(session: Session, payloads: Sequence[Mapping[str, Any]], ids: Sequence[str] | None = None,
            **how: Any) -> list[str]:
    """Record CUs with these payloads under ``ids`` (default: fresh ones, a new base if one is taken;
    ``how``: ``create_many``'s ``binder`` or ``queue`` and ``detail``); return the ids, in order."""
    if ids is not None:  # handed out already: a taken one (a 2**-64 chance) is an error, all or nothing
        session.coord.create_many(Kind.CU, list(zip(ids, payloads, strict=True)), **how)
        return list(ids)
    for attempt in range(ID_TRIES):
        fresh = new_cu_ids(len(payloads))
        try:
            session.coord.create_many(Kind.CU, list(zip(fresh, payloads, strict=True)), **how)
            return fresh
        except AlreadyExistsError:  # nothing was recorded: all or nothing
            if attempt == ID_TRIES - 1:
                raise
    raise AssertionError("unreachable")


def submit_units(
    session: Session, descriptions: Sequence[UnitDescription], *,
    pilot: str | None = None, cds: str | None = None, run: str | None = None,
    on_chunk: Callable[[list[str]], None] | None = None, bigjob_shell: bool = False,
) -> list[ComputeUnit]:
    """Validate every description, then record the CUs (New) in chunks of :data:`SUBMIT_CHUNK`.

    Each chunk is bound to ``pilot`` if given, then passed to ``on_chunk``. A bad description raises
    :class:`DescriptionError` naming its index and field; nothing is recorded. (A coordination failure
    part-way leaves the chunks recorded before it.) ``bigjob_shell``: see :func:`validate_units`.
    """
    ids: list[str] = []
    lease = BinderLease(session)
    descs = validate_units(session, descriptions, bigjob_shell=bigjob_shell)
    for chunk in record_units(session, descs, pilot=pilot, cds=cds, run=run, lease=lease):
        ids.extend(chunk.ids)
        if on_chunk is not None:
            on_chunk(list(chunk.ids))
    return [ComputeUnit(i, session=session) for i in ids]


def bind_now(session: Session, cu_ids: Sequence[str]) -> None:
    """Bind New CUs at once, for callers that will not stay to bind late (the CLI, scripts that exit).

    Each goes to its best pilot now (no holding back for a better one); a CU no live pilot can take yet
    goes to the shared queue, where the next pilot to start takes it. Bad placements (a CU wider than
    every pilot, a failed input) still end Failed with the reason.
    """
    coord = session.coord
    bind_round(coord, cu_ids, {}, final=True)
    left = [r.id for r in coord.get_many(Kind.CU, list(cu_ids))
            if r is not None and r.state == ComputeUnitState.NEW]
    if not left:
        return
    why = {"pilot": None, PLACEMENT: "no live pilot could take it when submitted: shared queue"}
    coord.transition_many(Kind.CU, [TransitionRequest(i, ComputeUnitState.PENDING, expected=ComputeUnitState.NEW,
                                                      detail=why, queue=SHARED_QUEUE)
                                    for i in left])


def _du_working_directory(session: Session, desc: UnitDescription) -> UnitDescription:
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
