"""Late binding of ComputeUnits to pilots, with a bounded delay (the scheduler of a CDS).

Each round reads a :class:`~pilotdata.services.snapshot.Snapshot`, ranks the live pilots for every
unbound CU (in submission order, adding each binding's load before the next, so work spreads) and
asks :func:`placement.decide` what to do:

* bind now to the best pilot when it has a free slot, or when no pilot is idle (its queue is then
  the earliest place the CU can run; the estimate already counts the queue);
* hold the CU while a busy, better-placed pilot is expected free sooner than the data move to an idle
  pilot would take, never longer (cf. Spark's locality-wait pathology); then bind to the idle one;
* CUs with no inputs and no affinity go to the shared queue: any pilot may take them.

A CU whose input DataUnit failed becomes Failed with the reason; one whose inputs are still being
uploaded waits for them. A bind is a compare-and-set New -> Pending, so two binders never bind one CU
twice. The reason of every binding is recorded in the transition detail, and a data-aware one also in
the CU's data in the same atomic step (:func:`explain_cu` and ``pdata explain`` show it).

Each CU's description is parsed once into its typed :class:`~pilotdata.descriptions.ComputeUnitDescription`:
the caller keeps them across rounds (``descriptions``), the CDS from the submission itself.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass

from pilotdata.coordination import SHARED_QUEUE, Coordination, TransitionRequest
from pilotdata.descriptions import ComputeUnitDescription
from pilotdata.errors import DescriptionError
from pilotdata.records import PLACEMENT, cu_description
from pilotdata.services.snapshot import Snapshot, demand_of, median_task_seconds, take_snapshot
from pilotdata.states import ComputeUnitState, DataUnitState, Kind
from placement import Action, BandwidthModel, Candidate, Weights, decide, rank

log = logging.getLogger(__name__)


@dataclass
class BindOutcome:
    """What one round did."""

    bound: dict[str, str]
    """CU id -> pilot id ("" for the shared queue)."""
    held: list[str]
    failed: list[str]


def _with_load(cand: Candidate, slots: int) -> Candidate:
    if cand.state == "running" and cand.free_slots >= slots:
        return dataclasses.replace(cand, free_slots=cand.free_slots - slots)
    return dataclasses.replace(cand, queued_slots=cand.queued_slots + slots)


def bind_round(
    coord: Coordination,
    cu_ids: Sequence[str],
    first_seen: dict[str, float],
    *,
    model: BandwidthModel | None = None,
    weights: Weights | None = None,
    required_affinity: bool = False,
    final: bool = False,
    recent: Sequence[str] = (),
    before_enqueue: Callable[[dict[str, str]], None] | None = None,
    descriptions: MutableMapping[str, ComputeUnitDescription] | None = None,
) -> BindOutcome:
    """Bind what should be bound among ``cu_ids`` now. ``final``: bind everything bindable (no holding).

    ``first_seen`` maps CU id -> monotonic time it was first considered (updated here). ``recent`` are
    CU ids whose run times estimate how long a task takes (the caller's latest submissions).
    ``before_enqueue`` sees the planned bindings before they are recorded, so before any pilot can claim
    them (the CDS marks planned replicas pending there, so agents wait for the near copy); a bind and
    its queue entry are one atomic step.
    ``descriptions`` maps CU id -> typed description, kept by the caller across rounds; a CU missing
    from it is parsed from its record once and added (one whose description does not parse ends Failed).
    """
    model = model or BandwidthModel()
    weights = weights or Weights()
    now = time.monotonic()
    known = descriptions if descriptions is not None else {}
    # only the states are read (one field each); a record only where the description is not known yet
    ids = list(cu_ids)
    new = [i for i, state in zip(ids, coord.states(Kind.CU, ids), strict=True) if state == ComputeUnitState.NEW]
    outcome = BindOutcome({}, [], [])
    to_fail: list[TransitionRequest] = []
    unknown = [i for i in new if i not in known]
    for rec in coord.get_many(Kind.CU, unknown) if unknown else []:
        if rec is None or rec.state != ComputeUnitState.NEW:
            continue
        try:
            known[rec.id] = cu_description(rec)
        except DescriptionError as exc:
            to_fail.append(_failing(rec.id, f"bad description: {exc}"))
    records = [i for i in new if i in known]
    descs = {i: known[i] for i in records}
    anywhere = {i for i in records if runs_anywhere(descs[i])}
    snap: Snapshot | None = None
    cands: list[Candidate] = []
    if len(anywhere) < len(records):  # only placed CUs need the pilots, their loads and the data
        du_ids = {ref.du_id for d in descs.values() for ref in (*d.input_data, *d.output_data)}
        recent_records = coord.get_many(Kind.CU, list(recent)[-200:])
        snap = take_snapshot(coord, median_task_seconds(recent_records), du_ids)
        cands = list(snap.candidates)
    binds: list[tuple[str, str, str]] = []
    for cu_id in records:
        first_seen.setdefault(cu_id, now)
        if cu_id in anywhere:
            binds.append((cu_id, "", ANYWHERE))
            continue
        assert snap is not None
        problem, waiting = _inputs_problem(descs[cu_id], snap)
        if problem:
            to_fail.append(_failing(cu_id, problem))
            continue
        if waiting:
            outcome.held.append(cu_id)
            continue
        demand = demand_of(cu_id, descs[cu_id], snap, required=required_affinity)
        if not demand.inputs and not demand.affinity and demand.slots == 1:
            binds.append((cu_id, "", ANYWHERE))
            continue
        ranking = rank(demand, cands, model, weights=weights)
        decision = decide(demand, ranking, max(0.0, now - first_seen[cu_id]), weights=weights)
        target: str | None = None
        if decision.action in (Action.BIND_TO, Action.TAKE_ANY):
            target = decision.pilot_id
        elif decision.pilot_id is not None and (final or not any(s.ready_now for s in ranking)):
            target = decision.pilot_id  # nobody idle: the best pilot's queue is where it runs soonest
        if target is None:
            if not ranking and ranking.excluded and not _may_grow(cands, demand.slots):
                reasons = "; ".join(e.explain() for e in ranking.excluded)
                to_fail.append(_failing(cu_id, f"no pilot can run it: {reasons}"))
            else:
                outcome.held.append(cu_id)
            continue
        binds.append((cu_id, target, decision.explain()))
        idx = next(i for i, c in enumerate(cands) if c.pilot_id == target)
        cands[idx] = _with_load(cands[idx], demand.slots)
    if to_fail:
        for res in coord.transition_many(Kind.CU, to_fail):
            if res.ok:
                outcome.failed.append(res.id)
    if binds:
        if before_enqueue is not None:  # before any pilot can claim them (a CU that loses its bind costs nothing)
            before_enqueue({cu: pilot for cu, pilot, _ in binds})
        # data-aware bindings keep their reason in the CU's data (for `pdata explain`), in the same step;
        # the queue entry too, so a binder that dies never leaves a bound CU out of every queue
        reqs = [TransitionRequest(cu, ComputeUnitState.PENDING, expected=ComputeUnitState.NEW,
                                  detail={"pilot": pilot or None, PLACEMENT: why},
                                  data={PLACEMENT: why} if pilot else None, queue=pilot or SHARED_QUEUE)
                for cu, pilot, why in binds]
        results = coord.transition_many(Kind.CU, reqs)
        for (cu, pilot, _), res in zip(binds, results):
            if res.ok:  # another binder (or a cancel, or an adopter) may have got there first
                outcome.bound[cu] = pilot
    return outcome


ANYWHERE = "no inputs and no affinity: shared queue, any pilot"
"""The placement reason of a CU that needs no placement (:func:`runs_anywhere`)."""


def _failing(cu_id: str, reason: str) -> TransitionRequest:
    return TransitionRequest(cu_id, ComputeUnitState.FAILED, expected=ComputeUnitState.NEW,
                             detail={"reason": reason})


def runs_anywhere(desc: ComputeUnitDescription) -> bool:
    """Whether a CU needs no placement: one slot, no data, no affinity (every round binds it to the
    shared queue at once, whatever the pilots, so a submission may record it there directly)."""
    return (not desc.input_data and not desc.output_data and desc.affinity_datacenter_label is None
            and desc.number_of_processes == 1)


def _may_grow(cands: Sequence[Candidate], slots: int) -> bool:
    """Whether some live pilot could ever run a CU of ``slots`` (else there is no point holding it)."""
    return any(c.total_slots >= slots for c in cands)


def _inputs_problem(desc: ComputeUnitDescription, snap: Snapshot) -> tuple[str | None, bool]:
    """``(reason to fail, still waiting)`` for the CU's input DataUnits."""
    for ref in desc.input_data:
        du_id = ref.du_id
        rec = snap.du_records.get(du_id)
        if rec is None:
            return f"input DataUnit {du_id!r} does not exist", False
        if rec.state in (DataUnitState.FAILED, DataUnitState.CANCELED):
            why = rec.detail.get("reason") or rec.state
            return f"input DataUnit {du_id} is {rec.state}: {why}", False
        if rec.state in (DataUnitState.NEW, DataUnitState.PENDING):
            return None, True
    for ref in desc.output_data:
        if ref.du_id not in snap.du_records:
            return f"output DataUnit {ref.du_id!r} does not exist", False
    return None, False


def explain_cu(coord: Coordination, cu_id: str, *, weights: Weights | None = None,
               bandwidth: BandwidthModel | None = None, required: bool = False) -> str:
    """The placement scores of every live pilot for ``cu_id`` now, plus the recorded binding reason."""
    rec = coord.get(Kind.CU, cu_id)
    desc = cu_description(rec)
    snap = take_snapshot(coord, median_task_seconds([]), [ref.du_id for ref in (*desc.input_data, *desc.output_data)])
    lines = [f"{cu_id}: state {rec.state}, pilot {rec.pilot or '-'}, attempt {rec.attempt}"]
    placement_reason = rec.data.get(PLACEMENT) or rec.detail.get(PLACEMENT)
    if placement_reason:
        lines.append(f"bound: {placement_reason}")
    try:
        demand = demand_of(cu_id, desc, snap, required=required)
    except KeyError as exc:
        lines.append(f"cannot score now: input DataUnit {exc} is gone")
        return "\n".join(lines)
    lines.append(rank(demand, snap.candidates, bandwidth or BandwidthModel(), weights=weights or Weights()).explain())
    return "\n".join(lines)
