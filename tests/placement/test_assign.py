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
    demands_: list[Demand], cands: list[Candidate], weights: Weights = Weights()
) -> dict[str, str]:
    """What assign must equal: rank each demand in turn, bind to the best, add its slots as queued."""
    current = {c.pilot_id: c for c in cands}
    result: dict[str, str] = {}
    for demand in demands_:
        ranking = rank(demand, list(current.values()), MODEL, weights=weights)
        if ranking.best is None:
            continue
        chosen = current[ranking.best.pilot_id]
        result[demand.cu_id] = chosen.pilot_id
        current[chosen.pilot_id] = dataclasses.replace(
            chosen, queued_slots=chosen.queued_slots + demand.slots
        )
    return result


@st.composite
def workloads(draw: st.DrawFn) -> tuple[list[Demand], list[Candidate]]:
    count = draw(st.integers(0, 12))
    return [draw(demands(cu_id=f"cu{i}")) for i in range(count)], draw(candidate_lists())


@settings(max_examples=150)
@given(workloads(), st.sampled_from([Weights(), Weights(wait=2.0, transfer=0.5, soft_affinity_s=5.0)]))
def test_assign_equals_ranking_one_cu_at_a_time(
    workload: tuple[list[Demand], list[Candidate]], weights: Weights
) -> None:
    demands_, cands = workload
    assert assign(demands_, cands, MODEL, weights=weights) == sequential_reference(demands_, cands, weights)


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
    assert Counter(result.values())["cached"] > Counter(result.values())["cold"]


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
