"""The coordination conformance suite: the transition choke point (table check, CAS, attempts, timestamps, events)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pilotdata import states
from pilotdata.coordination import Coordination, TransitionRequest
from pilotdata.errors import DescriptionError, IllegalTransitionError, NotFoundError
from tests.coordination.conformance.base import ConformanceBase
from tests.coordination.helpers import put_cu


class TransitionConformance(ConformanceBase):
    """The transition choke point (table check, CAS, attempts, timestamps, events)."""

    def test_legal_path_stamps_every_state(self, coord: Coordination) -> None:
        put_cu(coord, "c")
        seen = ["New"]
        for target in ["Pending", "StagingInput", "Running", "StagingOutput", "Done"]:
            result = coord.transition("cu", "c", target, pilot="p1")
            assert (result.ok, result.previous, result.state, result.attempt) == (True, seen[-1], target, 0)
            seen.append(target)
        record = coord.get("cu", "c")
        assert record.state == "Done"
        assert record.pilot == "p1"
        assert set(record.times) == set(seen)
        stamps = [record.times[s] for s in seen]
        assert stamps == sorted(stamps)
        assert record.updated == record.times["Done"]

    def test_illegal_transition_raises_and_writes_nothing(self, coord: Coordination) -> None:
        put_cu(coord, "c", "Pending")
        before = coord.get("cu", "c")
        cursor = coord.last_cursor()
        with pytest.raises(IllegalTransitionError) as info:
            coord.transition("cu", "c", "Done")
        assert (info.value.current, info.value.target, info.value.entity_id) == ("Pending", "Done", "c")
        assert coord.get("cu", "c") == before
        assert coord.last_cursor() == cursor

    @pytest.mark.parametrize("final", ["Done", "Failed", "Canceled"])
    def test_final_states_are_sticky(self, coord: Coordination, final: str) -> None:
        put_cu(coord, "c", final)
        for target in states.states_of("cu"):
            with pytest.raises(IllegalTransitionError):
                coord.transition("cu", "c", target)
        assert coord.get("cu", "c").state == final

    def test_expected_state_is_a_compare_and_set(self, coord: Coordination) -> None:
        put_cu(coord, "c", "Pending")
        with pytest.raises(IllegalTransitionError, match="Pending -> StagingInput"):
            coord.transition("cu", "c", "StagingInput", expected="New")
        assert coord.get("cu", "c").state == "Pending"
        assert coord.transition("cu", "c", "StagingInput", expected="Pending").ok
        first, second = coord.transition_many(
            "cu", [TransitionRequest("c", "Running", expected="StagingInput"),
                   TransitionRequest("c", "Failed", expected="StagingInput")]
        )
        assert first.ok and not second.ok
        assert second.previous == "Running"

    def test_retry_back_to_pending_increments_attempt(self, coord: Coordination) -> None:
        put_cu(coord, "c", "Running")
        assert coord.transition("cu", "c", "Pending", detail={"reason": "node lost"}).attempt == 1
        coord.transition("cu", "c", "StagingInput")
        assert coord.transition("cu", "c", "Pending").attempt == 2
        coord.transition("cu", "c", "Running")
        coord.transition("cu", "c", "StagingOutput")
        assert coord.transition("cu", "c", "Pending").attempt == 3
        assert coord.transition("cu", "c", "Failed").attempt == 3  # Pending -> Failed is no retry
        record = coord.get("cu", "c")
        assert (record.state, record.attempt, record.detail) == ("Failed", 3, {})

    def test_detail_and_pilot_are_recorded(self, coord: Coordination) -> None:
        put_cu(coord, "c", "Running", pilot="p1")
        coord.transition("cu", "c", "Failed", detail={"reason": "exit 3", "exit_code": 3})
        record = coord.get("cu", "c")
        assert record.detail == {"reason": "exit 3", "exit_code": 3}
        assert record.pilot == "p1"  # kept when the move names no pilot

    def test_missing_entity(self, coord: Coordination) -> None:
        with pytest.raises(NotFoundError, match="ghost"):
            coord.transition("cu", "ghost", "Pending")
        [result] = coord.transition_many("cu", [TransitionRequest("ghost", "Pending")])
        assert (result.ok, result.previous) == (False, None)

    def test_transition_many_applies_each_request_on_its_own(self, coord: Coordination) -> None:
        coord.create_many("cu", [(f"c{i}", {}) for i in range(4)])
        coord.transition("cu", "c3", "Canceled")
        results = coord.transition_many(
            "cu",
            [TransitionRequest("c0", "Pending"), TransitionRequest("c1", "Running"),
             TransitionRequest("c0", "StagingInput", pilot="p"), TransitionRequest("c2", "Pending"),
             TransitionRequest("c3", "Pending"), TransitionRequest("nope", "Pending")],
        )
        assert [(r.id, r.ok, r.previous) for r in results] == [
            ("c0", True, "New"), ("c1", False, "New"), ("c0", True, "Pending"), ("c2", True, "New"),
            ("c3", False, "Canceled"), ("nope", False, None),
        ]
        assert [r.state for r in coord.get_many("cu", ["c0", "c1", "c2", "c3"]) if r] == [
            "StagingInput", "New", "Pending", "Canceled"
        ]
        assert coord.get("cu", "c0").pilot == "p"
        assert coord.transition_many("cu", []) == []

    def test_transitions_emit_events(self, coord: Coordination) -> None:
        put_cu(coord, "c", "Running", pilot="p1")
        coord.transition("cu", "c", "Pending", pilot="p1", detail={"reason": "retry"})
        events = [e for e in coord.events_after(None) if e.id == "c"]
        assert [(e.entity, e.from_state, e.to_state, e.attempt) for e in events] == [
            ("cu", None, "New", 0), ("cu", "New", "Pending", 0), ("cu", "Pending", "StagingInput", 0),
            ("cu", "StagingInput", "Running", 0), ("cu", "Running", "Pending", 1),
        ]
        assert events[0].pilot is None
        assert {e.pilot for e in events[1:]} == {"p1"}
        assert events[-1].detail == {"reason": "retry"}
        record = coord.get("cu", "c")
        assert events[-1].time == pytest.approx(record.times["Pending"])

    def test_pilot_and_du_tables(self, coord: Coordination) -> None:
        coord.create("pilot", "p", {})
        for target in ["Pending", "Running", "Done"]:
            coord.transition("pilot", "p", target)
        coord.create("du", "d", {})
        coord.transition("du", "d", "Pending")
        with pytest.raises(IllegalTransitionError):
            coord.transition("du", "d", "Done")  # Pending -> Done is not in the DU table
        coord.transition("du", "d", "Failed", detail={"reason": "transfer failed"})
        assert (coord.get("pilot", "p").state, coord.get("du", "d").state) == ("Done", "Failed")

    def test_unknown_target_is_illegal_and_pd_has_no_state_machine(self, coord: Coordination) -> None:
        put_cu(coord, "c")
        with pytest.raises(IllegalTransitionError, match="Bogus"):
            coord.transition("cu", "c", "Bogus")
        coord.create("pd", "pd1", {"url": "file:///scratch"})
        assert coord.get("pd", "pd1").state == "New"
        with pytest.raises(ValueError, match="pd"):
            coord.transition("pd", "pd1", "Running")

    # Each backend's class runs this method (differing executors): the examples do not depend on it.
    @settings(max_examples=25, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.differing_executors])
    @given(targets=st.lists(st.sampled_from(states.states_of("cu")), min_size=1, max_size=8))
    def test_backend_agrees_with_the_table(self, coord: Coordination, targets: list[str]) -> None:
        """Any sequence of requested moves: the backend accepts exactly what :mod:`states` allows."""
        cu_id = f"h{abs(hash(tuple(targets)))}-{len(coord.list_ids('cu'))}"
        coord.create("cu", cu_id, {})
        state, attempt = "New", 0
        for target in targets:
            [result] = coord.transition_many("cu", [TransitionRequest(cu_id, target)])
            assert result.ok == states.is_legal("cu", state, target)
            if result.ok:
                attempt += states.increments_attempt("cu", state, target)
                state = target
            assert (result.attempt, coord.get("cu", cu_id).state) == (attempt, state)

    def test_large_batches_keep_request_order(self, coord: Coordination) -> None:
        """Batches larger than a backend's internal chunk: later requests see the earlier ones applied."""
        ids = [f"c{i:04d}" for i in range(700)]
        coord.create_many("cu", [(i, {}) for i in ids])
        requests = [TransitionRequest(i, "Pending") for i in ids] + [
            TransitionRequest(i, "Running", expected="Pending", pilot="p", detail={"n": n}) for n, i in enumerate(ids)
        ]
        results = coord.transition_many("cu", requests)
        assert [r.id for r in results] == [r.id for r in requests]
        assert all(r.ok for r in results)
        assert [r.previous for r in results[700:]] == ["Pending"] * 700
        records = coord.get_many("cu", ids)
        assert {(r.state, r.pilot) for r in records if r} == {("Running", "p")}
        assert [r.detail["n"] for r in records if r] == list(range(700))
        assert len(coord.events_after(None, limit=5000)) == 700 * 3

    def test_data_patch_applies_with_the_move_only(self, coord: Coordination) -> None:
        put_cu(coord, "c", "Pending")
        coord.update_data("cu", "c", {"keep": 1, "drop": "x"})
        coord.transition("cu", "c", "Running", data={"sandbox": "/s/c", "drop": None, "nested": {"a": [1, 2.5]}})
        data = coord.get("cu", "c").data
        data.pop("description", None)
        assert data == {"keep": 1, "sandbox": "/s/c", "nested": {"a": [1, 2.5]}}
        results = coord.transition_many("cu", [
            TransitionRequest("c", "Done", expected="Pending", data={"exit_code": 9}),  # CAS fails: no data
            TransitionRequest("c", "Done", expected="Running", data={"exit_code": 0}),
            TransitionRequest("c", "Failed", data={"exit_code": 7}),  # final is sticky: no data
        ])
        assert [r.ok for r in results] == [False, True, False]
        record = coord.get("cu", "c")
        assert (record.state, record.data["exit_code"]) == ("Done", 0)

    def test_every_patch_of_a_batch_applies_in_order_beside_moves_without_one(self, coord: Coordination) -> None:
        """An agent's recorder sends a CU's Running and Done in one batch, each with a patch, among CUs whose
        moves carry none; more patched CUs than a backend's chunk of ids."""
        ids = [f"c{i:04d}" for i in range(600)]
        coord.create_many("cu", [(i, {"reason": "old", "keep": i}) for i in ids])
        coord.transition_many("cu", [TransitionRequest(i, "Pending") for i in ids])
        patched, plain = ids[:550], ids[550:]
        requests = [TransitionRequest(i, "Running", data={"sandbox": f"/s/{i}"}) for i in patched]
        requests += [TransitionRequest(i, "Running", detail={"n": 1}) for i in plain]
        requests += [TransitionRequest(i, "Done", expected="Running", data={"exit_code": 0, "reason": None})
                     for i in patched]
        assert all(r.ok for r in coord.transition_many("cu", requests))
        records = {r.id: r for r in coord.get_many("cu", ids) if r}
        for i in patched:
            assert records[i].state == "Done"
            assert records[i].data == {"keep": i, "sandbox": f"/s/{i}", "exit_code": 0}  # "reason" deleted
        for i in plain:
            assert (records[i].state, records[i].detail) == ("Running", {"n": 1})
            assert records[i].data == {"reason": "old", "keep": i}

    def test_a_patch_replaces_each_key_whole_and_later_patches_win(self, coord: Coordination) -> None:
        """The data-patch rule in a batch that mixes plain and object values, per CU and across CUs: an object
        value replaces the stored object (no merge), ``None`` deletes, nulls inside a value are kept, the
        later of two patches of one CU wins, and numbers read back exactly."""
        stored = {"nodes": {"n1": 1, "n2": 2}, "gone": "x", "keep": 0.1}
        coord.create_many("cu", [(i, stored) for i in ("a", "b", "c")])
        coord.transition_many("cu", [TransitionRequest(i, "Pending") for i in ("a", "b", "c")])
        requests = [
            TransitionRequest("a", "Running", data={"sandbox": "/s/a", "gone": None, "exit_code": 5}),
            TransitionRequest("a", "Done", expected="Running", data={"exit_code": 0, "sandbox": None}),
            TransitionRequest("b", "Running", data={"x": 1, "list": [None, {"n": None}], "f": 0.1 + 0.2}),
            TransitionRequest("b", "Done", expected="Running", data={"nodes": {"n3": 3}, "x": None}),
            TransitionRequest("c", "Running", data={"nodes": {"n1": None}, "big": 2**70}),
            TransitionRequest("c", "Done", expected="Running", data={"gone": None, "k": "v"}),
        ]
        assert all(r.ok for r in coord.transition_many("cu", requests))
        records = {r.id: r.data for r in coord.get_many("cu", ["a", "b", "c"]) if r}
        assert records["a"] == {"nodes": {"n1": 1, "n2": 2}, "keep": 0.1, "exit_code": 0}
        assert records["b"] == {"nodes": {"n3": 3}, "gone": "x", "keep": 0.1, "list": [None, {"n": None}],
                                "f": 0.1 + 0.2}
        assert records["c"] == {"nodes": {"n1": None}, "keep": 0.1, "big": 2**70, "k": "v"}

    def test_a_patch_that_is_not_json_is_refused_and_changes_nothing(self, coord: Coordination) -> None:
        put_cu(coord, "a", "Pending")
        put_cu(coord, "b", "Pending")
        cases: list[tuple[dict[Any, Any], str]] = [({"bad": {1, 2}}, "data.bad"), ({"bad": float("nan")}, "data.bad"),
                                                   ({"ok": 1, 7: "seven"}, "data key 7")]
        for bad, named in cases:
            with pytest.raises(DescriptionError, match=named):
                coord.transition_many("cu", [
                    TransitionRequest("a", "Running", data={"fine": 1}),
                    TransitionRequest("b", "Running", data=bad),
                ])
            assert [r.state for r in coord.get_many("cu", ["a", "b"]) if r] == ["Pending", "Pending"]
            assert "fine" not in coord.get("cu", "a").data

    def test_final_move_can_release_the_claim_atomically(self, coord: Coordination) -> None:
        put_cu(coord, "a", "Pending")
        put_cu(coord, "b", "Pending")
        coord.enqueue(["a", "b"])
        assert coord.claim("p1", limit=2) == ["a", "b"]
        coord.transition("cu", "a", "Running", pilot="p1")
        results = coord.transition_many("cu", [
            TransitionRequest("a", "Done", expected="Running", pilot="p1", release=True),
            TransitionRequest("b", "Done", expected="Running", pilot="p1", release=True),  # illegal: keeps claim
        ])
        assert [r.ok for r in results] == [True, False]
        assert coord.claimed("p1") == ["b"]
