"""Validation of the plain inputs: bad values are rejected with the field named."""

from __future__ import annotations

import pytest

from placement import Candidate, DataRef, Demand, Weights, format_site


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: DataRef("", 1), "du_id"),
        (lambda: DataRef("d", -1), "size_bytes"),
        (lambda: DataRef("d", 1, replica_sites=(("dc", ""),)), "replica_sites"),
        (lambda: DataRef("d", 1, replica_sites=(("dc", "m"),), replica_pds=("a", "b")), "replica_pds"),
        (lambda: Demand("cu", slots=0), "slots"),
        (lambda: Demand("cu", affinity="dc1"), "affinity"),  # type: ignore[arg-type]
        (lambda: Demand("cu", inputs=(DataRef("d", 1), DataRef("d", 2))), "twice"),
        (lambda: Candidate("p", ("dc",), 2, 3), "free_slots"),
        (lambda: Candidate("p", ("dc",), 2, 2, queued_slots=-1), "queued_slots"),
        (lambda: Candidate("p", ("dc",), 2, 2, state="done"), "state"),  # type: ignore[arg-type]
        (lambda: Candidate("p", ("dc",), 2, 2, mean_task_seconds=0), "mean_task_seconds"),
        (lambda: Candidate("p", ("dc",), 2, 2, expected_start_s=float("nan")), "expected_start_s"),
        (lambda: Weights(wait=-1), "wait"),
    ],
)
def test_bad_values_name_their_field(build: object, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        build()  # type: ignore[operator]


def test_candidate_accepts_any_iterable_cache_and_reports_available_slots() -> None:
    cand = Candidate("p", ("dc1", "m1"), 8, 3, queued_slots=1, cached_dus={"du1"})  # type: ignore[arg-type]
    assert cand.cached_dus == frozenset({"du1"})
    assert cand.available_slots == 2
    queued = Candidate("q", ("dc1",), 8, 0, queued_slots=3, state="queued", expected_start_s=5)
    assert queued.available_slots == 5


def test_format_site() -> None:
    assert format_site(("dc1", "m2")) == "dc1/m2"
    assert format_site(()) == "?"
