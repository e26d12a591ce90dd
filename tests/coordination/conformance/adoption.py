"""The coordination conformance suite: CUs recorded unbound under a binder's lease, and their adoption.

A client records CUs with ``binder=`` (atomically with their creation) and binds them later. If it
dies first, its lease lapses and ``adopt_unbound`` (any agent or client) puts them on the shared
queue; of several concurrent adopters exactly one gets each CU.
"""

from __future__ import annotations

import threading
import time

import pytest

from pilotdata.coordination import SHARED_QUEUE, Coordination, TransitionRequest
from pilotdata.errors import AlreadyExistsError, DescriptionError
from pilotdata.states import Kind
from tests.coordination.conformance.base import ConformanceBase, MakeCoordination
from tests.servers import wait_until

DESC = {"description": {"executable": "/bin/true"}}


class AdoptionConformance(ConformanceBase):
    """``create_many(binder=)``, ``hold_unbound``, ``unbound`` and ``adopt_unbound``."""

    def test_recorded_cus_are_unbound_until_they_leave_new(self, coord: Coordination) -> None:
        coord.hold_unbound("cds-1", 30)
        coord.create_many(Kind.CU, [(f"c{i}", DESC) for i in range(4)], binder="cds-1")
        coord.create_many(Kind.CU, [("plain", DESC)])
        assert coord.unbound("cds-1") == ["c0", "c1", "c2", "c3"]
        assert coord.unbound() == ["c0", "c1", "c2", "c3"]
        results = coord.transition_many(Kind.CU, [
            TransitionRequest("c1", "Pending", "New", queue=SHARED_QUEUE),
            TransitionRequest("c2", "Canceled", "New"),
            TransitionRequest("c3", "Running", "New"),  # illegal: stays unbound
        ])
        assert [r.ok for r in results] == [True, True, False]
        assert coord.unbound("cds-1") == ["c0", "c3"]
        coord.delete(Kind.CU, "c3")
        assert coord.unbound("cds-1") == ["c0"]
        assert coord.adopt_unbound() == []  # the lease holds
        assert coord.get(Kind.CU, "c0").state == "New"

    def test_created_onto_a_queue_is_a_create_and_a_bind_in_one_step(self, coord: Coordination) -> None:
        why = {"pilot": None, "placement": "shared queue"}
        coord.enqueue(["older"])
        coord.create_many(Kind.CU, [(f"q{i}", DESC) for i in range(3)], queue=SHARED_QUEUE, detail=why)
        coord.create_many(Kind.CU, [("mine", DESC)], queue="p1", detail={"placement": "bound by user"})
        coord.create_many(Kind.CU, [("twin", DESC)])  # the two-step way, to compare with
        coord.transition_many(Kind.CU, [TransitionRequest("twin", "Pending", "New", detail=why, queue="p2")])
        assert coord.queued() == ["older", "q0", "q1", "q2"]
        assert coord.queued("p1") == ["mine"]
        assert coord.unbound() == []
        one, twin = coord.get(Kind.CU, "q1"), coord.get(Kind.CU, "twin")
        assert (one.state, one.attempt, one.pilot, one.detail, one.data) == ("Pending", 0, None, why, DESC)
        assert (twin.state, twin.attempt, twin.pilot, twin.detail) == (one.state, one.attempt, one.pilot, one.detail)
        assert sorted(one.times) == sorted(twin.times) == ["New", "Pending"]
        moves = [(e.from_state, e.to_state, e.detail) for e in coord.events_after(None) if e.id == "q1"]
        created = {"run": None, "name": None, "slots": None}  # DESC has no run, name or processes
        assert moves == [(None, "New", created), ("New", "Pending", why)]
        assert list(coord.list_ids(Kind.CU)) == ["mine", "q0", "q1", "q2", "twin"]
        assert coord.dequeue("mine") and coord.queued("p1") == []  # a pilot's queue is known like any other
        assert coord.claim("p9", limit=10) == ["older", "q0", "q1", "q2"]

    def test_created_onto_a_queue_takes_nothing_when_an_id_is_taken(self, coord: Coordination) -> None:
        coord.create_many(Kind.CU, [("taken", DESC)])
        with pytest.raises(AlreadyExistsError):
            coord.create_many(Kind.CU, [("fresh", DESC), ("taken", DESC)], queue=SHARED_QUEUE)
        assert coord.queued() == [] and not coord.exists(Kind.CU, "fresh")
        assert coord.get(Kind.CU, "taken").state == "New"
        with pytest.raises(DescriptionError, match="binder"):
            coord.create_many(Kind.CU, [("both", DESC)], binder="b", queue=SHARED_QUEUE)
        with pytest.raises(DescriptionError, match="queue"):
            coord.create_many(Kind.DU, [("du", DESC)], queue=SHARED_QUEUE)
        assert not coord.exists(Kind.CU, "both") and not coord.exists(Kind.DU, "du") and coord.queued() == []

    def test_a_lapsed_lease_hands_the_cus_to_the_shared_queue(self, coord: Coordination) -> None:
        coord.hold_unbound("dead-client", 0.2)
        coord.hold_unbound("live-client", 30)
        coord.create_many(Kind.CU, [(f"d{i}", DESC) for i in range(3)], binder="dead-client")
        coord.create_many(Kind.CU, [("live", DESC)], binder="live-client")
        coord.enqueue(["older"])
        assert coord.transition_many(Kind.CU, [TransitionRequest("d1", "Pending", "New", queue="p")])[0].ok
        wait_until(lambda: coord.adopt_unbound() == ["d0", "d2"], 10, "the dead client's CUs to be adopted")
        assert coord.queued() == ["older", "d0", "d2"]
        assert coord.queued("p") == ["d1"]
        assert coord.unbound() == ["live"]
        assert coord.states(Kind.CU, ["d0", "d2", "live"]) == ["Pending", "Pending", "New"]
        event = [e for e in coord.events_after(None) if e.id == "d0"][-1]
        assert (event.from_state, event.to_state) == ("New", "Pending")
        assert event.detail["adopted_from"] == "dead-client" and "adopted" in event.detail["reason"]
        assert coord.adopt_unbound() == []

    def test_a_binder_without_a_lease_is_adopted_at_once(self, coord: Coordination) -> None:
        coord.create_many(Kind.CU, [("x", DESC)], binder="never-held")
        assert coord.adopt_unbound() == ["x"]
        coord.hold_unbound("ended", 30)
        coord.create_many(Kind.CU, [("y", DESC)], binder="ended")
        coord.hold_unbound("ended", 0)  # an orderly end: hand them out now
        assert coord.adopt_unbound() == ["y"]

    def test_renewing_the_lease_keeps_the_cus(self, coord: Coordination) -> None:
        coord.hold_unbound("b", 0.5)
        coord.create_many(Kind.CU, [("c", DESC)], binder="b")
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            coord.hold_unbound("b", 0.5)
            assert coord.adopt_unbound() == []
            time.sleep(0.1)
        assert coord.unbound("b") == ["c"]

    def test_a_cu_is_adopted_by_exactly_one_of_many_adopters(self, make: MakeCoordination) -> None:
        coord = make()
        coord.create_many(Kind.CU, [(f"c{i:03d}", DESC) for i in range(200)], binder="gone")
        got: list[list[str]] = []
        lock = threading.Lock()

        def adopt() -> None:
            mine = make().adopt_unbound()
            with lock:
                got.append(mine)

        threads = [threading.Thread(target=adopt) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        everything = [i for ids in got for i in ids]
        assert sorted(everything) == [f"c{i:03d}" for i in range(200)]
        assert sorted(coord.queued()) == sorted(everything)
        moves = [e for e in coord.events_after(None, limit=10_000) if e.to_state == "Pending"]
        assert len(moves) == 200

    def test_a_binder_and_an_adopter_never_both_take_a_cu(self, make: MakeCoordination) -> None:
        coord, adopter = make(), make()
        coord.create_many(Kind.CU, [(f"c{i:03d}", DESC) for i in range(100)], binder="slow")
        taken: list[str] = []
        thread = threading.Thread(target=lambda: taken.extend(adopter.adopt_unbound()))
        thread.start()
        binds = coord.transition_many(Kind.CU, [TransitionRequest(f"c{i:03d}", "Pending", "New", queue="p")
                                                for i in range(100)])
        thread.join(30)
        bound = {r.id for r in binds if r.ok}
        assert bound.isdisjoint(taken) and len(bound) + len(taken) == 100
        assert sorted(coord.queued("p") + coord.queued()) == sorted(f"c{i:03d}" for i in range(100))

    @pytest.mark.parametrize("binder", ["", "a b", "x/y", "{ns}", "-lead", "z" * 129, "nl\n"])
    def test_bad_binder_names_are_refused(self, coord: Coordination, binder: str) -> None:
        with pytest.raises(DescriptionError, match="binder"):
            coord.hold_unbound(binder, 10)
        with pytest.raises(DescriptionError, match="binder"):
            coord.create_many(Kind.CU, [("c", DESC)], binder=binder)
        assert not coord.exists(Kind.CU, "c")

    def test_only_compute_units_are_recorded_unbound(self, coord: Coordination) -> None:
        with pytest.raises(DescriptionError, match="compute units"):
            coord.create_many(Kind.DU, [("d", {})], binder="b")
