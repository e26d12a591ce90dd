"""DU placement: choose_store by labels and quota; replication_plan copies hot DUs, not cold ones."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from placement import (
    BandwidthModel,
    DataRef,
    NoEligibleStoreError,
    Site,
    StoreInfo,
    choose_store,
    replication_plan,
)

MODEL = BandwidthModel()
GB = 10**9
STORES = [
    StoreInfo("pd-dc1", ("dc1", "store"), free_bytes=None, labels={"tier": "disk"}),
    StoreInfo("pd-dc2", ("dc2", "store"), free_bytes=50 * GB, labels={"tier": "disk"}),
    StoreInfo("pd-dc2-small", ("dc2", "scratch"), free_bytes=1 * GB, labels={"tier": "ssd"}),
    StoreInfo("pd-dc3", ("dc3", "store"), free_bytes=500 * GB, labels={"tier": "tape"}),
]
HOT = DataRef("du-db", 10 * GB, replica_sites=(("dc1", "store"),), replica_pds=("pd-dc1",))


def test_choose_store_respects_required_labels_and_quota() -> None:
    assert choose_store(GB, STORES, required={"tier": "ssd"}) == "pd-dc2-small"
    assert choose_store(20 * GB, STORES, required={"tier": "disk"}, near=("dc2", "node1")) == "pd-dc2"
    with pytest.raises(NoEligibleStoreError) as info:
        choose_store(2 * GB, STORES, required={"tier": "ssd"})
    message = str(info.value)
    assert "pd-dc2-small has 1.0 GB free, needs 2.0 GB" in message
    assert "pd-dc1 lacks required label(s) tier=ssd" in message
    with pytest.raises(NoEligibleStoreError, match="no store registered"):
        choose_store(1, [])


def test_choose_store_prefers_soft_labels_then_nearness_then_free_space() -> None:
    assert choose_store(GB, STORES, soft={"tier": "tape"}) == "pd-dc3"
    assert choose_store(GB, STORES, near=("dc2", "x")) == "pd-dc2"  # beats the smaller dc2 scratch
    assert choose_store(GB, STORES) == "pd-dc1"  # unlimited quota first


@given(st.integers(0, 600 * GB), st.permutations(STORES))
def test_choose_store_never_overfills_and_ignores_store_order(size: int, stores: list[StoreInfo]) -> None:
    try:
        chosen = choose_store(size, stores, required={"tier": "disk"})
    except NoEligibleStoreError:
        assert all(s.labels.get("tier") != "disk" or not s.fits(size) for s in stores)
        return
    store = next(s for s in stores if s.pd_id == chosen)
    assert store.fits(size) and store.labels["tier"] == "disk"
    assert chosen == choose_store(size, STORES, required={"tier": "disk"})


def test_hot_du_is_replicated_next_to_its_readers() -> None:
    plan = replication_plan(HOT, {("dc2", "node1"): 30, ("dc2", "node2"): 20}, STORES, MODEL)
    assert plan.pd_ids == ("pd-dc2",)
    (copy,) = plan.copies
    assert copy.source_pd == "pd-dc1" and copy.copy_s == pytest.approx(100.0)
    # 50 pulls x 100 s over the WAN = 5000 s, versus one 100 s copy + 50 x 10 s inside dc2
    assert copy.saving_s == pytest.approx(5000 - (100 + 500))
    assert set(copy.serves) == {("dc2", "node1"), ("dc2", "node2")}
    assert "copy to pd-dc2 at dc2/store from dc1/store" in plan.explain()


def test_cold_du_is_not_replicated() -> None:
    plan = replication_plan(HOT, {("dc2", "node1"): 1}, STORES, MODEL)  # 100 s pull < 100 s copy + 10 s
    assert plan.copies == ()
    assert "stop: best remaining copy" in plan.explain()
    assert replication_plan(HOT, {}, STORES, MODEL).copies == ()


def test_copies_max_counts_existing_replicas_and_hot_sites_win() -> None:
    readers: dict[Site, int] = {("dc2", "n"): 40, ("dc3", "n"): 10}
    both = replication_plan(HOT, readers, STORES, MODEL, copies_max=3)
    assert both.pd_ids == ("pd-dc2", "pd-dc3")
    one = replication_plan(HOT, readers, STORES, MODEL, copies_max=2)
    assert one.pd_ids == ("pd-dc2",)
    assert "copies_max=2" in one.explain()
    assert replication_plan(HOT, readers, STORES, MODEL, copies_max=1).copies == ()


def test_replication_skips_full_stores_stores_holding_it_and_wrong_labels() -> None:
    big = DataRef("du-big", 100 * GB, replica_sites=(("dc1", "store"),), replica_pds=("pd-dc1",))
    plan = replication_plan(big, {("dc2", "n"): 50, ("dc1", "n"): 50}, STORES, MODEL,
                            required={"tier": "disk"})
    assert plan.copies == ()
    text = plan.explain()
    assert "pd-dc2 not eligible: has 50.0 GB free, needs 100.0 GB" in text
    assert "pd-dc3 not eligible: lacks required label(s) tier=disk" in text
    assert "stop: no eligible store left" in text
    assert "pd-dc1" not in text  # it holds the replica: never a copy target


def test_no_replica_means_nothing_to_copy_and_bad_copies_max_is_rejected() -> None:
    assert replication_plan(DataRef("du-new", GB), {("dc2", "n"): 9}, STORES, MODEL).copies == ()
    with pytest.raises(ValueError, match="copies_max"):
        replication_plan(HOT, {}, STORES, MODEL, copies_max=0)
