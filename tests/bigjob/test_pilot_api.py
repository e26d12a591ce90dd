"""BigJob's Pilot-API scripts: several labelled pilots under one ComputeDataService, the decentral
service (a shared queue the pilots pull from), and CUs submitted straight to a pilot with BigJob's
``file_transfer`` and ``$VAR`` arguments. Dict descriptions, ``from pilotdata import ...``.
"""

from __future__ import annotations

import re
from pathlib import Path

from pilotdata.states import Kind
from tests.bigjob.conftest import ScriptEnv, lines_with, sandbox_file

_DATE = re.compile(r"^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \w+ \d{4}$")

LABELLED = '''
    import os
    from pilotdata import PilotComputeService, ComputeDataService, State

    COORDINATION_URL = os.environ["COORDINATION_URL"]
    pilot_compute_service = PilotComputeService(coordination_url=COORDINATION_URL)

    def pilot_at(datacenter, machine, cores):
        return pilot_compute_service.create_pilot(pilot_compute_description={
            "service_url": "fork://localhost",
            "number_of_processes": cores,
            "working_directory": os.path.join(os.getcwd(), "work-" + machine),
            "affinity_datacenter_label": datacenter,
            "affinity_machine_label": machine,
        })

    south = [pilot_at("eu-de-south", "mymachine-1", 4), pilot_at("eu-de-south", "mymachine-1", 4)]
    east = pilot_at("us-east", "othermachine", 2)
    for p in south + [east]:   # BigJob's scheduler placed CUs only on running pilots
        assert p.wait(state=State.Running, timeout=60) == State.Running

    compute_data_service = ComputeDataService()
    compute_data_service.add_pilot_compute_service(pilot_compute_service)

    units = []
    for i in range(6):
        units.append(("south", compute_data_service.submit_compute_unit({
            "executable": "/bin/date", "arguments": [""], "total_core_count": 1, "number_of_processes": 1,
            "output": "stdout.txt", "error": "stderr.txt",
            "affinity_datacenter_label": "eu-de-south", "affinity_machine_label": "mymachine-1"})))
    for i in range(2):
        units.append(("east", compute_data_service.submit_compute_unit({
            "executable": "/bin/hostname", "arguments": [], "number_of_processes": 1,
            "output": "stdout.txt", "error": "stderr.txt",
            "affinity_datacenter_label": "us-east", "affinity_machine_label": "othermachine"})))
    compute_data_service.wait()
    for group, cu in units:
        print("CU", group, cu.get_state(), cu.get_details()["pilot"], cu.get_local_working_directory())
    print("SOUTH", " ".join(p.get_url() for p in south))
    print("EAST", east.get_url())
    compute_data_service.cancel()
    pilot_compute_service.cancel()
'''


def test_several_labelled_pilots_take_the_units_with_their_labels(bj: ScriptEnv) -> None:
    out = bj.run(LABELLED)
    south = set(lines_with("SOUTH", out)[0].split())
    (east,) = lines_with("EAST", out)
    rows = [line.split() for line in lines_with("CU", out)]
    assert len(rows) == 8
    for group, state, pilot, directory in rows:
        assert state == "Done"
        assert pilot in (south if group == "south" else {east}), (group, pilot)
        text = (Path(directory) / "stdout.txt").read_text().strip()
        assert _DATE.match(text) if group == "south" else text, text
    labels = {p.id: p.data["labels"] for p in bj.records(Kind.PILOT)}
    assert labels[east] == {"datacenter": "us-east", "machine": "othermachine"}


DECENTRAL = '''
    import os
    from pilotdata import PilotComputeService, ComputeDataServiceDecentral, State

    COORDINATION_URL = os.environ["COORDINATION_URL"]
    pilot_compute_service = PilotComputeService(coordination_url=COORDINATION_URL)
    pilot_compute_description = {
        "service_url": "fork://localhost",
        "number_of_processes": 1,
        "working_directory": os.path.join(os.getcwd(), "work"),
    }
    pilotjob = pilot_compute_service.create_pilot(pilot_compute_description=pilot_compute_description)
    pilotjob2 = pilot_compute_service.create_pilot(pilot_compute_description=pilot_compute_description)

    compute_data_service = ComputeDataServiceDecentral()
    compute_data_service.add_pilot_compute_service(pilot_compute_service)
    compute_unit_description = {
        "executable": "/bin/echo",
        "arguments": ["unit", "$UNIT", "of", "4"],
        "number_of_processes": 1,
        "output": "stdout.txt",
        "error": "stderr.txt",
    }
    units = []
    for i in range(0, 4):
        units.append(compute_data_service.submit_compute_unit(
            dict(compute_unit_description, environment={"UNIT": str(i)})))
    compute_data_service.wait()
    for cu in units:
        print("CU", cu.get_state(), cu.get_local_working_directory())
    compute_data_service.cancel()
    pilot_compute_service.cancel()
'''


