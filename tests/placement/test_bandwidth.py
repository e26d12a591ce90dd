"""Tree distance and the bandwidth model: defaults, overrides, and learning from measured transfers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from placement import UNKNOWN_DISTANCE, BandwidthModel, Site, TransferSample, tree_distance
from tests.placement.strategies import sites


def test_tree_distance_counts_levels_below_the_common_prefix() -> None:
    assert tree_distance(("dc1", "m1"), ("dc1", "m1")) == 0
    assert tree_distance(("dc1", "m1"), ("dc1", "m2")) == 1
    assert tree_distance(("dc1", "m1"), ("dc2", "m1")) == 2
    assert tree_distance(("dc1",), ("dc1", "m2")) == 1  # depth is the longer path
    assert tree_distance(("eu", "dc1", "rack3", "m1"), ("eu", "dc2", "rack1", "m9")) == 3


def test_unknown_site_is_far_from_everything_even_itself() -> None:
    assert tree_distance((), ("dc1", "m1")) == UNKNOWN_DISTANCE
    assert tree_distance((), ()) == UNKNOWN_DISTANCE
    model = BandwidthModel()
    assert model.bandwidth_between((), ("dc1", "m1")) == model.bandwidth(2)


@given(sites, sites)
def test_tree_distance_is_symmetric_and_zero_only_on_the_same_site(a: Site, b: Site) -> None:
    assert tree_distance(a, b) == tree_distance(b, a)
    assert (tree_distance(a, b) == 0) == (a == b)


def test_defaults_are_ordered_and_far_distances_use_the_last_bucket() -> None:
    model = BandwidthModel()
    assert model.bandwidth(0) > model.bandwidth(1) > model.bandwidth(2)
    assert model.bandwidth(7) == model.bandwidth(2)
    assert model.transfer_seconds(10**9, ("dc1", "a"), ("dc2", "b")) == pytest.approx(10.0)
    assert model.transfer_seconds(0, ("dc1", "a"), ("dc2", "b")) == 0.0


def test_rates_can_be_overridden() -> None:
    model = BandwidthModel.from_rates(same_machine=5e9, same_datacenter=2e8, wide_area=1e7)
    assert model.rates == (5e9, 2e8, 1e7)
    deeper = BandwidthModel((1e12, 1e10, 1e9, 1e8), level_names=("machine", "rack", "datacenter", "wan"))
    assert deeper.bandwidth_between(("eu", "dc1", "m1"), ("eu", "dc2", "m1")) == 1e9
    assert deeper.level_name(3) == "wan"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"bps_by_distance": ()}, "bps_by_distance"),
        ({"bps_by_distance": (1e9, 0.0)}, "bps_by_distance"),
        ({"prior_bytes": -1.0}, "prior_bytes"),
        ({"observed_bytes": (1.0,)}, "observed_bytes"),
    ],
)
def test_bad_model_parameters_are_rejected_by_name(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        BandwidthModel(**kwargs)  # type: ignore[arg-type]


@given(
    distance_pair=st.sampled_from(
        [(("dc1", "a"), ("dc1", "a")), (("dc1", "a"), ("dc1", "b")), (("dc1", "a"), ("dc2", "b"))]
    ),
    measured=st.lists(
        st.tuples(st.floats(1e3, 1e11), st.floats(1e-3, 1e4)), min_size=1, max_size=10
    ),
)
def test_refine_moves_the_estimate_toward_the_samples_and_only_in_their_bucket(
    distance_pair: tuple[tuple[str, ...], tuple[str, ...]], measured: list[tuple[float, float]]
) -> None:
    src, dst = distance_pair
    model = BandwidthModel()
    samples = [TransferSample(src, dst, nbytes, seconds) for nbytes, seconds in measured]
    refined = model.refine(samples)
    bucket = tree_distance(src, dst)
    observed = sum(b for b, _ in measured) / sum(s for _, s in measured)
    before, after = model.bandwidth(bucket), refined.bandwidth(bucket)
    slack = 1e-9 * max(before, observed)
    assert abs(after - observed) <= abs(before - observed) + slack
    assert min(before, observed) * (1 - 1e-9) <= after <= max(before, observed) * (1 + 1e-9)
    for other in range(3):
        if other != bucket:
            assert refined.bandwidth(other) == model.bandwidth(other)


def test_a_lot_of_history_replaces_the_prior() -> None:
    wan = (("dc1", "a"), ("dc2", "b"))
    samples = [(*wan, 5 * 10**9, 100.0)] * 100  # 500 GB at 50 MB/s
    refined = BandwidthModel().refine(samples)
    assert refined.bandwidth(2) == pytest.approx(5e7, rel=2e-3)


def test_refine_is_cumulative_and_skips_samples_without_a_rate() -> None:
    dc = (("dc1", "a"), ("dc1", "b"))
    first = [(*dc, 4e9, 8.0), (*dc, 1e9, 0.0)]  # the second (a hard link) carries no rate
    second = [(*dc, 2e9, 1.0), (*dc, 0, 3.0), (*dc, math.inf, 1.0)]
    model = BandwidthModel()
    stepwise = model.refine(first).refine(second)
    at_once = model.refine(first + second)
    assert stepwise.rates == pytest.approx(at_once.rates)
    assert stepwise.observed_bytes[1] == 6e9
    assert stepwise.observed_seconds[1] == 9.0
    assert model.refine([]).rates == model.rates
