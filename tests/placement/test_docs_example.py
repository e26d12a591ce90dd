"""The worked example of docs/placement.md, recomputed: the numbers in the doc are the code's."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest

from placement import (
    Action,
    BandwidthModel,
    Candidate,
    DataRef,
    Demand,
    StoreInfo,
    assign,
    decide,
    rank,
    replication_plan,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "placement.md"
MODEL = BandwidthModel()
DB = DataRef("du-db", 10 * 10**9, replica_sites=(("dc1", "store"),), replica_pds=("pd-dc1",))
CU7 = Demand("cu-7", inputs=(DB, DataRef("du-q7", 10 * 10**6, replica_sites=(("dc2", "store"),),
                                           replica_pds=("pd-dc2",))))
A = Candidate("A", ("dc1", "node1"), 8, 0, queued_slots=6, cached_dus=frozenset({"du-db"}), mean_task_seconds=60)
PILOTS = [
    A,
    Candidate("B", ("dc2", "node5"), 8, 8),
    Candidate("C", ("dc1", "node9"), 16, 0, state="queued", expected_start_s=300),
    Candidate("D", ("dc3", "node2"), 0, 0),
]


def test_the_explanation_in_the_doc_is_what_rank_prints() -> None:
    text = rank(CU7, PILOTS, MODEL).explain()
    assert text in DOC.read_text()
    early_c = [*PILOTS[:2], dataclasses.replace(PILOTS[2], expected_start_s=30.0), PILOTS[3]]
    best = rank(CU7, early_c, MODEL).best
    assert best is not None and (best.pilot_id, round(best.est_s, 2)) == ("C", 40.1)


def test_the_binding_timeline_of_the_doc() -> None:
    start = decide(CU7, rank(CU7, PILOTS, MODEL), 0.0)
    assert (start.action, start.pilot_id) == (Action.WAIT, "A")
    assert start.max_wait_s == pytest.approx(99.91)
    a_30s_away = [dataclasses.replace(A, queued_slots=3), *PILOTS[1:]]
    assert decide(CU7, rank(CU7, a_30s_away, MODEL), 60.0).action is Action.WAIT
    a_45s_away = [dataclasses.replace(A, queued_slots=5), *PILOTS[1:]]
    later = decide(CU7, rank(CU7, a_45s_away, MODEL), 60.0)
    assert (later.action, later.pilot_id) == (Action.BIND_TO, "B")
    final = decide(CU7, rank(CU7, a_30s_away, MODEL), 100.0)
    assert (final.action, final.pilot_id) == (Action.TAKE_ANY, "B")


def test_the_batch_split_of_the_doc() -> None:
    demands = [
        Demand(f"cu-{i}", inputs=(DB, DataRef(f"du-q{i}", 10**7, replica_sites=(("dc2", "store"),))))
        for i in range(24)
    ]
    result = assign(demands, PILOTS, MODEL)
    assert [result[f"cu-{i}"] for i in range(8)] == ["A"] * 7 + ["B"]
    assert Counter(result.values()) == {"A": 7, "B": 17}
    assert Counter(assign(demands, PILOTS, MODEL, plan_cache=False).values()) == {"A": 12, "B": 12}


def test_the_refine_and_replication_numbers_of_the_doc() -> None:
    refined = MODEL.refine([(("dc1", "s"), ("dc2", "n"), 20 * 10**9, 400.0)])
    assert refined.bandwidth(2) / 1e6 == pytest.approx(51.3, abs=0.05)
    store = [StoreInfo("pd-dc2", ("dc2", "store"), 10**12)]
    hot = replication_plan(DB, {("dc2", "node5"): 40}, store, MODEL)
    assert hot.pd_ids == ("pd-dc2",) and hot.copies[0].saving_s == pytest.approx(3500.0)
    cold = replication_plan(DB, {("dc2", "node5"): 1}, store, MODEL)
    assert cold.copies == () and "would save -10.00 s" in cold.explain()
