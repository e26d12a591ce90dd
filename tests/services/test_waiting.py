"""Waiting with a timeout: the message says in words what is left, in which states, and what to do
(start a pilot when none is alive) -- never a Python list of state names."""

from __future__ import annotations

import time

import pytest

from pilotdata.coordination import Coordination, connect
from pilotdata.errors import TimeoutExpired
from pilotdata.services.waiting import START_PILOT_HINT, wait_for_states, wait_until
from pilotdata.states import Kind


@pytest.fixture
def coord(coordination_url: str, namespace: str) -> Coordination:
    c = connect(coordination_url, namespace)
    for cu, state in (("cu-a", "Pending"), ("cu-b", "Pending"), ("cu-c", "Done")):
        c.create(Kind.CU, cu, {})
        c.transition(Kind.CU, cu, "Pending")
        if state == "Done":
            for step in ("StagingInput", "Running", "StagingOutput", "Done"):
                c.transition(Kind.CU, cu, step)
    return c


def _pilot(coord: Coordination, pilot: str, *states: str) -> None:
    coord.create(Kind.PILOT, pilot, {})
    for state in states:
        coord.transition(Kind.PILOT, pilot, state)


def _message(coord: Coordination, ids: list[str], **kw: object) -> str:
    with pytest.raises(TimeoutExpired) as info:
        wait_for_states(coord, Kind.CU, ids, timeout=0.2, **kw)  # type: ignore[arg-type]
    return str(info.value)


def test_no_live_pilot_says_to_start_one(coord: Coordination) -> None:
    message = _message(coord, ["cu-a", "cu-b", "cu-c"])
    assert message == ("timed out after 0.2s: 2 of 3 ComputeUnit(s) not finished (2 Pending, e.g. cu-a Pending); "
                       + START_PILOT_HINT)
    assert "[" not in message and "pdata pilot start" in message
    _pilot(coord, "p-old", "Pending", "Running", "Done")  # a pilot that ended is no live pilot
    with pytest.raises(TimeoutExpired, match="no live pilot: start one"):
        wait_until(coord, Kind.CU, ["cu-a"], timeout=0.1)  # the state-only wait says the same


def test_a_queued_pilot_and_a_running_one(coord: Coordination) -> None:
    _pilot(coord, "p-queued", "Pending")
    assert _message(coord, ["cu-b"]).endswith(
        "1 of 1 ComputeUnit(s) not finished (1 Pending, e.g. cu-b Pending); no pilot is running yet "
        "(1 starting or queued in a batch system): see 'pdata pilot ls'")
    coord.transition(Kind.PILOT, "p-queued", "Running")
    assert _message(coord, ["cu-b"]).endswith("; see 'pdata status' for where they wait")


def test_other_targets_and_kinds_read_in_words(coord: Coordination) -> None:
    coord.create(Kind.DU, "du-1", {})
    coord.transition(Kind.DU, "du-1", "Pending")
    with pytest.raises(TimeoutExpired) as info:
        wait_for_states(coord, Kind.DU, ["du-1"], {"Running"}, timeout=0.1)
    assert str(info.value) == "timed out after 0.1s: 1 of 1 DataUnit(s) not yet Running (1 Pending, e.g. du-1 Pending)"


def test_a_trickle_gathers_50_ms_while_many_are_left_and_10_ms_near_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads of a trickle of events are spaced 50 ms apart while more than 100 entities are left (fewer
    reads), 10 ms once 100 or fewer are (the last ones are noticed soon after they end)."""
    from pilotdata.coordination.base import Event

    ids = [f"cu-{i:03d}" for i in range(150)]
    batches = [ids[i:i + 20] for i in range(0, 150, 20)]  # 20 CUs end between two reads

    class Trickle:
        def last_cursor(self) -> str:
            return "0"

        def states(self, kind: Kind, wanted: list[str]) -> list[str]:
            return ["Running" for _ in wanted]

        def events_after(self, cursor: str, *, limit: int, block: float) -> list[Event]:
            done = batches.pop(0) if batches else []
            return [Event(f"{cursor}.{n}", "cu", i, "Running", "Done", 0.0, None, 0, {}) for n, i in enumerate(done)]

    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    wait_until(Trickle(), Kind.CU, ids, timeout=60)  # type: ignore[arg-type]
    # left after each read: 130, 110, 90, 70, 50, 30, 10, then 0 (no pause after the last read)
    assert sleeps == [0.05, 0.05, 0.01, 0.01, 0.01, 0.01, 0.01]
