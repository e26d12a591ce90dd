"""The coordination conformance suite: queues and reliable claims."""

from __future__ import annotations

import threading
import time

import pytest

from pilotdata.coordination import SHARED_QUEUE, Coordination
from tests.coordination.conformance.base import ConformanceBase, MakeCoordination
from tests.coordination.helpers import run_in_thread
from tests.servers import wait_until


class QueueConformance(ConformanceBase):
    """Queues and reliable claims."""

    def test_shared_queue_is_fifo(self, coord: Coordination) -> None:
        coord.enqueue(["a", "b"])
        coord.enqueue(["c"])
        assert coord.queued() == ["a", "b", "c"]
        assert [coord.claim("p1"), coord.claim("p1"), coord.claim("p2")] == [["a"], ["b"], ["c"]]
        assert coord.claim("p1") == []
        coord.enqueue([])
        assert coord.queued() == []

    def test_front_puts_ids_first_in_their_order(self, coord: Coordination) -> None:
        coord.enqueue(["a", "b"])
        coord.enqueue(["x", "y"], front=True)
        coord.enqueue(["z"], front=True)
        coord.enqueue(["c"])
        assert coord.queued() == ["z", "x", "y", "a", "b", "c"]
        assert coord.claim("p", limit=10) == ["z", "x", "y", "a", "b", "c"]

    def test_own_queue_before_shared_queue(self, coord: Coordination) -> None:
        coord.enqueue(["s1", "s2"])
        coord.enqueue(["m1", "m2"], pilot="me")
        coord.enqueue(["o1"], pilot="other")
        assert coord.queued("me") == ["m1", "m2"]
        assert coord.claim("me", limit=3) == ["m1", "m2", "s1"]
        assert coord.claim("me", limit=3) == ["s2"]
        assert coord.queued("other") == ["o1"]
        assert coord.claim("other") == ["o1"]

    def test_claim_limit_and_claimed_list(self, coord: Coordination) -> None:
        coord.enqueue([f"c{i}" for i in range(5)])
        assert coord.claim("p", limit=2) == ["c0", "c1"]
        assert coord.claim("p", limit=2) == ["c2", "c3"]
        assert coord.claim("p", limit=0) == []
        assert coord.claimed("p") == ["c0", "c1", "c2", "c3"]
        assert coord.queued() == ["c4"]
        coord.release("p", ["c1", "c3", "not-claimed"])
        coord.release("p", [])
        assert coord.claimed("p") == ["c0", "c2"]
        assert coord.claimed("nobody") == []

    def test_claim_timeout_returns_empty_after_waiting(self, coord: Coordination) -> None:
        start = time.monotonic()
        assert coord.claim("p", timeout=0.3) == []
        assert 0.29 <= time.monotonic() - start < 5

    @pytest.mark.parametrize("own_queue", [False, True], ids=["shared", "own"])
    def test_blocking_claim_wakes_when_work_arrives(self, make: MakeCoordination, own_queue: bool) -> None:
        claimer, producer = make(), make()
        started = time.monotonic()
        thread, box = run_in_thread(lambda: claimer.claim("p", limit=5, timeout=20))
        wait_until(lambda: time.monotonic() - started > 0.3, message="the claimer to block for a while")
        assert thread.is_alive()
        sent = time.monotonic()
        producer.enqueue(["w1", "w2"], pilot="p" if own_queue else None)
        thread.join(10)
        assert box == [["w1", "w2"]]
        assert time.monotonic() - sent < 2  # woken, not timed out (20 s)
        assert claimer.claimed("p") == ["w1", "w2"]

    def test_each_id_is_claimed_once_across_threads(self, make: MakeCoordination) -> None:
        ids = [f"c{i}" for i in range(300)]
        make().enqueue(ids)
        handles = [make() for _ in range(4)]
        barrier = threading.Barrier(4)
        got: list[list[str]] = [[] for _ in handles]

        def worker(n: int) -> None:
            barrier.wait()
            while batch := handles[n].claim(f"p{n}", limit=3):
                got[n] += batch

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        claimed = [cu for part in got for cu in part]
        assert sorted(claimed) == sorted(ids)
        assert [handles[n].claimed(f"p{n}") for n in range(4)] == got

    def test_unclaim_returns_ids_to_the_front(self, coord: Coordination) -> None:
        coord.enqueue(["a", "b", "c", "d"])
        assert coord.claim("p", limit=3) == ["a", "b", "c"]
        coord.unclaim("p", ["c", "a", "never-claimed"])
        assert coord.claimed("p") == ["b"]
        assert coord.queued() == ["c", "a", "d"]
        coord.unclaim("p", ["b"], to_pilot="q")
        assert coord.queued("q") == ["b"]
        assert coord.claimed("p") == []
        assert coord.claim("q", limit=2) == ["b", "c"]

    def test_dequeue_removes_a_waiting_id_from_any_queue(self, coord: Coordination) -> None:
        coord.enqueue(["a", "b"])
        coord.enqueue(["x", "y"], pilot="p")
        assert coord.dequeue("b") and coord.dequeue("x")
        assert coord.queued() == ["a"]
        assert coord.queued("p") == ["y"]
        assert coord.claim("q") == ["a"]
        assert not coord.dequeue("a")  # claimed, no longer queued
        assert not coord.dequeue("never")

    def test_queue_lengths(self, coord: Coordination) -> None:
        coord.enqueue(["a", "b", "c"])
        coord.enqueue(["x"], pilot="p1")
        assert coord.queue_lengths([SHARED_QUEUE, "p1", "p2"]) == {"": 3, "p1": 1, "p2": 0}
        assert coord.queue_lengths([]) == {}

    def test_claim_needs_a_pilot(self, coord: Coordination) -> None:
        coord.enqueue(["a"])
        with pytest.raises(ValueError, match="pilot"):
            coord.claim("")
        assert coord.queued() == ["a"]