def test_decentral_service_runs_every_unit_from_the_shared_queue(bj: ScriptEnv) -> None:
    out = bj.run(DECENTRAL)
    rows = [line.split() for line in lines_with("CU", out)]
    assert [r[0] for r in rows] == ["Done"] * 4
    assert [(Path(r[1]) / "stdout.txt").read_text() for r in rows] == [f"unit {i} of 4\n" for i in range(4)]
    pilots = {p.id for p in bj.records(Kind.PILOT)}
    assert {cu.pilot for cu in bj.records(Kind.CU)} <= pilots and len(pilots) == 2


DIRECT = '''
    import os
    from pilotdata import PilotComputeService, ComputeDataService, State

    COORDINATION_URL = os.environ["COORDINATION_URL"]
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "test.txt"), "w") as f:
        f.write("staged by file_transfer\\n")

    pilot_compute_service = PilotComputeService(coordination_url=COORDINATION_URL)
    pilot_compute_description = {"service_url": "fork://localhost", "number_of_processes": 1}
    pilotjob = pilot_compute_service.create_pilot(pilot_compute_description=pilot_compute_description)

    compute_unit_description = {
        "executable": "/bin/echo",
        "arguments": ["$TBD_DIR"],
        "number_of_processes": 1,
        "environment": ["TBD_DIR=/tmp"],
        "output": "stdout.txt",
        "error": "stderr.txt",
        "file_transfer": ["ssh://" + here + "/test.txt > BIGJOB_WORK_DIR"],
    }
    compute_unit = pilotjob.submit_compute_unit(compute_unit_description)
    compute_unit.wait()
    print("CU", compute_unit.get_state(), compute_unit.get_local_working_directory())
    print("UNITS", [c.get_url() for c in pilotjob.list_compute_units()] == [compute_unit.get_url()],
          pilotjob.get_free_nodes())
    pilot_compute_service.cancel()
'''


def test_compute_unit_straight_to_a_pilot_with_a_file_transfer(bj: ScriptEnv) -> None:
    out = bj.run(DIRECT)
    ((state, directory),) = [line.split() for line in lines_with("CU", out)]
    assert state == "Done"
    assert (Path(directory) / "stdout.txt").read_text() == "/tmp\n"
    assert (Path(directory) / "test.txt").read_text() == "staged by file_transfer\n"
    (cu,) = bj.records(Kind.CU)
    (pilot,) = bj.records(Kind.PILOT)
    assert cu.pilot == pilot.id and sandbox_file(cu, "stderr.txt") == ""
    assert lines_with("UNITS", out) == ["True 1"]


ENDS = '''
    import os, time
    from pilotdata import PilotComputeService, State

    pcs = PilotComputeService(coordination_url=os.environ["COORDINATION_URL"])
    pilotjob = pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": 1, "walltime": 0.05})
    long_unit = pilotjob.submit_compute_unit({"executable": "/bin/sleep", "arguments": ["60"]})
    started = time.monotonic()
    state = pilotjob.wait(timeout=60)            # the walltime (3 s) ends the pilot before its CU
    print("WAITED", state, round(time.monotonic() - started), long_unit.get_state())
    empty = pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": 1})
    print("EMPTY", empty.wait(timeout=10), empty.wait(state=State.Running, timeout=60))
    pcs.cancel()
'''


def test_pilot_wait_returns_when_the_pilot_ends_before_its_units(bj_sqlite: ScriptEnv) -> None:
    out = bj_sqlite.run(ENDS)
    ((state, seconds, cu_state),) = [line.split() for line in lines_with("WAITED", out)]
    assert state in ("Done", "Failed", "Canceled") and int(seconds) < 50
    assert cu_state in ("New", "Pending", "Failed")  # handed back (or failed by policy), never Done
    # a pilot without CUs: wait() has nothing to wait for (as in BigJob); wait(state=...) waits for it
    assert lines_with("EMPTY", out)[0].split()[1] == "Running"
