"""Chained ensemble: each B starts when its A finishes, consuming A's output DataUnit.

    python examples/chained_ensemble.py [WORKDIR] [N]
"""

import os
import sys
import tempfile

from pilotdata import ComputeDataService, PilotComputeService, PilotDataService, State

workdir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="pd-chain-")
n = int(sys.argv[2]) if len(sys.argv) > 2 else 4
pcs, pds = PilotComputeService(), PilotDataService()
pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": 2,
                  "working_directory": os.path.join(workdir, "agent")})
pds.create_pilot({"service_url": os.path.join(workdir, "pd")})
cds = ComputeDataService()
cds.add_pilot_compute_service(pcs)
cds.add_pilot_data_service(pds)

a_units, a_outputs = [], []
for i in range(n):
    out = cds.submit_data_unit({"file_urls": [], "name": f"a-out-{i}"})
    out.wait()
    a_outputs.append(out)
    a_units.append(cds.submit_compute_unit({
        "executable": "/bin/sh", "arguments": ["-c", f"echo {i} > a.txt"], "shell": False,
        "output_data": [{out.id: ["a.txt"]}],
    }))

b_units = []
for i, a in enumerate(a_units):          # each B waits only for its own A
    if a.wait() != State.Done:
        print(f"A{i} failed: {a.get_details()['reason']}")
        continue
    b_units.append(cds.submit_compute_unit({
        "executable": "/bin/sh", "arguments": ["-c", "expr $(cat a.txt) \\* 10"], "shell": False,
        "input_data": [a_outputs[i].id],
    }))
cds.wait()
results = []
for b in b_units:
    with open(os.path.join(b.get_details()["sandbox"], "stdout")) as f:
        results.append(int(f.read()))
print("B results:", results)
pcs.cancel()
sys.exit(0 if results == [10 * i for i in range(n)] else 1)
