"""Coupled ensemble: A and B producers run side by side; each C consumes one A and one B output.

    python examples/coupled_ensemble.py [WORKDIR] [N]
"""

import os
import sys
import tempfile

from pilotdata import ComputeDataService, ComputeUnit, DataUnit, PilotComputeService, PilotDataService, State

workdir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="pd-coupled-")
n = int(sys.argv[2]) if len(sys.argv) > 2 else 3
pcs, pds = PilotComputeService(), PilotDataService()
pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": 2,
                  "working_directory": os.path.join(workdir, "agent")})
pds.create_pilot({"service_url": os.path.join(workdir, "pd")})
cds = ComputeDataService()
cds.add_pilot_compute_service(pcs)
cds.add_pilot_data_service(pds)


def producer(kind: str, i: int) -> tuple[ComputeUnit, DataUnit]:
    out = cds.submit_data_unit({"file_urls": [], "name": f"{kind}-{i}"})
    out.wait()
    cu = cds.submit_compute_unit({"executable": "/bin/sh", "arguments": ["-c", f"echo {kind}{i} > {kind}.txt"],
                                  "shell": False, "output_data": [{out.id: [f"{kind}.txt"]}]})
    return cu, out


pairs = [(producer("a", i), producer("b", i)) for i in range(n)]
c_units = []
for (a_cu, a_out), (b_cu, b_out) in pairs:
    if a_cu.wait() != State.Done or b_cu.wait() != State.Done:
        continue
    c_units.append(cds.submit_compute_unit({"executable": "/bin/sh", "arguments": ["-c", "cat a.txt b.txt"],
                                            "shell": False, "input_data": [a_out.id, b_out.id]}))
cds.wait()
outputs = []
for c in c_units:
    with open(os.path.join(c.get_details()["sandbox"], "stdout")) as f:
        outputs.append(f.read().split())
print("C outputs:", outputs)
pcs.cancel()
sys.exit(0 if outputs == [[f"a{i}", f"b{i}"] for i in range(n)] else 1)
