"""rank(): exclusions, ordering by estimated completion, determinism, and explanations."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from placement import BandwidthModel, Candidate, DataRef, Demand, Weights, rank
from tests.placement.strategies import candidate_lists, demands

MODEL = BandwidthModel()
GB = 10**9
DB = DataRef("du-db", 10 * GB, replica_sites=(("dc1", "store"),), replica_pds=("pd-dc1",))
QUERY = DataRef("du-q", 10 * 10**6, replica_sites=(("dc2", "store"),), replica_pds=("pd-dc2",))


@given(demands(), candidate_lists())
def test_never_ranks_a_pilot_without_enough_slots(demand: Demand, cands: list[Candidate]) -> None:
    ranking = rank(demand, cands, MODEL)
    by_id = {c.pilot_id: c for c in cands}
    assert all(by_id[s.pilot_id].total_slots >= demand.slots for s in ranking)
    too_small = {c.pilot_id for c in cands if c.total_slots < demand.slots}
    assert too_small <= {e.pilot_id for e in ranking.excluded}
    assert {s.pilot_id for s in ranking} | {e.pilot_id for e in ranking.excluded} == set(by_id)
    assert all(e.reason for e in ranking.excluded)


@given(demands(), candidate_lists())
def test_required_affinity_is_respected(demand: Demand, cands: list[Candidate]) -> None:
    ranking = rank(demand, cands, MODEL)
    if demand.affinity_required:
        for entry in ranking:
            assert entry.site[: len(demand.affinity)] == demand.affinity
        for cand in cands:
            if cand.site[: len(demand.affinity)] != demand.affinity:
                assert cand.pilot_id in {e.pilot_id for e in ranking.excluded}


@given(demands(), candidate_lists(), st.randoms(use_true_random=False))
def test_order_does_not_depend_on_candidate_order(
    demand: Demand, cands: list[Candidate], rnd: random.Random
) -> None:
    shuffled = list(cands)
    rnd.shuffle(shuffled)
    first, second = rank(demand, cands, MODEL), rank(demand, shuffled, MODEL)
    assert first == second
    assert first.excluded == second.excluded
    keys = [s.key for s in first]
    assert keys == sorted(keys)


@given(demands(), candidate_lists(min_size=1, max_size=1))
def test_a_pilot_holding_all_inputs_never_loses_to_an_identical_one_holding_none(
    demand: Demand, cands: list[Candidate]
) -> None:
    template = cands[0]
    wanted = frozenset(ref.du_id for ref in demand.inputs)
    for holder_id, other_id in (("a-holder", "b-other"), ("b-holder", "a-other")):
        holder = dataclasses.replace(template, pilot_id=holder_id, cached_dus=template.cached_dus | wanted)
        other = dataclasses.replace(
            template, pilot_id=other_id, cached_dus=template.cached_dus - wanted,
            fetching=tuple((du, ready) for du, ready in template.fetching if du not in wanted),
        )
        ranking = rank(demand, [other, holder], MODEL)
        order = [s.pilot_id for s in ranking]
        if holder_id in order and demand.inputs:
            assert order.index(holder_id) < order.index(other_id)
            assert ranking[order.index(holder_id)].est_s <= ranking[order.index(other_id)].est_s
            assert ranking[order.index(holder_id)].bytes_to_move == 0


def test_identical_pilots_tie_by_pilot_id() -> None:
    base = Candidate("p-b", ("dc1", "m1"), 4, 4)
    cands = [dataclasses.replace(base, pilot_id=name) for name in ("p-c", "p-a", "p-b")]
    assert [s.pilot_id for s in rank(Demand("cu"), cands, MODEL)] == ["p-a", "p-b", "p-c"]


def _blast_pilots(expected_start_s: float) -> list[Candidate]:
    running_far = Candidate("running-far", ("dc2", "node5"), 8, 8)  # idle, but the DB is a WAN move away
    batch_near = Candidate(
        "batch-near", ("dc1", "node9"), 16, 0, cached_dus=frozenset({"du-db", "du-q"}),
        state="queued", expected_start_s=expected_start_s,
    )
    return [running_far, batch_near]


def test_queued_in_batch_pilot_wins_when_its_start_beats_a_wan_move() -> None:
    ranking = rank(Demand("cu", inputs=(DB, QUERY)), _blast_pilots(expected_start_s=60.0), MODEL)
    best, runner_up = ranking
    assert best.pilot_id == "batch-near"
    assert (best.wait_s, best.transfer_s, best.est_s) == (60.0, 0.0, 60.0)
    assert runner_up.pilot_id == "running-far"
    assert runner_up.wait_s == 0.0
    assert runner_up.transfer_s == pytest.approx(100.01)  # 10 GB at 100 MB/s + 10 MB at 1 GB/s


def test_queued_in_batch_pilot_loses_when_its_start_is_later_than_the_move() -> None:
    ranking = rank(Demand("cu", inputs=(DB, QUERY)), _blast_pilots(expected_start_s=600.0), MODEL)
    assert [s.pilot_id for s in ranking] == ["running-far", "batch-near"]
    assert ranking[1].est_s == 600.0


def test_queue_wait_counts_work_already_queued() -> None:
    busy = Candidate("busy", ("dc1", "m1"), total_slots=8, free_slots=2, queued_slots=5, mean_task_seconds=80)
    (entry,) = rank(Demand("cu", slots=1), [busy], MODEL)
    assert entry.wait_s == pytest.approx((5 + 1 - 2) / 8 * 80)
    (fits,) = rank(Demand("cu", slots=1), [dataclasses.replace(busy, queued_slots=1)], MODEL)
    assert fits.wait_s == 0.0 and fits.ready_now


def test_soft_affinity_costs_a_penalty_per_level_and_required_excludes() -> None:
    cands = [
        Candidate("same-machine", ("dc1", "m1"), 4, 4),
        Candidate("same-dc", ("dc1", "m2"), 4, 4),
        Candidate("other-dc", ("dc2", "m1"), 4, 4),
    ]
    soft = rank(Demand("cu", affinity=("dc1", "m1")), cands, MODEL, weights=Weights(soft_affinity_s=30))
    assert [(s.pilot_id, s.penalty_s) for s in soft] == [
        ("same-machine", 0), ("same-dc", 30), ("other-dc", 60)
    ]
    required = rank(Demand("cu", affinity=("dc1",), affinity_required=True), cands, MODEL)
    assert [s.pilot_id for s in required] == ["same-dc", "same-machine"]
    assert [e.pilot_id for e in required.excluded] == ["other-dc"]
    assert "required affinity dc1 not satisfied by site dc2/m1" in required.excluded[0].reason


def test_an_input_already_being_fetched_costs_only_the_rest_of_the_fetch() -> None:
    arriving = Candidate("p", ("dc2", "m1"), 4, 4, fetching=(("du-db", 40.0),))
    (entry,) = rank(Demand("cu", inputs=(DB,)), [arriving], MODEL)
    assert (entry.est_s, entry.bytes_to_move, entry.fetches) == (40.0, 0, 0)
    assert "du-db: 10.0 GB already being fetched to the pilot, 40.00 s left after the wait" in entry.explain()
    busy = dataclasses.replace(arriving, free_slots=0, queued_slots=3, mean_task_seconds=100.0)
    (later,) = rank(Demand("cu", inputs=(DB,)), [busy], MODEL)  # starts after 100 s: the DB is there
    assert (later.wait_s, later.transfer_s, later.est_s) == (100.0, 0.0, 100.0)
    with pytest.raises(ValueError, match="fetching"):
        Candidate("p", ("dc1",), 1, 1, fetching=(("d", 1.0), ("d", 2.0)))


def test_best_replica_is_the_nearest_and_is_reported() -> None:
    spread = DataRef("du-x", GB, replica_sites=(("dc2", "s"), ("dc1", "s")), replica_pds=("pd2", "pd1"))
    (entry,) = rank(Demand("cu", inputs=(spread,)), [Candidate("p", ("dc1", "m1"), 1, 1)], MODEL)
    (source,) = entry.sources
    assert (source.site, source.pd_id, source.distance) == (("dc1", "s"), "pd1", 1)
    assert entry.transfer_s == pytest.approx(1.0)


def test_du_without_replica_is_costed_as_a_far_pull() -> None:
    pending = DataRef("du-new", GB)
    (entry,) = rank(Demand("cu", inputs=(pending,)), [Candidate("p", ("dc1", "m1"), 1, 1)], MODEL)
    assert entry.sources[0].site is None
    assert entry.transfer_s == pytest.approx(10.0)


def test_explain_prints_one_line_per_term_and_per_input() -> None:
    pilots = [*_blast_pilots(60.0), Candidate("tiny", ("dc1", "m"), 0, 0)]
    ranking = rank(Demand("cu-7", inputs=(DB, QUERY)), pilots, MODEL)
    text = ranking.best.explain() if ranking.best else ""
    lines = text.splitlines()
    assert lines[0] == "batch-near (queued at dc1/node9): est 60.00 s"
    assert lines[1].startswith("  wait 60.00 s: pilot still in the batch queue, expected start 60.00 s")
    assert lines[2] == "  transfer 0 s: 0 B to move (2 of 2 inputs cached)"
    assert lines[3] == "    du-db: 10.0 GB cached on the pilot"
    assert lines[5] == "  penalty 0 s: no affinity asked"
    far = ranking[1].explain()
    assert "du-db: 10.0 GB from dc1/store (pd-dc1) at 100.0 MB/s = 100.00 s" in far
    assert "du-q: 10.0 MB from dc2/store (pd-dc2) at 1.0 GB/s = 0.01 s" in far
    full = ranking.explain()
    assert full.splitlines()[0] == "placement of cu-7: 2 eligible, 1 excluded"
    assert full.splitlines()[-1] == "tiny: excluded (needs 1 slots, pilot has 0 in total)"


def test_duplicate_pilot_ids_are_rejected() -> None:
    with pytest.raises(ValueError, match="'p' appears twice"):
        rank(Demand("cu"), [Candidate("p", ("a",), 1, 1), Candidate("p", ("b",), 1, 1)], MODEL)
