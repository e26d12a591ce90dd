"""The coordination conformance suite: ``requeue_lost`` ends exactly where ``plan_requeue`` says.

The embedded SQLite backend applies :func:`pilotdata.coordination.requeue.plan_requeue`; Redis decides
in a Lua script. Random claimed work (every CU state, a gone CU, attempts below and past the reassign
limit, work placed on the pilot but never claimed) must give both the same result, queue order,
states, attempts, details and events as the pure function.
"""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pilotdata import states
from pilotdata.coordination import Coordination
from pilotdata.coordination.requeue import ClaimedCU, plan_requeue
from tests.coordination.conformance.base import ConformanceBase, MakeCoordination
from tests.coordination.helpers import put_cu

GONE = "(deleted)"
"""A claimed CU that no longer exists."""


def put_cu_at(coord: Coordination, cu_id: str, state: str, attempt: int) -> None:
    """Create CU ``cu_id`` in ``state`` after ``attempt`` retries (New and Pending-only paths: attempt 0)."""
    if state in ("New", GONE) or attempt == 0:
        put_cu(coord, cu_id, "New" if state == GONE else state)
        return
    put_cu(coord, cu_id, "Running")
    for n in range(attempt):
        coord.transition("cu", cu_id, "Pending")  # a retry: attempt + 1
        if n < attempt - 1 or state not in ("Pending", "StagingInput"):
            coord.transition("cu", cu_id, "Running")
    path = {"Pending": [], "StagingInput": ["StagingInput"], "Running": [], "StagingOutput": ["StagingOutput"],
            "Done": ["Done"], "Failed": ["Failed"], "Canceled": ["Canceled"]}
    for step in path[state]:
        coord.transition("cu", cu_id, step)


claimed_work = st.lists(
    st.tuples(st.sampled_from([GONE, *states.states_of("cu")]), st.integers(0, 3)), max_size=8
)


class RequeueConformance(ConformanceBase):
    """``requeue_lost`` follows ``plan_requeue``."""

    # Each backend's class runs this method (differing executors): the examples do not depend on it.
    @settings(max_examples=20, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.differing_executors])
    @given(work=claimed_work, own=st.integers(0, 2), max_reassign=st.integers(0, 3))
    def test_requeue_lost_follows_the_plan(
        self, make: MakeCoordination, namespace: str, work: list[tuple[str, int]], own: int, max_reassign: int
    ) -> None:
        coord = make(f"{namespace}-{uuid.uuid4().hex[:8]}")  # every example on empty queues
        pilot = "lost"
        ids = [f"c{n}" for n in range(len(work))]
        for cu_id, (state, attempt) in zip(ids, work):
            put_cu_at(coord, cu_id, state, attempt)
        coord.enqueue(ids)
        assert coord.claim(pilot, limit=max(1, len(ids))) == ids
        for cu_id, (state, _) in zip(ids, work):
            if state == GONE:
                coord.delete("cu", cu_id)
        placed = [f"o{n}" for n in range(own)]
        for cu_id in placed:
            put_cu(coord, cu_id, "Pending")
        coord.enqueue(placed, pilot=pilot)
        before = {r.id: r for r in coord.get_many("cu", ids) if r is not None}
        claimed = [ClaimedCU(i, before[i].state, before[i].attempt) if i in before else ClaimedCU(i, None)
                   for i in coord.claimed(pilot)]
        plan = plan_requeue(pilot, claimed, coord.queued(pilot), max_reassign)
        cursor = coord.last_cursor()

        result = coord.requeue_lost(pilot, max_reassign, force=True)

        assert result == plan.result()
        assert coord.queued() == list(plan.requeued)
        assert coord.claimed(pilot) == [] and coord.queued(pilot) == []
        moves = {m.id: m for m in plan.moves}
        after = {r.id: r for r in coord.get_many("cu", ids) if r is not None}
        assert set(after) == set(before)
        for cu_id, record in after.items():
            was = before[cu_id]
            if cu_id in moves:
                retry = states.increments_attempt("cu", was.state, moves[cu_id].to)
                assert (record.state, record.attempt) == (moves[cu_id].to, was.attempt + retry)
                assert record.detail == dict(moves[cu_id].detail or {}) and record.pilot == pilot
            else:
                assert (record.state, record.attempt, record.updated) == (was.state, was.attempt, was.updated)
        events = coord.events_after(cursor)
        assert [(e.id, e.from_state, e.to_state, e.pilot, e.detail) for e in events] == [
            (m.id, m.expected, m.to, pilot, dict(m.detail or {})) for m in plan.moves
        ]
