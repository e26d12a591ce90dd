"""The coordination conformance suite: the event stream (cursors, blocking reads, trimming, non-transition events)."""

from __future__ import annotations

import time

import pytest

from pilotdata.coordination import Coordination
from tests.coordination.conformance.base import ConformanceBase, MakeCoordination
from tests.coordination.helpers import run_in_thread
from tests.servers import wait_until


class EventConformance(ConformanceBase):
    """The event stream (cursors, blocking reads, trimming, non-transition events)."""

    def test_events_come_in_cursor_order(self, coord: Coordination) -> None:
        assert coord.events_after(None) == [] and coord.last_cursor() is None
        coord.create_many("cu", [(f"c{i}", {}) for i in range(5)])
        coord.record_event("transfer", "du-1", {"bytes": 10, "seconds": 0.5}, pilot="p1")
        events = coord.events_after(None)
        assert [e.id for e in events] == ["c0", "c1", "c2", "c3", "c4", "du-1"]
        cursors = [e.cursor for e in events]
        assert len(set(cursors)) == 6
        assert coord.last_cursor() == cursors[-1]
        assert [e.id for e in coord.events_after(cursors[1], limit=2)] == ["c2", "c3"]
        assert coord.events_after(cursors[-1]) == []
        transfer = events[-1]
        assert (transfer.entity, transfer.from_state, transfer.to_state, transfer.pilot, transfer.attempt) == (
            "transfer", None, None, "p1", 0
        )
        assert transfer.detail == {"bytes": 10, "seconds": 0.5}
        assert transfer.time >= events[0].time

    def test_every_character_of_an_event_reads_back_unchanged(self, coord: Coordination) -> None:
        text = 'ünï "quoted" / back\\slash \n\t\x01 \u2028 😀 {"json": [1]}'
        detail = {"s": text, "n": [1.5, -2, 10**15, 1733350000.123456], "nested": {"k": None, "b": False}}
        coord.record_event("note", "ü/😀 x", detail, pilot="p \"1\"")
        coord.create_many("cu", [("c-1", {"run": text, "description": {"name": text}})])
        note, created = coord.events_after(None)
        assert (note.entity, note.id, note.pilot, note.detail) == ("note", "ü/😀 x", 'p "1"', detail)
        assert created.detail == {"run": text, "name": text, "slots": None}
        assert [e.cursor for e in coord.events_after(note.cursor)] == [created.cursor]

    def test_a_cu_creation_event_carries_its_run_name_and_slots(self, coord: Coordination) -> None:
        full = {"run": "run-1", "description": {"executable": "/bin/true", "name": "blast-7", "number_of_processes": 4}}
        coord.create_many("cu", [("c-full", full), ("c-bare", {"description": {"executable": "/bin/true"}}),
                                 ("c-empty", {})])
        coord.create_many("cu", [("c-queued", full)], queue="", detail={"placement": "shared queue"})
        coord.create("pilot", "p-1", {"run": "run-1", "description": {"name": "not a CU"}})
        created = {e.id: e.detail for e in coord.events_after(None) if e.from_state is None}
        assert created == {
            "c-full": {"run": "run-1", "name": "blast-7", "slots": 4},
            "c-bare": {"run": None, "name": None, "slots": None},
            "c-empty": {"run": None, "name": None, "slots": None},
            "c-queued": {"run": "run-1", "name": "blast-7", "slots": 4},
            "p-1": {},  # other kinds: nothing
        }
        assert coord.get("cu", "c-full").detail == {}  # the record's last detail is not the creation's

    def test_cursors_keep_growing_after_trimming_everything(self, coord: Coordination) -> None:
        coord.create_many("cu", [(f"c{i}", {}) for i in range(4)])
        events = coord.events_after(None)
        assert coord.trim_events(events[1].cursor) == 2
        assert [e.id for e in coord.events_after(None)] == ["c2", "c3"]
        assert [e.id for e in coord.events_after(events[0].cursor)] == ["c2", "c3"]
        assert coord.trim_events(events[-1].cursor) == 2
        assert coord.events_after(None) == [] and coord.trim_events(events[-1].cursor) == 0
        coord.create("cu", "late", {})
        [late] = coord.events_after(events[-1].cursor)
        assert late.id == "late"
        assert coord.last_cursor() == late.cursor

    def test_blocking_read_wakes_on_a_new_event(self, make: MakeCoordination) -> None:
        reader, writer = make(), make()
        writer.create("cu", "first", {})
        cursor = reader.last_cursor()
        started = time.monotonic()
        thread, box = run_in_thread(lambda: reader.events_after(cursor, block=20))
        wait_until(lambda: time.monotonic() - started > 0.3, message="the reader to block for a while")
        assert thread.is_alive()
        sent = time.monotonic()
        writer.record_event("transfer", "du", {"bytes": 1})
        thread.join(10)
        assert [e.id for e in box[0]] == ["du"]
        assert time.monotonic() - sent < 2

    def test_blocking_read_times_out_empty(self, coord: Coordination) -> None:
        start = time.monotonic()
        assert coord.events_after(None, block=0.3) == []
        assert 0.29 <= time.monotonic() - start < 5

    def test_a_bad_cursor_is_a_value_error(self, coord: Coordination) -> None:
        with pytest.raises(ValueError, match="cursor"):
            coord.events_after("not-a-cursor")
        with pytest.raises(ValueError, match="cursor"):
            coord.trim_events("x")
