"""bind_round on real coordination: binding decisions without running agents."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pilotdata.services.binder import bind_round
from pilotdata.services.compute_data import bind_now, submit_units
from pilotdata.session import Session
from pilotdata.states import Kind


def _running_pilot(session: Session, pilot: str, site: str, slots: int = 2) -> None:
    coord = session.coord
    coord.create(Kind.PILOT, pilot, {"slots": slots, "labels": {"datacenter": site}, "cached_dus": []})
    coord.transition(Kind.PILOT, pilot, "Running")


def test_first_seen_from_another_thread_later_than_now_is_not_negative(sqlite_session: Session) -> None:
    """Regression: the submit thread and the binder thread share first_seen; a later stamp must not crash."""
    _running_pilot(sqlite_session, "p-a", "site-a")
    cu = submit_units(sqlite_session, [{"executable": "/bin/true", "affinity_datacenter_label": "site-a"}])[0]
    out = bind_round(sqlite_session.coord, [cu.id], {cu.id: time.monotonic() + 10})
    assert out.bound == {cu.id: "p-a"}
    assert sqlite_session.coord.queued("p-a") == [cu.id]


def test_affinity_sends_work_to_its_site_and_unlabelled_work_to_the_shared_queue(sqlite_session: Session) -> None:
    _running_pilot(sqlite_session, "p-a", "site-a")
    _running_pilot(sqlite_session, "p-b", "site-b")
    cus = submit_units(sqlite_session, [{"executable": "/bin/true", "affinity_datacenter_label": "site-b"},
                                        {"executable": "/bin/true"}])
    out = bind_round(sqlite_session.coord, [c.id for c in cus], {})
    assert out.bound == {cus[0].id: "p-b", cus[1].id: ""}
    placement = sqlite_session.coord.get(Kind.CU, cus[0].id).data["placement"]
    assert "p-b" in placement


def test_bind_now_without_pilots_uses_the_shared_queue(sqlite_session: Session) -> None:
    cu = submit_units(sqlite_session, [{"executable": "/bin/true", "affinity_datacenter_label": "site-a"}])[0]
    bind_now(sqlite_session, [cu.id])
    assert sqlite_session.coord.get(Kind.CU, cu.id).state == "Pending"
    assert sqlite_session.coord.queued(None) == [cu.id]


def test_work_left_on_a_finished_pilots_queue_goes_back_to_the_shared_queue(sqlite_session: Session) -> None:
    from pilotdata import PilotCompute, PilotComputeService
    from pilotdata.errors import StateError

    _running_pilot(sqlite_session, "p-a", "site-a")
    cu = submit_units(sqlite_session, [{"executable": "/bin/true"}], pilot="p-a")[0]
    sqlite_session.coord.transition(Kind.PILOT, "p-a", "Done")  # ended without taking it
    PilotComputeService(session=sqlite_session).refresh()
    assert sqlite_session.coord.queued("p-a") == []
    assert sqlite_session.coord.queued(None) == [cu.id]
    with pytest.raises(StateError, match="takes no more work"):
        PilotCompute("p-a", session=sqlite_session).submit_compute_unit({"executable": "/bin/true"})
    assert len(sqlite_session.coord.list_ids(Kind.CU)) == 1


def test_cds_without_arguments_joins_its_services_coordination(tmp_path: Path) -> None:
    """BigJob idiom: services get the coordination URL, ComputeDataService() gets nothing."""
    from pilotdata import ComputeDataService, PilotComputeService, PilotDataService
    from pilotdata.errors import DescriptionError

    url = f"sqlite:///{tmp_path / 'bigjob.sqlite'}"
    pds = PilotDataService(coordination_url=url)
    pd = pds.create_pilot({"service_url": str(tmp_path / "pd")})
    (tmp_path / "f.txt").write_text("x")
    cds = ComputeDataService()
    cds.add_pilot_data_service(pds)
    cds.add_pilot_compute_service(PilotComputeService(coordination_url=url))
    du = cds.submit_data_unit({"file_urls": [str(tmp_path / "f.txt")]}, pilot_data=pd, background=False)
    assert du.get_state() == "Running"
    other = PilotComputeService(coordination_url=f"sqlite:///{tmp_path / 'other.sqlite'}")
    with pytest.raises(DescriptionError, match=r"other\.sqlite"):
        cds.add_pilot_compute_service(other)
    cds.close()
