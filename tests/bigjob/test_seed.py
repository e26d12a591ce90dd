"""The example of BigJob's package documentation, the seed of this project, with its import changed.

A fork pilot with affinity labels, one ``/bin/date`` CU whose arguments are ``[""]`` (BigJob's agent
ran executable and arguments as one shell command line, so the empty argument vanished), placed by a
ComputeDataService, waited for and canceled. It must end Done with a date in ``stdout.txt``.
"""

from __future__ import annotations

import re

from pilotdata.states import Kind
from tests.bigjob.conftest import ScriptEnv, sandbox_file

# The shape of BigJob's documentation example (written anew here, for Python 3, importing pilotdata):
# no coordination URL, dict descriptions, create_pilot(pilot_compute_description=...), cds.wait().
SEED = '''
    import os
    from pilotdata import PilotComputeService, ComputeDataService, State

    pilot_compute_service = PilotComputeService()

    pilot_compute_description = {
        "service_url": "fork://localhost",
        "number_of_processes": 1,
        "working_directory": os.path.join(os.getcwd(), "work"),
        "affinity_datacenter_label": "eu-de-south",
        "affinity_machine_label": "mymachine",
    }
    pilotjob = pilot_compute_service.create_pilot(pilot_compute_description=pilot_compute_description)

    compute_data_service = ComputeDataService()
    compute_data_service.add_pilot_compute_service(pilot_compute_service)

    compute_unit_description = {
        "executable": "/bin/date",
        "arguments": [""],
        "number_of_processes": 1,
        "output": "stdout.txt",
        "error": "stderr.txt",
        "affinity_datacenter_label": "eu-de-south",
        "affinity_machine_label": "mymachine",
    }
    compute_unit = compute_data_service.submit_compute_unit(compute_unit_description)
    compute_data_service.wait()
    compute_data_service.cancel()
    pilot_compute_service.cancel()
'''

_DATE = re.compile(r"^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \w+ \d{4}$")


def test_seed_example_ends_done_with_a_date_in_stdout(bj: ScriptEnv) -> None:
    bj.run(SEED)
    (cu,) = bj.records(Kind.CU)
    assert cu.state == "Done", cu.data.get("reason")
    assert cu.data["exit_code"] == 0
    assert _DATE.match(sandbox_file(cu, "stdout.txt").strip()), sandbox_file(cu, "stdout.txt")
    assert sandbox_file(cu, "stderr.txt") == ""
    (pilot,) = bj.records(Kind.PILOT)
    assert pilot.state == "Canceled"
    assert cu.pilot == pilot.id
    assert str(bj.work / "work") in cu.data["sandbox"]  # the pilot's working directory, as described
