"""assign(): the batch API agrees with rank() step by step, spreads load, and respects exclusions."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from placement import BandwidthModel, Candidate, DataRef, Demand, Weights, assign, rank
from tests.placement.strategies import candidate_lists, demands

MODEL = BandwidthModel()


def sequential_reference(
    demands_: list[Demand], cands: list[Candidate], weights: Weights = Weights(), plan_cache: bool = True
) -> dict[str, str]:
    """What assign must equal: rank each demand in turn, bind to the best, add its slots as queued
    and (plan_cache) the inputs it fetches as arriving at the pilot after its wait plus the fetch."""
    current = {c.pilot_id: c for c in cands}
    result: dict[str, str] = {}
    for demand in demands_:
        ranking = rank(demand, list(current.values()), MODEL, weights=weights)
        if ranking.best is None:
            continue
        best = ranking.best
        chosen = current[best.pilot_id]
        result[demand.cu_id] = chosen.pilot_id
        fetching = dict(chosen.fetching)
        ready = best.wait_s
        for source in best.sources:
            if plan_cache and not (source.cached or source.in_flight):
                ready = ready + source.seconds
                fetching[source.du_id] = ready
        current[chosen.pilot_id] = dataclasses.replace(
            chosen, queued_slots=chosen.queued_slots + demand.slots, fetching=tuple(fetching.items())
        )
    return result


@st.composite
def workloads(draw: st.DrawFn) -> tuple[list[Demand], list[Candidate]]:
    count = draw(st.integers(0, 12))
    return [draw(demands(cu_id=f"cu{i}")) for i in range(count)], draw(candidate_lists())


@settings(max_examples=200)
@given(
    workloads(),
    st.sampled_from([Weights(), Weights(wait=2.0, transfer=0.5, soft_affinity_s=5.0)]),
    st.booleans(),
)
def test_assign_equals_ranking_one_cu_at_a_time(
    workload: tuple[list[Demand], list[Candidate]], weights: Weights, plan_cache: bool
) -> None:
    demands_, cands = workload
    expected = sequential_reference(demands_, cands, weights, plan_cache)
    assert assign(demands_, cands, MODEL, weights=weights, plan_cache=plan_cache) == expected


@given(workloads(), st.randoms(use_true_random=False))
def test_assign_never_breaks_slots_or_required_affinity_and_ignores_candidate_order(
    workload: tuple[list[Demand], list[Candidate]], rnd: random.Random
) -> None:
    demands_, cands = workload
    result = assign(demands_, cands, MODEL)
    shuffled = list(cands)
    rnd.shuffle(shuffled)
    assert assign(demands_, shuffled, MODEL) == result
    by_id = {c.pilot_id: c for c in cands}
    for demand in demands_:
        if demand.cu_id not in result:
            assert rank(demand, cands, MODEL).best is None
            continue
        pilot = by_id[result[demand.cu_id]]
        assert pilot.total_slots >= demand.slots
        if demand.affinity_required:
            assert pilot.site[: len(demand.affinity)] == demand.affinity


def test_assign_spreads_100_cus_across_identical_pilots() -> None:
    pilots = [Candidate(f"p{i}", ("dc1", f"m{i}"), total_slots=8, free_slots=8) for i in range(4)]
    result = assign([Demand(f"cu{i:03d}") for i in range(100)], pilots, MODEL)
    assert len(result) == 100
    assert Counter(result.values()) == {"p0": 25, "p1": 25, "p2": 25, "p3": 25}


def test_spreading_weighs_slot_counts_and_task_times() -> None:
    big = Candidate("big", ("dc1", "a"), total_slots=12, free_slots=0)
    small = Candidate("small", ("dc1", "b"), total_slots=4, free_slots=0)
    load = Counter(assign([Demand(f"cu{i:03d}") for i in range(160)], [big, small], MODEL).values())
    assert load == {"big": 120, "small": 40}


def test_blast_work_goes_where_the_database_is_until_the_queue_outweighs_the_move() -> None:
    db = DataRef("du-db", 10**10, replica_sites=(("dc1", "store"),))
    cached = Candidate("cached", ("dc2", "m1"), 4, 4, cached_dus=frozenset({"du-db"}), mean_task_seconds=60)
    cold = Candidate("cold", ("dc2", "m2"), 4, 4, mean_task_seconds=60)
    result = assign([Demand(f"cu{i:02d}", inputs=(db,)) for i in range(40)], [cold, cached], MODEL)
    # the cold pilot pays a 100 s WAN pull. The k-th CU (0-based) would wait (k + 1 - 4) / 4 * 60 s on
    # 'cached': 90 s for cu09, 105 s for cu10, so cu10 is the first that 'cold' gets
    first_cold = min(int(cu[2:]) for cu, pilot in result.items() if pilot == "cold")
    assert first_cold == 10
    # after cu10 'cold' holds the database too (it moved once), so the rest spreads evenly
    assert Counter(result.values()) == {"cached": 20, "cold": 20}
    # without planning the cache every CU on 'cold' is charged the WAN pull again
    pessimistic = assign([Demand(f"cu{i:02d}", inputs=(db,)) for i in range(40)], [cold, cached], MODEL,
                         plan_cache=False)
    assert Counter(pessimistic.values())["cached"] > Counter(pessimistic.values())["cold"]


def test_cus_after_the_first_wait_for_the_fetch_in_progress_not_for_a_new_one() -> None:
    db = DataRef("du-db", 10**10, replica_sites=(("dc1", "store"),))  # 100 s to dc2
    holder = Candidate("holder", ("dc2", "m1"), 1, 0, queued_slots=1, cached_dus=frozenset({"du-db"}),
                       mean_task_seconds=70)  # next free slot in 140 s, then every 70 s
    idle = Candidate("idle", ("dc2", "m2"), 8, 8)
    result = assign([Demand(f"cu{i}", inputs=(db,)) for i in range(4)], [holder, idle], MODEL)
    # cu0: idle 100 s (fetch) < holder 140 s. cu1: idle max(0, 100) = 100 s < 140 s: it shares the
    # fetch in progress instead of starting a second one. cu2, cu3 likewise.
    assert result == {"cu0": "idle", "cu1": "idle", "cu2": "idle", "cu3": "idle"}
    ranked = rank(Demand("cu1", inputs=(db,)),
                  [holder, dataclasses.replace(idle, queued_slots=1, fetching=(("du-db", 100.0),))], MODEL)
    assert [(s.pilot_id, s.est_s, s.bytes_to_move) for s in ranked] == [("idle", 100.0, 0), ("holder", 140.0, 0)]


def test_unplaceable_cus_are_left_out() -> None:
    result = assign(
        [
            Demand("wide", slots=32),
            Demand("ok"),
            Demand("elsewhere", affinity=("dc9",), affinity_required=True),
        ],
        [Candidate("p", ("dc1", "m"), 8, 8)],
        MODEL,
    )
    assert result == {"ok": "p"}
    assert assign([Demand("cu")], [], MODEL) == {}


def test_duplicate_cu_ids_are_rejected() -> None:
    with pytest.raises(ValueError, match="'cu' appears twice"):
        assign([Demand("cu"), Demand("cu")], [Candidate("p", ("dc1",), 1, 1)], MODEL)
