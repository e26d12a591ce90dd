"""Compute-data co-placement (BigJob's classic Pilot-Data example, import line changed).

A pilot and a PilotData share affinity labels; a DataUnit is made from a text file; a ComputeUnit
reads it through ``input_data`` and writes ``output_data`` back into a second DataUnit, which is then
exported to a local directory. Runs on the embedded default (no server):

    python examples/compute_data_coplacement.py [WORKDIR]
"""

import os
import sys
import tempfile

from pilotdata import ComputeDataService, PilotComputeService, PilotDataService, State

workdir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="pd-coplace-")
os.makedirs(workdir, exist_ok=True)
text = os.path.join(workdir, "test.txt")
with open(text, "w") as f:
    f.write("pilot-data puts compute where the data is\n" * 100)

pilot_compute_service = PilotComputeService()
pilot_compute_description = {
    "service_url": "fork://localhost",
    "number_of_processes": 2,
    "working_directory": os.path.join(workdir, "agent"),
    "affinity_datacenter_label": "eu-de-south",
    "affinity_machine_label": "mymachine-1",
}
pilot_compute_service.create_pilot(pilot_compute_description=pilot_compute_description)

pilot_data_service = PilotDataService()
pilot_data_description = {
    "service_url": "file://" + os.path.join(workdir, "pilotdata"),
    "size": 100,
    "affinity_datacenter_label": "eu-de-south",
    "affinity_machine_label": "mymachine-1",
}
pilot_data_service.create_pilot(pilot_data_description=pilot_data_description)

compute_data_service = ComputeDataService()
compute_data_service.add_pilot_compute_service(pilot_compute_service)
compute_data_service.add_pilot_data_service(pilot_data_service)

input_data_unit = compute_data_service.submit_data_unit({
    "file_urls": [text],
    "affinity_datacenter_label": "eu-de-south",
    "affinity_machine_label": "mymachine-1",
})
output_data_unit = compute_data_service.submit_data_unit({
    "file_urls": [],
    "affinity_datacenter_label": "eu-de-south",
    "affinity_machine_label": "mymachine-1",
})
input_data_unit.wait()
output_data_unit.wait()

compute_unit = compute_data_service.submit_compute_unit({
    "executable": "/bin/sh",
    "arguments": ["-c", "wc -l test.txt > count.out; tr a-z A-Z < test.txt > upper.out"], "shell": False,
    "number_of_processes": 1,
    "output": "stdout.txt",
    "error": "stderr.txt",
    "affinity_datacenter_label": "eu-de-south",
    "affinity_machine_label": "mymachine-1",
    "input_data": [input_data_unit.get_url()],
    "output_data": [{output_data_unit.get_url(): ["*.out"]}],
})
compute_data_service.wait()
print("compute unit:", compute_unit.get_state())
print("output files:", sorted(output_data_unit.list()))

export_dir = os.path.join(workdir, "export")
output_data_unit.export(export_dir)
with open(os.path.join(export_dir, "count.out")) as f:
    print("lines counted:", f.read().split()[0])
pilot_compute_service.cancel()
sys.exit(0 if compute_unit.get_state() == State.Done else 1)
