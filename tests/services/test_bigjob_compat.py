"""A script written against BigJob's Pilot-API runs with only its import line changed.

The script below uses BigJob's idioms: ``coordination_url=`` keywords, ``create_pilot(
pilot_compute_description=...)``, the old ``total_core_count`` key, ``"working_directory":
data_unit.url`` to run a CU on a DataUnit's files, ``subprocess://`` pilots, the decentral CDS name,
``State`` constants and ``cancel()`` on every service.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.servers import RedisServer

BIGJOB_STYLE_SCRIPT = textwrap.dedent('''
    import os, sys
    from pilotdata import PilotComputeService, PilotDataService, ComputeDataService, State  # was: from pilot import
    from pilotdata import ComputeDataServiceDecentral

    COORDINATION_URL = os.environ["TEST_COORDINATION_URL"]
    WORK = sys.argv[1]

    pilot_compute_service = PilotComputeService(coordination_url=COORDINATION_URL)
    pilot_compute_description = {
        "service_url": "subprocess://localhost",
        "number_of_processes": 1,
        "working_directory": os.path.join(WORK, "pilot-compute"),
        "affinity_datacenter_label": "eu-de-south",
        "affinity_machine_label": "mymachine-1",
    }
    pilotjob = pilot_compute_service.create_pilot(pilot_compute_description=pilot_compute_description)

    pilot_data_service = PilotDataService(coordination_url=COORDINATION_URL)
    pilot_data_description = {
        "service_url": "file://" + os.path.join(WORK, "pilot-data"),
        "size": 100,
        "affinity_datacenter_label": "eu-de-south",
        "affinity_machine_label": "mymachine-1",
    }
    ps = pilot_data_service.create_pilot(pilot_data_description=pilot_data_description)

    compute_data_service = ComputeDataService(coordination_url=COORDINATION_URL)
    compute_data_service.add_pilot_compute_service(pilot_compute_service)
    compute_data_service.add_pilot_data_service(pilot_data_service)

    data_unit_description = {
        "file_urls": [os.path.join(WORK, "test.txt")],
        "affinity_datacenter_label": "eu-de-south",
        "affinity_machine_label": "mymachine-1",
    }
    data_unit = compute_data_service.submit_data_unit(data_unit_description)
    data_unit.wait()

    compute_unit_description = {
        "executable": "/bin/cat",
        "arguments": ["test.txt"],
        "total_core_count": 1,
        "number_of_processes": 1,
        "working_directory": data_unit.url,
        "output": "stdout.txt",
        "error": "stderr.txt",
        "affinity_datacenter_label": "eu-de-south",
        "affinity_machine_label": "mymachine-1",
    }
    compute_unit = compute_data_service.submit_compute_unit(compute_unit_description)
    compute_data_service.wait()

    decentral = ComputeDataServiceDecentral(coordination_url=COORDINATION_URL)
    decentral.add_pilot_compute_service(pilot_compute_service)
    for i in range(0, 4):
        last = decentral.submit_compute_unit({"executable": "/bin/date", "arguments": ["+%Y"],
                                               "number_of_processes": 1, "output": "stdout.txt",
                                               "error": "stderr.txt"})
    decentral.wait()

    details = compute_unit.get_details()
    print("CU state", compute_unit.get_state(), last.get_state() == State.Done)
    print("CU output", open(os.path.join(details["sandbox"], "stdout.txt")).read().strip())
    print("PJ state", pilotjob.get_state())
    compute_data_service.cancel()
    pilot_data_service.cancel()
    pilot_compute_service.cancel()
    print("PJ final", pilotjob.get_state())
''')


def test_bigjob_script_runs_with_import_changed(redis_server: RedisServer, tmp_path: Path) -> None:
    (tmp_path / "test.txt").write_text("the BigJob way\n")
    env = {**os.environ, "TEST_COORDINATION_URL": redis_server.url, "PDATA_HOME": str(tmp_path / "home"),
           "PDATA_NAMESPACE": "bigjob-" + tmp_path.name}
    script = tmp_path / "example.py"
    script.write_text(BIGJOB_STYLE_SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert "CU state Done True" in lines
    assert "CU output the BigJob way" in lines
    assert "PJ state Running" in lines
    assert "PJ final Canceled" in lines
