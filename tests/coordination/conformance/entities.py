"""The coordination conformance suite: entity records (create, get, get_many, list_ids, update_data, delete)."""

from __future__ import annotations

import threading

import pytest

from pilotdata.coordination import Coordination
from pilotdata.errors import AlreadyExistsError, DescriptionError, NotFoundError
from tests.coordination.conformance.base import ConformanceBase, MakeCoordination


class EntityConformance(ConformanceBase):
    """Entity records (create, get, get_many, list_ids, update_data, delete)."""

    def test_create_returns_the_new_record(self, coord: Coordination) -> None:
        data = {"description": {"executable": "/bin/echo", "arguments": ["a", "b"]}, "size": 12, "none": None}
        record = coord.create("cu", "cu-1", data)
        assert (record.kind, record.id, record.state) == ("cu", "cu-1", "New")
        assert (record.attempt, record.pilot) == (0, None)
        assert record.data == {"description": {"executable": "/bin/echo", "arguments": ["a", "b"]}, "size": 12}
        assert record.created == record.updated == record.times["New"]
        assert record.detail == {}
        assert coord.get("cu", "cu-1") == record

    def test_data_values_round_trip_as_json(self, coord: Coordination) -> None:
        data = {"big": 2**62 + 1, "float": 0.1, "list": [], "obj": {}, "s": "ünï", "b": True, "n": [{"a": [1]}]}
        coord.create("du", "du-1", data)
        assert coord.get("du", "du-1").data == data

    def test_create_of_a_taken_id_raises_and_changes_nothing(self, coord: Coordination) -> None:
        coord.create("pilot", "p1", {"slots": 4})
        with pytest.raises(AlreadyExistsError, match="p1"):
            coord.create("pilot", "p1", {"slots": 8})
        assert coord.get("pilot", "p1").data == {"slots": 4}

    def test_same_id_in_two_kinds_are_two_entities(self, coord: Coordination) -> None:
        coord.create("cu", "x", {"k": "cu"})
        coord.create("du", "x", {"k": "du"})
        assert coord.get("cu", "x").data == {"k": "cu"}
        assert coord.get("du", "x").data == {"k": "du"}

    def test_create_many_is_all_or_nothing(self, coord: Coordination) -> None:
        coord.create("cu", "b", {})
        with pytest.raises(AlreadyExistsError, match="'b'"):
            coord.create_many("cu", [("a", {}), ("b", {}), ("c", {})])
        assert coord.get_many("cu", ["a", "c"]) == [None, None]
        with pytest.raises(AlreadyExistsError, match="'d'"):
            coord.create_many("cu", [("d", {}), ("e", {}), ("d", {})])
        assert coord.list_ids("cu") == ["b"]
        coord.create_many("cu", [(f"n{i}", {"i": i}) for i in range(50)])
        assert [r.data["i"] for r in coord.get_many("cu", [f"n{i}" for i in range(50)]) if r] == list(range(50))
        coord.create_many("cu", [])

    def test_get_of_a_missing_id_raises_not_found(self, coord: Coordination) -> None:
        with pytest.raises(NotFoundError, match="nope") as info:
            coord.get("cu", "nope")
        assert isinstance(info.value, KeyError)
        assert not coord.exists("cu", "nope")

    def test_get_many_keeps_order_and_marks_missing(self, coord: Coordination) -> None:
        coord.create_many("cu", [("a", {"n": 1}), ("b", {"n": 2})])
        records = coord.get_many("cu", ["b", "missing", "a", "b"])
        assert [r.data["n"] if r else None for r in records] == [2, None, 1, 2]
        assert coord.get_many("cu", []) == []

    def test_get_many_and_states_across_read_chunks_keep_every_value(self, coord: Coordination) -> None:
        """Reads longer than one server call (Redis: 1,000 keys a script; SQLite: its parameter limit)."""
        data = {"s": "ünï \"quoted\" / back\\slash", "big": 2**62 + 1, "obj": {}, "list": [], "f": 0.1}
        coord.create_many("cu", [(f"c{i}", {**data, "i": i}) for i in range(0, 2500, 2)])
        ids = [f"c{i}" for i in range(2500)]
        records = coord.get_many("cu", ids)
        assert [r.data["i"] if r else None for r in records] == [i if i % 2 == 0 else None for i in range(2500)]
        assert all(r.data == {**data, "i": r.data["i"]} and r.state == "New" for r in records if r)
        assert coord.states("cu", ids) == ["New" if i % 2 == 0 else None for i in range(2500)]

    def test_states_keep_order_mark_missing_and_follow_transitions(self, coord: Coordination) -> None:
        coord.create_many("cu", [("a", {"description": {"executable": "/bin/true"}}), ("b", {})])
        coord.transition("cu", "b", "Pending")
        assert coord.states("cu", ["b", "missing", "a", "b"]) == ["Pending", None, "New", "Pending"]
        assert coord.states("du", ["a"]) == [None]  # per kind
        assert coord.states("cu", []) == []
        assert coord.states("cu", [f"x{i}" for i in range(1200)]) == [None] * 1200  # beyond one SQL chunk

    def test_list_ids_is_sorted_and_per_kind(self, coord: Coordination) -> None:
        coord.create_many("cu", [("c2", {}), ("c10", {}), ("c1", {})])
        coord.create("pilot", "p", {})
        assert coord.list_ids("cu") == ["c1", "c10", "c2"]
        assert coord.list_ids("pilot") == ["p"]
        assert coord.list_ids("du") == []

    def test_unknown_kind_is_a_value_error(self, coord: Coordination) -> None:
        with pytest.raises(ValueError, match="kind"):
            coord.create("job", "j", {})

    def test_update_data_sets_and_deletes_top_level_keys(self, coord: Coordination) -> None:
        coord.create("du", "d", {"name": "db", "replica:pd1": {"status": "pending"}})
        coord.update_data("du", "d", {"replica:pd1": {"status": "complete", "url": "file:///x"}, "extra": 1})
        coord.update_data("du", "d", {"extra": None, "never-there": None})
        record = coord.get("du", "d")
        assert record.data == {"name": "db", "replica:pd1": {"status": "complete", "url": "file:///x"}}
        assert record.updated >= record.created
        assert record.state == "New"

    def test_update_data_of_a_missing_entity_raises_not_found(self, coord: Coordination) -> None:
        with pytest.raises(NotFoundError, match="ghost"):
            coord.update_data("cu", "ghost", {"a": 1})
        assert not coord.exists("cu", "ghost")

    def test_values_that_are_not_json_are_refused_and_change_nothing(self, coord: Coordination) -> None:
        with pytest.raises(DescriptionError, match="bad"):
            coord.create("cu", "c", {"bad": {1, 2}})
        assert not coord.exists("cu", "c")
        coord.create("cu", "c", {"ok": 1})
        with pytest.raises(DescriptionError, match="nan"):
            coord.update_data("cu", "c", {"nan": float("nan")})
        assert coord.get("cu", "c").data == {"ok": 1}

    def test_concurrent_patches_of_different_keys_keep_both(self, make: MakeCoordination) -> None:
        first = make()
        first.create("pilot", "p", {"slots": 1})
        handles = [first, make(), make(), make()]
        barrier = threading.Barrier(len(handles))
        errors: list[BaseException] = []

        def writer(n: int) -> None:
            try:
                barrier.wait()
                for i in range(30):
                    handles[n].update_data("pilot", "p", {f"key{n}": i, f"last{n}": {"i": i}})
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(len(handles))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        data = first.get("pilot", "p").data
        expected = {"slots": 1, **{f"key{n}": 29 for n in range(4)}, **{f"last{n}": {"i": 29} for n in range(4)}}
        assert data == expected

    def test_delete_removes_entity_and_index_but_keeps_events(self, coord: Coordination) -> None:
        coord.create("cu", "gone", {})
        coord.transition("cu", "gone", "Pending")
        coord.delete("cu", "gone")
        coord.delete("cu", "gone")  # absent: no-op
        assert not coord.exists("cu", "gone")
        assert coord.list_ids("cu") == []
        assert [e.to_state for e in coord.events_after(None) if e.id == "gone"] == ["New", "Pending"]
        coord.create("cu", "gone", {"again": True})
        assert coord.get("cu", "gone").state == "New"
