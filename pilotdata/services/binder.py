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
twice. The reason of every binding is recorded in the transition detail (``pdata explain`` shows it).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pilotdata.coordination import Coordination, TransitionRequest
from pilotdata.services.snapshot import Snapshot, demand_of, mean_task_seconds, take_snapshot
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
) -> BindOutcome:
    """Bind what should be bound among ``cu_ids`` now. ``final``: bind everything bindable (no holding).

    ``first_seen`` maps CU id -> monotonic time it was first considered (updated here). ``recent`` are
    CU ids whose run times estimate how long a task takes (the caller's latest submissions).
    ``before_enqueue`` sees the bindings after they are recorded and before any pilot can claim them
    (the CDS marks planned replicas pending there, so agents wait for the near copy).
    """
    model = model or BandwidthModel()
    weights = weights or Weights()
    now = time.monotonic()
    records = [r for r in coord.get_many(Kind.CU, list(cu_ids)) if r is not None and r.state == "New"]
    outcome = BindOutcome({}, [], [])
    if not records:
        return outcome
    descs = {r.id: r.data.get("description") or {} for r in records}
    anywhere = {r.id for r in records if _runs_anywhere(descs[r.id])}
    snap: Snapshot | None = None
    cands: list[Candidate] = []
    if len(anywhere) < len(records):  # only placed CUs need the pilots, their loads and the data
        du_ids = {_ref_id(ref) for d in descs.values()
                  for ref in [*(d.get("input_data") or ()), *(d.get("output_data") or ())]}
        recent_records = coord.get_many(Kind.CU, list(recent)[-200:])
        snap = take_snapshot(coord, mean_task_seconds(recent_records), du_ids)
        cands = list(snap.candidates)
    to_fail: list[TransitionRequest] = []
    binds: list[tuple[str, str, str]] = []
    for rec in records:
        first_seen.setdefault(rec.id, now)
        if rec.id in anywhere:
            binds.append((rec.id, "", _ANYWHERE))
            continue
        assert snap is not None
        problem, waiting = _inputs_problem(descs[rec.id], snap)
        if problem:
            to_fail.append(TransitionRequest(rec.id, ComputeUnitState.FAILED, expected="New",
                                             detail={"reason": problem}))
            continue
        if waiting:
            outcome.held.append(rec.id)
            continue
        demand = demand_of(rec.id, descs[rec.id], snap, required=required_affinity)
        if not demand.inputs and not demand.affinity and demand.slots == 1:
            binds.append((rec.id, "", _ANYWHERE))
            continue
        ranking = rank(demand, cands, model, weights=weights)
        decision = decide(demand, ranking, max(0.0, now - first_seen[rec.id]), weights=weights)
        target: str | None = None
        if decision.action in (Action.BIND_TO, Action.TAKE_ANY):
            target = decision.pilot_id
        elif decision.pilot_id is not None and (final or not any(s.ready_now for s in ranking)):
            target = decision.pilot_id  # nobody idle: the best pilot's queue is where it runs soonest
        if target is None:
            if not ranking and ranking.excluded and not _may_grow(cands, demand.slots):
                reasons = "; ".join(e.explain() for e in ranking.excluded)
                to_fail.append(TransitionRequest(rec.id, ComputeUnitState.FAILED, expected="New",
                                                 detail={"reason": f"no pilot can run it: {reasons}"}))
            else:
                outcome.held.append(rec.id)
            continue
        binds.append((rec.id, target, decision.explain()))
        idx = next(i for i, c in enumerate(cands) if c.pilot_id == target)
        cands[idx] = _with_load(cands[idx], demand.slots)
    if to_fail:
        for res in coord.transition_many(Kind.CU, to_fail):
            if res.ok:
                outcome.failed.append(res.id)
    if binds:
        reqs = [TransitionRequest(cu, ComputeUnitState.PENDING, expected="New",
                                  detail={"pilot": pilot or None, "placement": why})
                for cu, pilot, why in binds]
        results = coord.transition_many(Kind.CU, reqs)
        by_queue: dict[str, list[str]] = {}
        for (cu, pilot, _), res in zip(binds, results):
            if res.ok:  # another binder (or a cancel) may have got there first
                by_queue.setdefault(pilot, []).append(cu)
                outcome.bound[cu] = pilot
        for cu, pilot, why in binds:
            if pilot and cu in outcome.bound:  # data-aware bindings keep their reason for `pdata explain`
                coord.update_data(Kind.CU, cu, {"placement": why})
        if before_enqueue is not None and outcome.bound:
            before_enqueue(dict(outcome.bound))
        for pilot, ids in by_queue.items():
            coord.enqueue(ids, pilot or None)
    return outcome


_ANYWHERE = "no inputs and no affinity: shared queue, any pilot"


def _runs_anywhere(desc: dict[str, Any]) -> bool:
    """Whether a (normalised) description needs no placement: one slot, no data, no affinity."""
    return (not desc.get("input_data") and not desc.get("output_data")
            and not desc.get("affinity_datacenter_label") and int(desc.get("number_of_processes") or 1) == 1)


def _may_grow(cands: Sequence[Candidate], slots: int) -> bool:
    """Whether some live pilot could ever run a CU of ``slots`` (else there is no point holding it)."""
    return any(c.total_slots >= slots for c in cands)


def _inputs_problem(desc: dict[str, Any], snap: Snapshot) -> tuple[str | None, bool]:
    """``(reason to fail, still waiting)`` for the CU's input DataUnits."""
    for ref in desc.get("input_data") or ():
        du_id = _ref_id(ref)
        rec = snap.du_records.get(du_id)
        if rec is None:
            return f"input DataUnit {du_id!r} does not exist", False
        if rec.state in (DataUnitState.FAILED, DataUnitState.CANCELED):
            why = rec.detail.get("reason") or rec.state
            return f"input DataUnit {du_id} is {rec.state}: {why}", False
        if rec.state in (DataUnitState.NEW, DataUnitState.PENDING):
            return None, True
    for ref in desc.get("output_data") or ():
        du_id = _ref_id(ref)
        if du_id not in snap.du_records:
            return f"output DataUnit {du_id!r} does not exist", False
    return None, False


def _ref_id(ref: Any) -> str:
    """The DataUnit id of a normalised ``input_data`` / ``output_data`` entry (``"du"`` or ``{du: [...]}``)."""
    return str(next(iter(ref))) if isinstance(ref, dict) else str(ref)
