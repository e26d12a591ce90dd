"""The coordination conformance suite: ownership of claimed CUs and moves that enqueue atomically.

A pilot that no longer owns a CU (its work was taken back by ``requeue_lost``, or it never claimed the
CU) cannot move it: the ``owner`` check runs in the same atomic step as the state check. A move with a
``queue`` is recorded together with its queue entry, or not at all.
"""

from __future__ import annotations

from pilotdata.coordination import SHARED_QUEUE, Coordination, TransitionRequest
from pilotdata.states import Kind
from tests.coordination.conformance.base import ConformanceBase, MakeCoordination
from tests.coordination.helpers import put_cu, run_in_thread


def _claim(coord: Coordination, pilot: str, *ids: str) -> None:
    coord.enqueue(list(ids), pilot)
    assert coord.claim(pilot, limit=len(ids)) == list(ids)


class OwnershipConformance(ConformanceBase):
    """``owner``, ``queue`` and ``front`` of a transition request."""

    def test_the_owner_may_move_its_claimed_cu(self, coord: Coordination) -> None:
        put_cu(coord, "c", "Pending")
        _claim(coord, "p", "c")
        req = TransitionRequest("c", "Running", "Pending", "p", owner="p")
        assert coord.transition_many(Kind.CU, [req])[0].ok
        done = TransitionRequest("c", "Done", "Running", "p", release=True, owner="p")
        assert coord.transition_many(Kind.CU, [done])[0].ok
        assert coord.claimed("p") == []

    def test_a_pilot_that_never_claimed_the_cu_cannot_move_it(self, coord: Coordination) -> None:
        put_cu(coord, "c", "Pending")
        _claim(coord, "p", "c")
        result = coord.transition_many(Kind.CU, [TransitionRequest("c", "Running", "Pending", "q", owner="q")])[0]
        assert not result.ok and result.previous == "Pending"
        record = coord.get(Kind.CU, "c")
        assert (record.state, record.attempt, record.pilot) == ("Pending", 0, None)
        assert [e.to_state for e in coord.events_after(None) if e.id == "c"] == ["New", "Pending"]

    def test_a_lost_pilot_cannot_move_the_work_that_was_taken_back(self, coord: Coordination) -> None:
        """Issue scenario: claimed before an outage, declared lost, then it tries Pending -> Running."""
        put_cu(coord, "unstarted", "Pending")
        put_cu(coord, "started", "Pending")
        _claim(coord, "old", "unstarted", "started")
        assert coord.transition_many(Kind.CU, [TransitionRequest("started", "Running", "Pending", "old",
                                                                 owner="old")])[0].ok
        result = coord.requeue_lost("old", 3, force=True)
        assert result.requeued == ["unstarted", "started"]
        late = coord.transition_many(Kind.CU, [
            TransitionRequest("unstarted", "Running", "Pending", "old", owner="old"),
            TransitionRequest("started", "Done", "Pending", "old", release=True, owner="old"),
        ])
        assert [r.ok for r in late] == [False, False]
        assert coord.states(Kind.CU, ["unstarted", "started"]) == ["Pending", "Pending"]
        assert coord.queued() == ["unstarted", "started"]
        # the pilot that claims them next owns them
        assert coord.claim("new", limit=2) == ["unstarted", "started"]
        ok = coord.transition_many(Kind.CU, [TransitionRequest("unstarted", "Running", "Pending", "new",
                                                               owner="new")])
        assert ok[0].ok

    def test_an_owner_check_sees_a_release_earlier_in_the_same_batch(self, coord: Coordination) -> None:
        put_cu(coord, "c", "Running")
        _claim(coord, "p", "c")
        results = coord.transition_many(Kind.CU, [
            TransitionRequest("c", "Failed", "Running", "p", release=True, owner="p"),
            TransitionRequest("c", "Pending", "Failed", "p", owner="p"),  # illegal anyway; and no longer owned
        ])
        assert [r.ok for r in results] == [True, False]

    def test_hand_back_is_one_step_release_and_front_of_the_shared_queue(self, coord: Coordination) -> None:
        for cu in ("a", "b", "c"):
            put_cu(coord, cu, "Running")
        _claim(coord, "p", "a", "b", "c")
        coord.enqueue(["older"])
        results = coord.transition_many(Kind.CU, [
            TransitionRequest(cu, "Pending", "Running", "p", {"reason": "stop"}, release=True, owner="p",
                              queue=SHARED_QUEUE, front=True)
            for cu in ("a", "b")
        ])
        assert [r.ok for r in results] == [True, True]
        assert [r.attempt for r in results] == [1, 1]
        assert coord.claimed("p") == ["c"]
        assert coord.queued() == ["a", "b", "older"]

    def test_a_refused_move_enqueues_nothing(self, coord: Coordination) -> None:
        put_cu(coord, "c", "Done")
        put_cu(coord, "d", "Pending")
        _claim(coord, "p", "d")
        results = coord.transition_many(Kind.CU, [
            TransitionRequest("c", "Pending", queue=SHARED_QUEUE),
            TransitionRequest("d", "Pending", "Running", "p", release=True, owner="p", queue=SHARED_QUEUE),
        ])
        assert [r.ok for r in results] == [False, False]
        assert coord.queued() == [] and coord.claimed("p") == ["d"]

    def test_a_bind_enqueues_on_the_pilot_queue_in_request_order(self, coord: Coordination) -> None:
        for cu in ("a", "b", "c"):
            put_cu(coord, cu)
        coord.enqueue(["first"], "p")
        results = coord.transition_many(Kind.CU, [
            TransitionRequest("a", "Pending", "New", queue="p"),
            TransitionRequest("b", "Pending", "New", queue=SHARED_QUEUE),
            TransitionRequest("c", "Pending", "New", queue="p"),
        ])
        assert all(r.ok for r in results)
        assert coord.queued("p") == ["first", "a", "c"]
        assert coord.queued() == ["b"]
        # a queue made by a bind is known to dequeue and requeue_lost like one made by enqueue
        assert coord.dequeue("c") and coord.queued("p") == ["first", "a"]
        coord.requeue_lost("p", 3, force=True)
        assert coord.queued() == ["first", "a", "b"]

    def test_concurrent_owner_moves_apply_once(self, make: MakeCoordination) -> None:
        coord = make()
        for i in range(40):
            put_cu(coord, f"c{i}", "Pending")
        _claim(coord, "p", *[f"c{i}" for i in range(40)])
        starts: list[list[bool]] = []

        def start_all() -> None:
            other = make()
            requests = [TransitionRequest(f"c{i}", "Running", "Pending", "p", owner="p") for i in range(40)]
            starts.append([r.ok for r in other.transition_many(Kind.CU, requests)])

        threads = [run_in_thread(start_all)[0] for _ in range(2)]
        taken = coord.requeue_lost("p", 3, force=True)
        for thread in threads:
            thread.join(30)
        applied = [sum(ok) for ok in starts]
        # every CU is either started once by its owner (then requeued with attempt+1) or requeued unstarted
        records = coord.get_many(Kind.CU, [f"c{i}" for i in range(40)])
        assert all(r is not None and r.state == "Pending" for r in records)
        started_events = [e for e in coord.events_after(None, limit=10_000) if e.to_state == "Running"]
        assert len(started_events) == sum(applied) <= 40
        assert len(taken.requeued) == 40
        assert sorted(coord.queued()) == sorted(f"c{i}" for i in range(40))
