"""Late binding: bind, wait (bounded by the move cost), take any; and idle pilots picking work."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from placement import (
    Action,
    BandwidthModel,
    Candidate,
    DataRef,
    Demand,
    Waiting,
    decide,
    idle_pick,
    locality_budget,
    rank,
)
from tests.placement.strategies import candidate_lists, demands

MODEL = BandwidthModel()
DB = DataRef("du-db", 10 * 10**9, replica_sites=(("dc1", "store"),))  # 100 s over the WAN
CU = Demand("cu", inputs=(DB,))


def busy_holder(queued: int) -> Candidate:
    """8 slots, all busy, ``queued`` more slots of work queued, caches the DB; 60 s per task."""
    return Candidate("holder", ("dc2", "m1"), 8, 0, queued_slots=queued, cached_dus=frozenset({"du-db"}))


IDLE_FAR = Candidate("idle", ("dc2", "m2"), 8, 8)


def test_binds_when_the_best_pilot_has_a_free_slot() -> None:
    free_holder = Candidate("holder", ("dc2", "m1"), 8, 1, cached_dus=frozenset({"du-db"}))
    decision = decide(CU, rank(CU, [free_holder, IDLE_FAR], MODEL), 0.0)
    assert (decision.action, decision.pilot_id) == (Action.BIND_TO, "holder")


def test_waits_for_the_busy_holder_while_its_wait_is_cheaper_than_the_move() -> None:
    ranking = rank(CU, [busy_holder(queued=3), IDLE_FAR], MODEL)  # holder wait (3+1)/8*60 = 30 s
    assert ranking.best is not None and ranking.best.wait_s == 30.0
    decision = decide(CU, ranking, 0.0)
    assert (decision.action, decision.pilot_id) == (Action.WAIT, "holder")
    assert decision.budget_s == pytest.approx(100.0)
    assert decision.max_wait_s == pytest.approx(100.0)
    later = decide(CU, rank(CU, [busy_holder(queued=3), IDLE_FAR], MODEL), 40.0)
    assert later.action is Action.WAIT and later.max_wait_s == pytest.approx(60.0)


def test_takes_the_idle_pilot_when_the_expected_wait_exceeds_what_is_left_of_the_move_cost() -> None:
    ranking = rank(CU, [busy_holder(queued=3), IDLE_FAR], MODEL)
    decision = decide(CU, ranking, 75.0)  # 30 s more expected, only 25 s of the 100 s budget left
    assert (decision.action, decision.pilot_id) == (Action.BIND_TO, "idle")


def test_never_waits_past_the_move_cost_even_if_the_holder_still_looks_better() -> None:
    ranking = rank(CU, [busy_holder(queued=1), IDLE_FAR], MODEL)  # holder always "15 s away"
    decision = decide(CU, ranking, 100.0)
    assert (decision.action, decision.pilot_id) == (Action.TAKE_ANY, "idle")
    assert "worth only 100.00 s" in decision.explain()


def test_without_any_idle_pilot_waits_for_the_best_until_its_expected_start() -> None:
    batch = Candidate("batch", ("dc2", "m3"), 16, 0, state="queued", expected_start_s=45.0,
                      cached_dus=frozenset({"du-db"}))
    ranking = rank(CU, [busy_holder(queued=20), batch], MODEL)
    decision = decide(CU, ranking, 0.0)
    assert (decision.action, decision.pilot_id, decision.max_wait_s) == (Action.WAIT, "batch", 45.0)
    assert "batch queue" in decision.reason


def test_waiting_for_a_batch_queued_pilot_is_bounded_like_any_other() -> None:
    batch = Candidate("batch", ("dc2", "m3"), 16, 0, state="queued", expected_start_s=45.0,
                      cached_dus=frozenset({"du-db"}))
    ranking = rank(CU, [batch, IDLE_FAR], MODEL)
    first = decide(CU, ranking, 0.0)
    assert (first.action, first.pilot_id, first.max_wait_s) == (Action.WAIT, "batch", 100.0)
    assert decide(CU, ranking, 100.0).action is Action.TAKE_ANY


def test_no_eligible_pilot_means_waiting_for_a_new_one() -> None:
    decision = decide(CU, rank(CU, [], MODEL), 0.0)
    assert (decision.action, decision.pilot_id, decision.max_wait_s) == (Action.WAIT, None, math.inf)
    with pytest.raises(ValueError, match="now_waited_s"):
        decide(CU, [], -1.0)


@given(demands(), candidate_lists(), st.floats(0, 5000))
def test_a_wait_never_extends_past_the_locality_budget(demand: Demand, cands: list[Candidate],
                                                       waited: float) -> None:
    ranking = rank(demand, cands, MODEL)
    decision = decide(demand, ranking, waited)
    idle = next((s for s in ranking if s.ready_now), None)
    if ranking.best is not None and idle is not None and not ranking.best.ready_now:
        budget = locality_budget(ranking.best, idle)
        assert decision.budget_s == budget
        if decision.action is Action.WAIT:
            assert waited + decision.max_wait_s <= budget * (1 + 1e-12)
            assert ranking.best.wait_s < decision.max_wait_s
        elif waited >= budget:
            assert decision.action is Action.TAKE_ANY
    if decision.action is Action.BIND_TO:
        assert decision.pilot_id in {s.pilot_id for s in ranking if s.ready_now}


def test_idle_pilot_picks_cheap_work_first_and_leaves_work_worth_waiting_for() -> None:
    holder_score = rank(CU, [busy_holder(queued=3)], MODEL)[0]  # holder 30 s away, move 100 s
    query = DataRef("du-q", 10**6, replica_sites=(("dc2", "s"),))
    waiting = [
        Waiting(CU, waited_s=10.0, waiting_for=holder_score),          # not yet worth moving 10 GB
        Waiting(Demand("q-only", inputs=(query,)), waited_s=1.0),        # no preference: cheap here
        Waiting(Demand("patient", inputs=(DB,)), waited_s=120.0, waiting_for=holder_score),  # over budget
        Waiting(Demand("too-big", slots=9)),
    ]
    picks = idle_pick(IDLE_FAR, waiting, MODEL)
    assert [p.cu_id for p in picks] == ["q-only", "patient"]
    assert "waited 120.00 s for holder" in picks[1].reason
    assert picks[1].score.transfer_s == pytest.approx(100.0)


def test_idle_pick_takes_work_that_is_no_dearer_here_and_respects_capacity() -> None:
    holder_score = rank(CU, [busy_holder(queued=3)], MODEL)[0]
    twin = Candidate("twin", ("dc2", "m9"), 8, 2, cached_dus=frozenset({"du-db"}))
    waiting = [Waiting(Demand(f"cu{i}", inputs=(DB,)), waiting_for=holder_score) for i in range(5)]
    picks = idle_pick(twin, waiting, MODEL)
    assert [p.cu_id for p in picks] == ["cu0", "cu1"]
    assert idle_pick(twin, waiting, MODEL, max_picks=1)[0].cu_id == "cu0"
    in_batch = Candidate("b", ("dc2", "m9"), 8, 0, state="queued", expected_start_s=5)
    assert idle_pick(in_batch, waiting, MODEL) == []
