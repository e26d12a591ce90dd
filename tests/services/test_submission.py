"""Recording a bulk submission: where each CU is recorded, and its ids."""

from __future__ import annotations

import re

import pytest

from pilotdata import ComputeDataService
from pilotdata.records import PLACEMENT
from pilotdata.services import submission
from pilotdata.services.binder import ANYWHERE
from pilotdata.session import Session
from pilotdata.states import Kind


def test_cus_that_need_no_placement_are_recorded_on_the_shared_queue_the_rest_under_the_lease(
    session: Session,
) -> None:
    cds = ComputeDataService(session=session)
    descs = [{"executable": "/bin/true", "name": f"t{i}", "shell": False} for i in range(3)]
    descs.insert(1, {"executable": "/bin/true", "name": "placed", "affinity_datacenter_label": "site-a"})
    cus = cds.submit_compute_units(descs)
    coord = session.coord
    records = coord.get_many(Kind.CU, [c.id for c in cus])
    assert [r.data["description"]["name"] for r in records if r] == ["t0", "placed", "t1", "t2"]
    anywhere = [cus[0].id, cus[2].id, cus[3].id]
    assert coord.queued() == anywhere
    assert coord.states(Kind.CU, anywhere) == ["Pending"] * 3
    assert {r.detail[PLACEMENT] for r in records if r and r.id in anywhere} == {ANYWHERE}
    # no pilot can place the labelled one yet: New, held by this service's lease (adopted if it dies)
    assert coord.states(Kind.CU, [cus[1].id]) == ["New"]
    assert coord.unbound(cds.id) == [cus[1].id]
    cds.close()


def test_ids_of_a_chunk_are_neighbours_and_unique() -> None:
    one, two = submission.new_cu_ids(300), submission.new_cu_ids(1)
    assert all(re.fullmatch(r"cu-[0-9a-f]{16}", i) for i in one + two)
    assert one == sorted(one) and len({i[:15] for i in one}) == 1 and one[0][:15] != two[0][:15]
    with pytest.raises(ValueError):
        submission.new_cu_ids(0x10001)


def test_a_chunk_whose_ids_are_taken_is_recorded_again_under_new_ones(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However unlikely, a taken id never loses a CU or records one twice: nothing of that try was recorded."""
    real = submission.new_cu_ids
    taken = real(submission.SUBMIT_CHUNK)
    session.coord.create_many(Kind.CU, [(taken[7], {"description": {"executable": "/bin/false"}})])
    tries = iter([taken])
    monkeypatch.setattr(submission, "new_cu_ids", lambda n: next(tries, None) or real(n))
    cds = ComputeDataService(session=session)
    n = submission.SUBMIT_CHUNK + 10
    cus = cds.submit_compute_units([{"executable": "/bin/true", "name": f"t{i}", "shell": False} for i in range(n)])
    ids = [c.id for c in cus]
    assert len(set(ids)) == n and taken[7] not in ids and not set(ids) & set(taken)
    records = session.coord.get_many(Kind.CU, ids)
    assert [r.data["description"]["name"] for r in records if r] == [f"t{i}" for i in range(n)]
    assert session.coord.queued() == ids
    assert session.coord.get(Kind.CU, taken[7]).data["description"] == {"executable": "/bin/false"}
    assert sorted(session.coord.list_ids(Kind.CU)) == sorted([*ids, taken[7]])
    cds.close()
