"""DataUnit replication between two PilotData, with verification.

    python examples/replication.py [WORKDIR]
"""

import os
import sys
import tempfile

from pilotdata import ComputeDataService, PilotDataService, State

workdir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="pd-repl-")
os.makedirs(os.path.join(workdir, "data"), exist_ok=True)
for i in range(5):
    with open(os.path.join(workdir, "data", f"part-{i}.bin"), "wb") as f:
        f.write(os.urandom(500_000))

pds = PilotDataService()
first = pds.create_pilot({"service_url": os.path.join(workdir, "pd-1"), "affinity_datacenter_label": "site-a"})
second = pds.create_pilot({"service_url": os.path.join(workdir, "pd-2"), "affinity_datacenter_label": "site-b"})
cds = ComputeDataService()
cds.add_pilot_data_service(pds)

du = cds.submit_data_unit({"file_urls": [os.path.join(workdir, "data")]}, pilot_data=first)
print("data unit:", du.wait())
du.add_replica(second)
print("replicas:", len(du.list_pilot_data()))
problems = du.verify()
print("verified replicas:", sum(1 for p in problems.values() if not p), "of", len(problems))
du.remove_replica(first)
print("after removing the first replica:", du.list_pilot_data() == [second.id])
du.export(os.path.join(workdir, "export"))
print("exported files:", len(os.listdir(os.path.join(workdir, "export", "data"))))
sys.exit(0 if du.get_state() == State.Running and not any(problems.values()) else 1)
