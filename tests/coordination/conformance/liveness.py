"""The coordination conformance suite: heartbeats, the live set, and taking back a lost pilot's work."""

from __future__ import annotations

import threading

from pilotdata.coordination import Coordination, RequeueResult
from tests.coordination.conformance.base import ConformanceBase, MakeCoordination
from tests.coordination.helpers import put_cu
from tests.servers import wait_until


def _lose(coord: Coordination, pilot: str) -> None:
    """Make ``pilot`` a live-set member whose heartbeat has expired."""
    coord.heartbeat(pilot, 0.05)
    wait_until(lambda: pilot in coord.expired_pilots(), 5, f"{pilot}'s heartbeat to expire")


def _race(detectors: list[Coordination], pilot: str) -> list[RequeueResult]:
    """Every detector calls ``requeue_lost(pilot)`` at the same moment, each in its own thread."""
    barrier = threading.Barrier(len(detectors))
    results: list[RequeueResult] = []

    def detect(detector: Coordination) -> None:
        barrier.wait()
        results.append(detector.requeue_lost(pilot, max_reassign=3))

    threads = [threading.Thread(target=detect, args=(d,)) for d in detectors]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


class LivenessConformance(ConformanceBase):
    """Heartbeats, the live set, and taking back a lost pilot's work."""

    def test_heartbeat_expiry_and_retire(self, coord: Coordination) -> None:
        coord.heartbeat("p1", 30)
        coord.heartbeat("p2", 0.05)
        assert coord.is_alive("p1")
        wait_until(lambda: coord.expired_pilots() == ["p2"], 5, "p2 to expire")
        assert not coord.is_alive("p2")
        coord.heartbeat("p2", 30)  # a late heartbeat revives it
        assert coord.is_alive("p2") and coord.expired_pilots() == []
        coord.retire("p1")
        assert not coord.is_alive("p1")
        coord.heartbeat("p3", 0.05)
        coord.retire("p3")
        coord.heartbeat("p4", 0.05)  # set after p3's: once p4 has expired, p3's ttl has lapsed too
        wait_until(lambda: "p4" in coord.expired_pilots(), 5, "p4 to expire")
        assert coord.expired_pilots() == ["p4"]  # a retired pilot is not "lost"
        assert not coord.is_alive("never-seen")

    def test_requeue_lost_semantics(self, coord: Coordination) -> None:
        put_cu(coord, "done", "Done", pilot="p")
        put_cu(coord, "waiting", "Pending")
        put_cu(coord, "running", "Running", pilot="p")
        put_cu(coord, "staging", "StagingInput", pilot="p")
        put_cu(coord, "spent", "Running", pilot="p")
        for cu_id in ["deleted", "placed", "placed-later", "other"]:
            put_cu(coord, cu_id, "Pending")
        for _ in range(2):  # spend the reassign budget of "spent"
            coord.transition("cu", "spent", "Pending")
            coord.transition("cu", "spent", "Running")
        coord.enqueue(["done", "waiting", "running", "staging", "spent", "deleted"])
        coord.enqueue(["placed"], pilot="p")  # placed on p, never claimed
        coord.enqueue(["other"])
        claimed = ["placed", "done", "waiting", "running", "staging", "spent", "deleted"]
        assert coord.claim("p", limit=7) == claimed
        coord.enqueue(["placed-later"], pilot="p")
        coord.delete("cu", "deleted")
        _lose(coord, "p")
        cursor = coord.last_cursor()

        result = coord.requeue_lost("p", max_reassign=2)

        assert result.pilot == "p"
        assert result.requeued == ["placed", "waiting", "running", "staging", "placed-later"]
        assert result.failed == ["spent"]
        assert result.dropped == ["done", "deleted"]
        assert coord.queued() == ["placed", "waiting", "running", "staging", "placed-later", "other"]
        assert coord.queued("p") == [] and coord.claimed("p") == []
        assert coord.expired_pilots() == [] and not coord.is_alive("p")
        records = {r.id: r for r in coord.get_many("cu", ["waiting", "running", "staging", "spent", "done"]) if r}
        assert {i: (r.state, r.attempt) for i, r in records.items()} == {
            "waiting": ("Pending", 0), "running": ("Pending", 1), "staging": ("Pending", 1),
            "spent": ("Failed", 2), "done": ("Done", 0),
        }
        assert "reassign" in records["spent"].detail["reason"] and "'p'" in records["spent"].detail["reason"]
        events = coord.events_after(cursor)
        assert [(e.id, e.from_state, e.to_state, e.attempt) for e in events] == [
            ("running", "Running", "Pending", 1), ("staging", "StagingInput", "Pending", 1),
            ("spent", "Running", "Failed", 2),
        ]
        assert all(e.detail["lost_pilot"] == "p" for e in events)

    def test_requeue_lost_leaves_live_and_unknown_pilots_alone(self, coord: Coordination) -> None:
        put_cu(coord, "c", "Running", pilot="alive")
        coord.enqueue(["c"])
        coord.heartbeat("alive", 30)
        assert coord.claim("alive") == ["c"]
        assert coord.requeue_lost("alive", 3) == RequeueResult("alive", [], [], [])
        assert coord.requeue_lost("stranger", 3) == RequeueResult("stranger", [], [], [])
        assert coord.claimed("alive") == ["c"] and coord.is_alive("alive")
        forced = coord.requeue_lost("alive", 3, force=True)  # e.g. its batch job is known to have ended
        assert forced.requeued == ["c"]
        assert not coord.is_alive("alive")
        assert coord.get("cu", "c").attempt == 1
        assert coord.requeue_lost("alive", 3, force=True) == RequeueResult("alive", [], [], [])

    def test_reassign_budget_is_exhausted_across_losses(self, coord: Coordination) -> None:
        put_cu(coord, "c", "Pending")
        coord.enqueue(["c"])
        outcomes = []
        for round_ in range(3):
            pilot = f"p{round_}"
            assert coord.claim(pilot) == ["c"]
            coord.transition("cu", "c", "Running", pilot=pilot)
            _lose(coord, pilot)
            outcomes.append(coord.requeue_lost(pilot, max_reassign=2))
        assert [(o.requeued, o.failed) for o in outcomes] == [(["c"], []), (["c"], []), ([], ["c"])]
        record = coord.get("cu", "c")
        assert (record.state, record.attempt) == ("Failed", 2)
        assert coord.queued() == []

    def test_concurrent_detectors_take_the_work_once(self, make: MakeCoordination) -> None:
        owner = make()
        detectors = [make(), make()]
        for round_ in range(4):
            pilot = f"lost{round_}"
            ids = [f"{pilot}-c{i}" for i in range(20)]
            for cu_id in ids:
                put_cu(owner, cu_id, "Pending")
            owner.enqueue(ids)
            assert owner.claim(pilot, limit=20) == ids
            for cu_id in ids[:10]:
                owner.transition("cu", cu_id, "Running", pilot=pilot)
            _lose(owner, pilot)
            results = _race(detectors, pilot)
            assert sorted(len(r.requeued) for r in results) == [0, 20]
            assert sorted(owner.queued()) == sorted(ids)
            assert [r.attempt for r in owner.get_many("cu", ids) if r] == [1] * 10 + [0] * 10
            assert owner.claim("next", limit=20) == ids
            owner.release("next", ids)
