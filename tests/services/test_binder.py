"""bind_round on real coordination: binding decisions without running agents."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pilotdata.coordination import EntityRecord
from pilotdata.data import ReplicaManager
from pilotdata.descriptions import ComputeUnitDescription, DataUnitDescription
from pilotdata.records import cu_description
from pilotdata.services import binder
from pilotdata.services.binder import bind_round
from pilotdata.services.submission import bind_now, submit_units
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


def test_the_placement_reason_is_written_with_the_bind_in_one_step(sqlite_session: Session) -> None:
    """The reason is in the CU's data exactly when the bind applied: the event and the data agree."""
    _running_pilot(sqlite_session, "p-a", "site-a")
    coord = sqlite_session.coord
    cu = submit_units(sqlite_session, [{"executable": "/bin/true", "affinity_datacenter_label": "site-a"}])[0]
    cursor = coord.last_cursor()
    out = bind_round(coord, [cu.id], {})
    rec = coord.get(Kind.CU, cu.id)
    events = [e for e in coord.events_after(cursor, limit=100) if e.id == cu.id]
    assert out.bound == {cu.id: "p-a"} and rec.state == "Pending"
    assert rec.data["placement"] == rec.detail["placement"] and "p-a" in rec.data["placement"]
    assert [e.to_state for e in events] == ["Pending"]  # one write: no separate update for the reason
    lost = submit_units(sqlite_session, [{"executable": "/bin/true", "affinity_datacenter_label": "site-a"}])[0]
    lost.cancel()  # moved by someone else before the binder got to it: nothing is written
    assert bind_round(coord, [lost.id], {}).bound == {}
    assert "placement" not in coord.get(Kind.CU, lost.id).data


def test_a_held_cu_is_parsed_once_however_many_rounds_hold_it(
    sqlite_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller's description cache spares every later round the parse of every unbound CU."""
    coord = sqlite_session.coord
    _running_pilot(sqlite_session, "p-a", "site-a")
    du = ReplicaManager(coord).register(DataUnitDescription(name="still-uploading"))
    cu = submit_units(sqlite_session, [{"executable": "/bin/true", "input_data": [du]}])[0]
    parsed: list[str] = []

    def counting_parse(rec: EntityRecord) -> ComputeUnitDescription:
        parsed.append(rec.id)
        return cu_description(rec)

    monkeypatch.setattr(binder, "cu_description", counting_parse)
    cache: dict[str, ComputeUnitDescription] = {}
    for _ in range(3):
        assert bind_round(coord, [cu.id], {}, descriptions=cache).held == [cu.id]
    assert parsed == [cu.id]
    assert coord.get(Kind.CU, cu.id).state == "New"


def test_a_cu_whose_recorded_description_does_not_parse_ends_failed(sqlite_session: Session) -> None:
    coord = sqlite_session.coord
    coord.create(Kind.CU, "cu-bad", {"description": {"executable": "/bin/true", "number_of_processes": 0}})
    out = bind_round(coord, ["cu-bad"], {})
    rec = coord.get(Kind.CU, "cu-bad")
    assert out.failed == ["cu-bad"] and rec.state == "Failed"
    assert rec.detail["reason"].startswith("bad description: number_of_processes")


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
