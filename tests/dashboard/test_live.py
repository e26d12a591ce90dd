"""The dashboard's live state on real backends (an embedded SQLite coordination file and history): a
generation per change, one computation per generation and key however many ask at once, errors never
cached, DataUnit copies in flight found and forgotten."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilotdata.coordination import connect
from pilotdata.dashboard import LiveState
from pilotdata.history import History
from pilotdata.inspect import Inspector
from pilotdata.records import ReplicaStatus, replica_patch
from pilotdata.states import Kind
from tests.servers import wait_until


@pytest.fixture
def inspector(tmp_path: Path, namespace: str) -> Iterator[Inspector]:
    coord = connect(f"sqlite:///{tmp_path / 'coordination.sqlite'}", namespace)
    history = History(f"sqlite:///{tmp_path / 'history.sqlite'}")
    yield Inspector(coord, history)
    history.close()
    coord.close()


def test_a_generation_per_change_and_none_without(inspector: Inspector) -> None:
    state = LiveState(inspector, interval=1, max_age=3600)
    assert state.snapshot.generation == 0 and state.snapshot.refreshed is None
    assert state.tick().generation == 1
    assert state.tick().generation == 1  # nothing new
    inspector.coord.create(Kind.CU, "cu-1", {"description": {"executable": "/bin/true"}})
    snap = state.tick()
    assert snap.generation == 2 and snap.drained >= 1 and snap.error is None
    assert state.tick().generation == 2
    aging = LiveState(inspector, interval=1, max_age=0)  # max_age: a new generation however quiet it is
    assert [aging.tick().generation for _ in range(3)] == [1, 2, 3]


def test_one_computation_per_generation_and_key_and_errors_are_not_cached(inspector: Inspector) -> None:
    state = LiveState(inspector, interval=1, max_age=3600)
    state.tick()
    calls: list[int] = []
    gate = threading.Event()

    def slow() -> bytes:
        calls.append(1)
        gate.wait(5)
        return b"answer"

    results: list[bytes] = []
    asking: list[int] = []

    def ask() -> None:
        asking.append(1)
        results.append(state.cached(("k",), slow))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    wait_until(lambda: len(asking) == 8 and calls, 5, "eight callers while the first computes")
    gate.set()
    for t in threads:
        t.join(10)
    assert results == [b"answer"] * 8 and len(calls) == 1
    assert state.cached(("k",), slow) == b"answer" and len(calls) == 1
    inspector.coord.create(Kind.CU, "cu-2", {"description": {"executable": "/bin/true"}})
    state.tick()  # a new generation: computed again
    assert state.cached(("k",), slow) == b"answer" and len(calls) == 2

    def failing() -> bytes:
        calls.append(1)
        raise RuntimeError("boom")

    for _ in range(2):
        with pytest.raises(RuntimeError, match="boom"):
            state.cached(("bad",), failing)
    assert len(calls) == 4  # the failure was computed twice: never cached


def test_data_unit_copies_in_flight_are_found_and_forgotten(inspector: Inspector) -> None:
    state = LiveState(inspector, interval=0.01, max_age=3600)
    coord = inspector.coord
    coord.create(Kind.DU, "du-1", {"description": {"name": "genome"}, "run": "r1",
                                   "file:a.txt": {"size": 1234, "sha256": "0" * 64}})
    start = state.tick()
    assert start.in_flight == () and start.scanned is not None
    coord.update_data(Kind.DU, "du-1", replica_patch("pd-far", ReplicaStatus.PENDING))
    snap = wait_until(lambda: (s := state.tick()).in_flight and s, 5, "the pending copy to be seen")
    assert [(p.du, p.name, p.run, p.pd, p.bytes) for p in snap.in_flight] == [("du-1", "genome", "r1", "pd-far", 1234)]
    assert snap.generation > start.generation
    coord.update_data(Kind.DU, "du-1", replica_patch("pd-far", ReplicaStatus.COMPLETE))
    done = wait_until(lambda: (s := state.tick()).in_flight == () and s, 5, "the copy to be forgotten")
    assert done.generation > snap.generation
