"""What happens to a lost pilot's work: :func:`plan_requeue`, a pure function both backends follow.

:meth:`Coordination.requeue_lost <pilotdata.coordination.base.Coordination.requeue_lost>` takes back the
CUs a pilot had claimed when its heartbeat expired (or it is known dead). For each claimed CU, in claim
order (DIANE's *lost task max reassign* policy):

* gone, or already final: **dropped** from the in-progress list, nothing else;
* claimed but never started (its state is not one a retry starts from, e.g. Pending): **requeued**
  unchanged;
* started (StagingInput, Running, StagingOutput): back to Pending with attempt+1 and **requeued** while
  ``attempt < max_reassign``, else **failed** (Failed, the reason in its detail).

The requeued CUs, followed by the pilot's own (unclaimed) queue, go to the front of the shared queue in
that order, so returned work runs before newer work.

The embedded SQLite backend applies :func:`plan_requeue` inside its transaction. Redis decides inside
one Lua script (atomic on the server), built from the same inputs: :func:`lost_details`,
:func:`final_states` and :func:`started_states`; the conformance suite checks that both backends end
exactly where the plan says for the same claimed work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pilotdata import states
from pilotdata.coordination.base import RequeueResult, TransitionRequest
from pilotdata.states import ComputeUnitState, Kind

__all__ = ["ClaimedCU", "RequeuePlan", "final_states", "lost_details", "plan_requeue", "started_states"]

_CU = Kind.CU.value
_PENDING = ComputeUnitState.PENDING.value
_FAILED = ComputeUnitState.FAILED.value


@dataclass(frozen=True)
class ClaimedCU:
    """A CU in a lost pilot's in-progress list, as stored when the requeue runs."""

    id: str
    state: str | None
    """Its state; ``None`` when the CU no longer exists."""
    attempt: int = 0


@dataclass(frozen=True)
class RequeuePlan:
    """The decisions of :func:`plan_requeue` for one lost pilot."""

    pilot: str
    moves: tuple[TransitionRequest, ...]
    """The started CUs' transitions (to Pending, or to Failed past the limit), in claim order."""
    requeued: tuple[str, ...]
    """Ids for the front of the shared queue, in this order: claimed ones, then the pilot's own queue."""
    failed: tuple[str, ...]
    dropped: tuple[str, ...]

    def without(self, ids: Sequence[str]) -> RequeuePlan:
        """The plan with the moves of ``ids`` undone and the ids dropped (their moves did not apply)."""
        if not ids:
            return self
        gone = set(ids)
        return replace(
            self,
            moves=tuple(m for m in self.moves if m.id not in gone),
            requeued=tuple(i for i in self.requeued if i not in gone),
            failed=tuple(i for i in self.failed if i not in gone),
            dropped=(*self.dropped, *(i for i in ids if i not in self.dropped)),
        )

    def result(self) -> RequeueResult:
        """What :meth:`~pilotdata.coordination.base.Coordination.requeue_lost` returns for this plan."""
        return RequeueResult(self.pilot, list(self.requeued), list(self.failed), list(self.dropped))


def final_states() -> frozenset[str]:
    """The CU states a claimed CU is dropped in."""
    return frozenset(s for s in states.states_of(_CU) if states.is_final(s))


def started_states() -> frozenset[str]:
    """The CU states from which going back to Pending is a retry (attempt+1): the CU had started."""
    return frozenset(s for s in states.allowed_sources(_CU, _PENDING) if states.increments_attempt(_CU, s, _PENDING))


def lost_details(pilot: str, max_reassign: int) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """The event details of (a requeued CU, a CU failed by the reassign limit)."""
    reason = f"pilot {pilot!r} lost"
    return (
        {"reason": f"{reason}; requeued", "lost_pilot": pilot},
        {"reason": f"{reason}; reassign limit {max_reassign} reached", "lost_pilot": pilot},
    )


def plan_requeue(
    pilot: str, claimed: Sequence[ClaimedCU], own_queue: Sequence[str], max_reassign: int
) -> RequeuePlan:
    """Decide, without any I/O, what becomes of ``pilot``'s claimed CUs and its own queue."""
    final, started = final_states(), started_states()
    to_pending, to_failed = lost_details(pilot, max_reassign)
    moves: list[TransitionRequest] = []
    requeued: list[str] = []
    failed: list[str] = []
    dropped: list[str] = []
    for cu in claimed:
        if cu.state is None or cu.state in final:
            dropped.append(cu.id)
        elif cu.state not in started:
            requeued.append(cu.id)
        elif cu.attempt < max_reassign:
            moves.append(TransitionRequest(cu.id, _PENDING, cu.state, pilot, to_pending))
            requeued.append(cu.id)
        else:
            moves.append(TransitionRequest(cu.id, _FAILED, cu.state, pilot, to_failed))
            failed.append(cu.id)
    return RequeuePlan(pilot, tuple(moves), (*requeued, *own_queue), tuple(failed), tuple(dropped))
