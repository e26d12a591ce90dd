"""The ComputeDataService replicates a DataUnit towards the site its CUs run at, and they read it there."""

from __future__ import annotations

import os
from pathlib import Path

from pilotdata import ComputeDataService, PilotComputeService, PilotDataService, State
from pilotdata.session import Session
from tests.servers import wait_until

SITE_A = {"affinity_datacenter_label": "site-a", "affinity_machine_label": "node-a"}
SITE_B = {"affinity_datacenter_label": "site-b", "affinity_machine_label": "node-b"}


def test_hot_dataunit_gets_a_replica_at_the_readers_site(sqlite_session: Session, tmp_path: Path) -> None:
    (tmp_path / "db.bin").write_bytes(os.urandom(3_000_000))
    pds = PilotDataService(session=sqlite_session)
    pd_a = pds.create_pilot({"service_url": str(tmp_path / "pd-a"), **SITE_A})
    pd_b = pds.create_pilot({"service_url": str(tmp_path / "pd-b"), **SITE_B})
    pcs = PilotComputeService(session=sqlite_session)
    cds = ComputeDataService(session=sqlite_session)
    cds.add_pilot_compute_service(pcs)
    cds.add_pilot_data_service(pds)
    try:
        pilots = [pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": 1,
                                    "working_directory": str(tmp_path / f"pilot-{i}"), **SITE_B})
                  for i in range(2)]
        for pilot in pilots:
            assert pilot.wait(timeout=30, state=State.Running) == State.Running
        db = cds.submit_data_unit({"file_urls": [str(tmp_path / "db.bin")], **SITE_A}, pilot_data=pd_a)
        assert db.wait(timeout=30) == State.Running
        cus = cds.submit_compute_units([{"executable": "/bin/sh", "arguments": ["-c", "wc -c < db.bin"], "shell": False,
                                         "input_data": [db.id], **SITE_B} for _ in range(4)])
        cds.wait(timeout=120)
        assert [cu.get_state() for cu in cus] == [State.Done] * 4
        wait_until(lambda: pd_b.id in db.list_pilot_data(), 30, "the replica at site-b")
        assert db.verify() == {pd_a.id: [], pd_b.id: []}
        # the site-b pilots read the site-b replica, not the far one
        events = sqlite_session.coord.events_after(None, limit=100_000)
        fetches = [e for e in events if e.entity == "transfer" and str(e.detail.get("destination", "")).startswith(
            "pilot-cache:")]
        assert fetches, "no pilot fetched the DataUnit"
        store_b = str(tmp_path / "pd-b")
        assert all(store_b in str(e.detail["source"]) for e in fetches), [e.detail["source"] for e in fetches]
        for cu in cus:
            assert (Path(cu.get_details()["sandbox"]) / "stdout").read_text().strip() == "3000000"
    finally:
        cds.close()
        pcs.cancel()
